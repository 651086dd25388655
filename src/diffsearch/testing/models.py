"""Tiny models for tests and benchmarks, built from config (no download)."""

from __future__ import annotations

from typing import Any, Callable


def tiny_unet_network(seed: int = 0, channels: int = 1) -> Callable[..., Any]:
    """``fn(x, t, cond)`` of a randomly initialised 8x8 diffusers UNet2DModel (42k parameters)."""
    import diffusers
    import torch

    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=channels, out_channels=channels, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    ).eval()

    @torch.no_grad()
    def fn(x, t, cond):
        return unet(x, t).sample

    return fn
