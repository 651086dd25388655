"""The anchors' own noise and teacher: seeded x_T disjoint from the search and held-out sets, and
a many-step order-3 solution (``dpmpp_3m``, exact Taylor, uniform logSNR) from the same noise."""

from __future__ import annotations

from typing import Any

import torch

from diffsearch.solvers.presets import preset_schedule
from diffsearch.solvers.sampler import sample


def anchor_noise(model: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` standard-normal x_T of the model's shape from ``seed`` and random labels for conditional models."""
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, *model.data_shape), generator=generator)
    labels = torch.randint(model.num_classes, (n,), generator=generator) if model.num_classes else None
    device = getattr(model, "device", "cpu")
    return x_T.to(device), None if labels is None else labels.to(device)


def teacher_final(model: Any, x_T: torch.Tensor, cond: Any, guidance: float | None, t_start: float, t_end: float,
                  steps: int = 1000, batch_size: int = 512) -> torch.Tensor:
    """The teacher's samples at ``t_end`` (its evaluations are not counted in ``model.nfe``)."""
    schedule = preset_schedule("dpmpp_3m", steps, model.noise_schedule, "logsnr", t_start, t_end, third_order="taylor")
    nfe_before, chunks = model.nfe, []
    with torch.no_grad():
        for start in range(0, len(x_T), batch_size):
            part = None if cond is None else cond[start : start + batch_size]
            chunks.append(sample(model, schedule, x_T[start : start + batch_size], part, guidance))
    model.nfe = nfe_before
    return torch.cat(chunks)
