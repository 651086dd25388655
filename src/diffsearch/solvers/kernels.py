"""Pure step kernels: the USF update is a linear combination of stored tensors (no model, no I/O)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from diffsearch.solvers.coefficients import Update


def combine(x_s: torch.Tensor, a: float, outputs: Mapping[int, torch.Tensor], weights: tuple[tuple[int, float], ...]) -> torch.Tensor:
    """x_t = a x_s + sum_j w_j F_j, with float64 coefficients applied in the tensors' dtype."""
    x_t = x_s * a
    for j, w in weights:
        x_t = x_t.add(outputs[j], alpha=w)
    return x_t


def apply_update(update: Update, xs: Mapping[int, torch.Tensor], outputs: Mapping[str, Mapping[int, torch.Tensor]]) -> torch.Tensor:
    """Execute one compiled predictor or corrector update."""
    return combine(xs[update.start], update.x_coefficient, outputs[update.prediction], update.weights)
