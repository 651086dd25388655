"""Free statistics of a candidate's cost: NFE, MACs per sample (measured), parameters, bytes."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from diffsearch.models.denoiser import Denoiser


def network_module(model: Denoiser) -> torch.nn.Module | None:
    """The torch module behind a Denoiser, when it exposes one (``unet`` or ``module``)."""
    for name in ("unet", "module"):
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


@lru_cache(maxsize=32)
def _macs_per_call(model: Denoiser) -> float:
    """Multiply-accumulates of one network call on one sample, counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, *model.data_shape))
    cond = torch.zeros(1, dtype=torch.long) if model.num_classes else None
    counter = FlopCounterMode(display=False)
    nfe = model.nfe
    with counter, torch.no_grad():
        model.network(x, float(model.noise_schedule.t_max) / 2, cond)
    model.nfe = nfe
    return counter.get_total_flops() / 2.0


def cost_statistics(model: Denoiser, nfe: int, guidance: float | None = None) -> dict[str, Any]:
    """MACs per sample for ``nfe`` evaluations (guidance doubles the batch), parameters and bytes."""
    module = network_module(model)
    macs = _macs_per_call(model) * nfe * (2 if guidance is not None else 1)
    result: dict[str, Any] = {"macs_per_sample": macs}
    if module is not None:
        tensors = list(module.parameters()) + list(module.buffers())
        result["params"] = sum(p.numel() for p in module.parameters())
        result["bytes"] = sum(t.numel() * t.element_size() for t in tensors)
    return result
