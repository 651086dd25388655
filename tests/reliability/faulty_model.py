"""A plug-in model for fault injection: the exact gmm, whose network misbehaves on purpose.

``DIFFSEARCH_FAULT`` selects what it does on the *poisoned* candidate (the dpmpp_2m preset on
Karras timesteps at 4 NFE, recognised by the times the network is called at): ``crash``
(``os._exit``, as a segfault or OOM kill would end the process), ``hang`` (sleeps an hour) or
``nan`` (returns NaN). ``DIFFSEARCH_KILL=B:K`` SIGKILLs the process at the K-th network call with
a batch of B rows (B picks the phase: proxy, expensive or final sample counts).
``DIFFSEARCH_CALL_LOG=path`` appends the batch size of every network call to ``path``.
``DIFFSEARCH_SLOW=B:S`` sleeps S seconds in every network call with a batch of B rows (B = 32: the s3 proxies).
``DIFFSEARCH_POISON=spacing`` poisons the dpmpp_2m preset on another spacing (``quadratic``: the third preset).
"""

from __future__ import annotations

import os
import signal
import time

import torch

from diffsearch.models.denoiser import Denoiser
from diffsearch.models.gmm import build_gmm
from diffsearch.solvers.presets import preset_schedule

POISON_NFE, POISON_SOLVER, POISON_SPACING = 4, "dpmpp_2m", "karras"


def make() -> Denoiser:
    """The gmm with a faulty network (see the module docstring)."""
    gmm = build_gmm()
    schedule = gmm.noise_schedule
    spacing = os.environ.get("DIFFSEARCH_POISON", POISON_SPACING)
    poison = [float(schedule.model_time(t)) for t in preset_schedule(POISON_SOLVER, POISON_NFE, schedule, spacing).timesteps[:-1]]
    fault, kill = os.environ.get("DIFFSEARCH_FAULT"), os.environ.get("DIFFSEARCH_KILL")
    kill_batch, kill_call = (int(part) for part in kill.split(":")) if kill else (0, 0)
    state = {"times": [], "calls": 0}

    log = os.environ.get("DIFFSEARCH_CALL_LOG")
    slow = os.environ.get("DIFFSEARCH_SLOW")
    slow_batch, slow_s = (int(slow.split(":")[0]), float(slow.split(":")[1])) if slow else (0, 0.0)

    def fn(x: torch.Tensor, t_in: torch.Tensor, cond=None) -> torch.Tensor:
        t = float(t_in[0])
        if log:
            with open(log, "a") as handle:
                handle.write(f"{x.shape[0]}\n")
        state["times"] = [t] if t >= poison[0] - 1e-2 else [*state["times"], t]
        if x.shape[0] == slow_batch:
            time.sleep(slow_s)
        if x.shape[0] == kill_batch:
            state["calls"] += 1
            if state["calls"] == kill_call:
                os.kill(os.getpid(), signal.SIGKILL)
        out = gmm.fn(x, t_in, cond)
        if fault and len(state["times"]) == len(poison) and all(abs(a - b) < 1e-2 for a, b in zip(state["times"], poison)):
            if fault == "crash":
                os._exit(3)
            if fault == "hang":
                time.sleep(3600)
            if fault == "nan":
                return torch.full_like(out, float("nan"))
        return out

    model = Denoiser(fn, gmm.noise_schedule, "epsilon", data_shape=gmm.data_shape, data_mean=gmm.data_mean, name="faulty_gmm")
    model.truth = gmm.truth
    return model
