"""A plug-in model for service tests: the gmm with 0.1 s per network call on search batches (up to 256 rows), so a
search's length does not depend on the machine's load; larger batches (held-out, teacher) run at full speed."""

from __future__ import annotations

import time

import diffsearch
from diffsearch.models.gmm import build_gmm


def make() -> diffsearch.Denoiser:
    base = build_gmm()

    def fn(x, t, cond):
        if x.shape[0] <= 256:
            time.sleep(0.1)
        return base.fn(x, t, cond)

    model = diffsearch.Denoiser(fn, base.noise_schedule, data_shape=(8,), name="slow_gmm")
    model.truth = base.truth
    return model
