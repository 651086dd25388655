"""A user's model as `file.py:factory`: the gmm network with no reference data and no exact moments."""

from __future__ import annotations

import diffsearch
from diffsearch.models.gmm import build_gmm


def make() -> diffsearch.Denoiser:
    base = build_gmm()
    return diffsearch.Denoiser(base.fn, base.noise_schedule, "epsilon", data_shape=(8,), name="user_gmm")
