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


def untrained_supernet(seed: int = 0, scale: float = 0.05):
    """A ``digits_ofa`` supernet at random init, its kernel transforms and norms moved off their
    (identity, unit) init so every slice matters."""
    import torch

    from diffsearch.models.digits_ofa import DigitsSupernet

    torch.manual_seed(seed)
    supernet = DigitsSupernet()
    with torch.no_grad():
        for parameter in supernet.parameters():
            parameter.add_(scale * torch.randn_like(parameter))
    return supernet.eval().requires_grad_(False)


def untrained_digits_ofa(directory: Any, seed: int = 0):
    """The registered ``digits_ofa`` builder on an untrained supernet's weights written into ``directory``."""
    from pathlib import Path

    from diffsearch.models.digits_ofa import OFATrainConfig, build_digits_ofa, save_digits_ofa

    return build_digits_ofa(save_digits_ofa(untrained_supernet(seed), OFATrainConfig(), {}, Path(directory)))
