"""Noise sets: fixed, seeded x_T (and labels) shared by all candidates (common random numbers)."""

from __future__ import annotations

import torch

from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser

SEARCH_SEED = 0
HELDOUT_SEED = 1
MAX_HELDOUT_SETS = 100  # held-out seeds are 1..100; teacher, floor and calibration seeds lie far above
CALIBRATION_SEED = 3_000_001  # quantisation calibration and sensitivity (evaluators/quantization.py); no other noise set uses it


def heldout_seeds(count: int) -> list[int]:
    """The seeds of ``count`` held-out noise sets (1, 2, ...), disjoint from the search seed 0."""
    if not 1 <= count <= MAX_HELDOUT_SETS:
        raise DiffsearchError(f"held-out noise sets: {count} is not between 1 and {MAX_HELDOUT_SETS}")
    return list(range(HELDOUT_SEED, HELDOUT_SEED + count))


def noise_set(model: Denoiser, n: int, seed: int = HELDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``n`` standard-normal x_T of the model's shape, and balanced labels for class-conditional models."""
    if model.data_shape is None:
        raise DiffsearchError(f"model {model.name!r} has no data_shape; pass data_shape= to its Denoiser")
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn((n, *model.data_shape), generator=generator)
    labels = None
    if model.num_classes:
        labels = torch.arange(n) % model.num_classes
        labels = labels[torch.randperm(n, generator=generator)]
    return x_T, labels
