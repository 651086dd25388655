"""The teacher: the model's own converged samples, computed once per (model, noise set) and cached.

A teacher is an order-3 multistep solution uniform in logSNR (DPM-Solver++(3M) with the exact
Taylor update) with the fewest steps at which two resolutions agree (``converged_steps``: the
relative RMSE between S and 2S steps on a probe set is below ``TOLERANCE``). It runs from T to the
noise schedule's smallest end time and records, in the final stretch where candidates may end
(``DENSE_UNTIL`` times the default end time), the state and the model's data prediction at each of
its times. The teacher at any end time t in that stretch is one first-order data-prediction step
from the nearest recorded time above t (``TeacherSet.at``; t = 0 is the last data prediction), so
candidates with different end times share one teacher. Teacher sets are cached in memory and, for
models whose fingerprint identifies their weights, on disk under ``$DIFFSEARCH_CACHE/teacher``.

Noise: a teacher for trajectory error uses the candidate's own noise set; the reference set of the
distribution-level metrics (``fd_teacher``, ``kid_teacher``) uses ``TEACHER_SEED`` and the noise
floor ``FLOOR_SEED + k``, both disjoint from the search (0) and held-out (1, 2, ...) seeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.noise import noise_set
from diffsearch.evaluators.reference import teacher_schedule
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.sampler import sample

TEACHER_SEED = 1_000_003
FLOOR_SEED = 1_000_100
PROBE_SEED = 1_000_002
PROBE_SAMPLES = 64
TOLERANCE = 2e-3
START_STEPS = 50
MAX_STEPS = 1600
DENSE_UNTIL = 4.0
CACHE_VERSION = "teacher/v1"

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Convergence:
    """The teacher resolution: ``steps`` agrees with ``2 * steps`` to relative RMSE ``rmse`` <= ``tolerance``."""

    steps: int
    rmse: float
    tolerance: float
    probe_samples: int
    seconds: float
    converged: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class TeacherSet:
    """Teacher states and data predictions at the recorded end times (descending) for one noise set."""

    times: np.ndarray
    states: torch.Tensor
    denoised: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def at(self, model: Denoiser, t: float) -> torch.Tensor:
        """The teacher at end time ``t``: x_t = (s_t/s_a) x_a + (a_t - a_a s_t/s_a) x0_a from the nearest recorded a >= t."""
        if t <= 0.0:
            return self.denoised[-1]
        above = np.nonzero(self.times >= t * (1.0 - 1e-9))[0]
        if len(above) == 0:
            raise DiffsearchError(f"teacher: end time {t} is above the recorded stretch (t <= {self.times[0]:.4g})")
        j = int(above[-1])
        if abs(self.times[j] - t) <= 1e-12 * max(1.0, t):
            return self.states[j]
        ns = model.noise_schedule
        a_t, s_t = float(ns.alpha(t)), float(ns.sigma(t))
        a_a, s_a = float(ns.alpha(self.times[j])), float(ns.sigma(self.times[j]))
        return (s_t / s_a) * self.states[j] + (a_t - a_a * s_t / s_a) * self.denoised[j]


_MEMORY: dict[str, Any] = {}


def _key(*parts: Any) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([CACHE_VERSION, *parts], sort_keys=True, default=str).encode()).hexdigest()[:20]


def _cache_file(model: Denoiser, key: str, suffix: str):
    from diffsearch.evaluators.image_metrics import cache_dir

    if not getattr(model, "fingerprint_is_content_hash", False):
        return None
    return cache_dir() / "teacher" / f"{model.name}-{key}{suffix}"


def _run_teacher(model: Denoiser, steps: int, x_T: torch.Tensor, labels, guidance, dense: bool, batch_size: int,
                 progress: Progress | None) -> TeacherSet:
    """Sample the teacher in batches, recording the dense stretch; one extra evaluation gives x0 at the end."""
    ns = model.noise_schedule
    t_end = float(ns.default_t_end)
    schedule = teacher_schedule(model, float(ns.t_max), t_end, steps)
    limit = DENSE_UNTIL * t_end if dense else t_end
    times = [t for t in schedule.timesteps[1:-1] if t <= limit] + [t_end]
    states, denoised = [], []
    nfe_before, device = model.nfe, model.device
    with torch.no_grad():
        for start in range(0, len(x_T), batch_size):
            rows = slice(start, start + batch_size)
            cond = None if labels is None else labels[rows].to(device)
            kept_x, kept_d = [], []

            def keep(i: int, t: float, x: torch.Tensor, x0: torch.Tensor) -> None:
                if t <= limit:
                    kept_x.append(x.cpu())
                    kept_d.append(x0.cpu())

            x = sample(model, schedule, x_T[rows].to(device), cond, guidance, callback=keep)
            kept_x.append(x.cpu())
            kept_d.append(model.predict(x, t_end, cond, guidance)[1].cpu())
            states.append(torch.stack(kept_x))
            denoised.append(torch.stack(kept_d))
            if progress is not None:
                progress(len(x))
    model.nfe = nfe_before  # the teacher's evaluations are not a candidate's cost
    return TeacherSet(np.asarray(times, dtype=np.float64), torch.cat(states, 1), torch.cat(denoised, 1))


def converged_steps(model: Denoiser, guidance: float | None = None, tolerance: float = TOLERANCE) -> Convergence:
    """The fewest teacher steps (50, 100, 200, ...) whose samples agree with twice as many to ``tolerance`` (relative RMSE)."""
    key = _key("convergence", model.fingerprint, guidance, tolerance, PROBE_SAMPLES)
    if key in _MEMORY:
        return _MEMORY[key]
    path = _cache_file(model, key, ".json")
    if path is not None and path.is_file():
        _MEMORY[key] = Convergence(**json.loads(path.read_text()))
        return _MEMORY[key]
    started = time.perf_counter()
    x_T, labels = noise_set(model, PROBE_SAMPLES, PROBE_SEED)
    cond = labels if model.num_classes else None
    run = lambda steps: _run_teacher(model, steps, x_T, cond, guidance, False, PROBE_SAMPLES, None).states[-1].double()
    steps, coarse, rmse = START_STEPS, run(START_STEPS), float("inf")
    while steps < MAX_STEPS:
        fine = run(2 * steps)
        rmse = float((coarse - fine).pow(2).mean().sqrt() / fine.pow(2).mean().sqrt().clamp_min(1e-12))
        if rmse <= tolerance:
            break
        steps, coarse = 2 * steps, fine
    result = Convergence(steps, rmse, tolerance, PROBE_SAMPLES, time.perf_counter() - started, rmse <= tolerance)
    if path is not None:
        _write_text(path, json.dumps(result.as_dict()))
    _MEMORY[key] = result
    return result


def teacher_set(model: Denoiser, seed: int, n: int, guidance: float | None = None, *, dense: bool = False,
                progress: Progress | None = None, batch_size: int = 500) -> TeacherSet:
    """The teacher for noise set (``seed``, ``n``): computed once, then served from memory or disk."""
    convergence = converged_steps(model, guidance)
    key = _key("set", model.fingerprint, seed, n, guidance, dense, convergence.steps)
    if key in _MEMORY:
        return _MEMORY[key]
    path = _cache_file(model, key, ".safetensors")
    cached = _read_set(path) if path is not None and path.is_file() else None
    if cached is not None:
        _MEMORY[key] = cached
        return cached
    started = time.perf_counter()
    x_T, labels = noise_set(model, n, seed)
    result = _run_teacher(model, convergence.steps, x_T, labels if model.num_classes else None, guidance, dense, batch_size, progress)
    result.info = {"seed": seed, "samples": n, "guidance": guidance, "steps": convergence.steps,
                   "convergence": convergence.as_dict(), "seconds": time.perf_counter() - started}
    if path is not None:
        _write_set(result, path)
    _MEMORY[key] = result
    return result


def _write_text(path, text: str) -> None:
    import os
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def _write_set(result: TeacherSet, path) -> None:
    import os
    import tempfile

    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"times": torch.from_numpy(result.times), "states": result.states.contiguous(), "denoised": result.denoised.contiguous()}
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp", delete=False) as handle:
        name = handle.name
    save_file(tensors, name, metadata={"info": json.dumps(result.info)})
    os.replace(name, path)


def _read_set(path) -> TeacherSet | None:
    """A cached teacher set, or None when the file is unreadable (it is set aside as ``.corrupt`` and recomputed)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            info = json.loads(handle.metadata()["info"])
            return TeacherSet(handle.get_tensor("times").numpy(), handle.get_tensor("states"), handle.get_tensor("denoised"), info)
    except Exception:
        path.replace(path.with_suffix(".corrupt"))
        return None
