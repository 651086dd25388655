"""Batched sampling on the model's device, and the teacher's schedule (``evaluators/teacher.py`` runs and caches it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.presets import preset_schedule
from diffsearch.solvers.plan import Plan
from diffsearch.solvers.sampler import sample
from diffsearch.solvers.schedule import Schedule

TEACHER_STEPS = 1000


def teacher_schedule(model: Denoiser, t_start: float, t_final: float, steps: int = TEACHER_STEPS) -> Schedule:
    """Order-3 multistep (exact Taylor) uniform in logSNR from ``t_start`` to ``t_final``.

    A final time 0 is reached by a last first-order step from the schedule's smallest time.
    """
    ns = model.noise_schedule
    if t_final > 0.0:
        times = ns.inverse_lambda(np.linspace(float(ns.lambda_(t_start)), float(ns.lambda_(t_final)), steps + 1))
        times[0], times[-1] = t_start, t_final
    else:
        end = ns.default_t_end
        times = ns.inverse_lambda(np.linspace(float(ns.lambda_(t_start)), float(ns.lambda_(end)), steps))
        times[0], times[-1] = t_start, end
        times = np.append(times, 0.0)
    return preset_schedule("dpmpp_3m", steps, ns, timesteps=times, third_order="taylor")


def sample_batched(
    model: Denoiser, schedule: Plan | Schedule, x_T: torch.Tensor, cond: Any = None, guidance: float | None = None,
    batch_size: int = 2048, on_batch: Any = None,
) -> torch.Tensor:
    """``sample`` of a plan (or schedule) over batches of rows (labels split alongside) on the model's device, results on the CPU;
    ``on_batch(rows)`` after each batch."""
    device = getattr(model, "device", "cpu")
    chunks = []
    with torch.no_grad():
        for start in range(0, len(x_T), batch_size):
            part = None if cond is None else cond[start : start + batch_size]
            part = part.to(device) if isinstance(part, torch.Tensor) else part
            chunks.append(sample(model, schedule, x_T[start : start + batch_size].to(device), part, guidance).cpu())
            if on_batch is not None:
                on_batch(len(chunks[-1]))
    return torch.cat(chunks)
