"""A user's small image model as `file.py:factory`: a 64-channel digits UNet (seeded random weights), no reference data.

The case of issue 18 item 8: without reference data the search judges by the teacher, so the time to
the first completed evaluation is the teacher's cost.
"""

from __future__ import annotations

import torch

import diffsearch
from diffsearch.models._digits_unet import DigitsUNet, UNetConfig
from diffsearch.models.digits import DIGITS_NOISE_SCHEDULE


def make() -> diffsearch.Denoiser:
    torch.manual_seed(0)
    unet = DigitsUNet(UNetConfig(channels=(64, 64))).eval().requires_grad_(False)

    def fn(x, t, cond):
        with torch.no_grad():
            return unet(x.float(), t.float(), torch.full((x.shape[0],), 10, dtype=torch.long)).to(x.dtype)

    return diffsearch.Denoiser(fn, DIGITS_NOISE_SCHEDULE, "epsilon", data_shape=(1, 8, 8), name="user_digits64", modules=(unet,))
