"""The teacher: a 1000-step high-order solution from the same noise, the reference for trajectory error."""

from __future__ import annotations

import logging

from typing import Any

import numpy as np
import torch

from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.presets import preset_schedule
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


_CACHE: dict[tuple, torch.Tensor] = {}


def teacher_samples(
    model: Denoiser, schedule: Schedule, x_T: torch.Tensor, cond: Any = None, guidance: float | None = None,
    noise_key: Any = None, batch_size: int = 2048,
) -> torch.Tensor:
    """Teacher samples for ``x_T`` ending where ``schedule`` ends; cached per model, noise set and times."""
    key = (model.fingerprint, noise_key, schedule.timesteps[0], schedule.timesteps[-1], guidance)
    if noise_key is not None and key in _CACHE:
        return _CACHE[key]
    teacher = teacher_schedule(model, schedule.timesteps[0], schedule.timesteps[-1])
    logging.getLogger(__name__).info(f"teacher: {len(teacher.timesteps) - 1}-step solution of {len(x_T)} samples (once per noise set)")
    nfe_before = model.nfe
    result = sample_batched(model, teacher, x_T, cond, guidance, batch_size)
    model.nfe = nfe_before  # the teacher's evaluations are not the candidate's cost
    if noise_key is not None:
        _CACHE[key] = result
    return result


def sample_batched(
    model: Denoiser, schedule: Schedule, x_T: torch.Tensor, cond: Any = None, guidance: float | None = None,
    batch_size: int = 2048, on_batch: Any = None,
) -> torch.Tensor:
    """``sample`` over batches of rows (labels split alongside) on the model's device, results on the CPU;
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
