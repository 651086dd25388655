"""The small class-conditional UNet behind the ``digits`` model (8x8 -> 4x4 -> 2x2 and back).

DDPM's UNet (Ho et al. 2020) cut to two resolutions: residual blocks with GroupNorm and SiLU, an
additive embedding of (timestep, class label) in every block, strided-conv downsampling,
nearest-neighbour upsampling and concatenated skips. Label ``num_classes`` is the null label of
classifier-free guidance.

The five residual blocks are named units (``BLOCK_NAMES``) run through ``self.blocks`` (a
``BlockRunner``): ``skip`` keeps a block's shortcut (its 1x1 conv, or the identity) so every shape
stays valid (AutoDiffusion); ``reuse`` returns its output from the previous evaluation that ran it,
skipping the resampling convs that only feed it (DeepCache).
"""

from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diffsearch.models.blocks import BlockRunner

BLOCK_NAMES = ("down0", "down1", "mid", "up1", "up0")


class UNetConfig(BaseModel):
    """Architecture of ``DigitsUNet``; stored beside the weights and round-tripped through JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    in_channels: int = 1
    #: channels at 8x8 and at 4x4 / 2x2.
    channels: tuple[int, int] = (32, 64)
    #: width of the (timestep + label) embedding.
    embedding_dim: int = 128
    #: real classes; the embedding has one more row, the null label.
    num_classes: int = 10
    groups: int = Field(8, ge=1)
    #: the frequency scale of the sinusoidal timestep embedding.
    max_period: float = 10000.0


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (float) timesteps, as in Transformer / DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, the embedding added in between, plus a (1x1) skip.

    ``hidden_channels`` (default ``out_channels``) and ``kernel_size`` (of the first conv, default 3)
    let a once-for-all sub-network (``digits_ofa``) materialise as the same block.
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, groups: int,
                 hidden_channels: int | None = None, kernel_size: int = 3) -> None:
        super().__init__()
        hidden = hidden_channels or out_channels
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, hidden, kernel_size, padding=kernel_size // 2)
        self.embedding = nn.Linear(embedding_dim, hidden)
        self.norm2 = nn.GroupNorm(groups, hidden)
        self.conv2 = nn.Conv2d(hidden, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x)))
        h = h + self.embedding(emb)[:, :, None, None]
        h = self.conv2(nn.functional.silu(self.norm2(h)))
        return self.skip(x) + h


class DigitsUNet(nn.Module):
    """Epsilon network ``(x, t_in, labels) -> eps`` for (N, 1, 8, 8) images; about 0.42M parameters."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or UNetConfig()
        c0, c1 = config.channels
        emb, groups = config.embedding_dim, config.groups
        self.time_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_embedding = nn.Embedding(config.num_classes + 1, emb)
        self.conv_in = nn.Conv2d(config.in_channels, c0, 3, padding=1)
        self.down0 = ResBlock(c0, c0, emb, groups)
        self.downsample0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.down1 = ResBlock(c0, c1, emb, groups)
        self.downsample1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.mid = ResBlock(c1, c1, emb, groups)
        self.up1 = ResBlock(c1 + c1, c1, emb, groups)
        self.up0 = ResBlock(c1 + c0, c0, emb, groups)
        self.norm_out = nn.GroupNorm(groups, c0)
        self.conv_out = nn.Conv2d(c0, config.in_channels, 3, padding=1)
        self.blocks = BlockRunner(BLOCK_NAMES)

    def embed(self, t_in: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Timestep MLP(sinusoid) plus the label embedding (null label = ``num_classes``)."""
        time = self.time_mlp(timestep_embedding(t_in, self.config.embedding_dim, self.config.max_period))
        return nn.functional.silu(time + self.label_embedding(labels))

    def forward(self, x: torch.Tensor, t_in: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        emb = self.embed(t_in, labels)
        h0 = self._block("down0", lambda: self.conv_in(x), emb)
        h1 = self._block("down1", lambda: self.downsample0(h0), emb)
        h = self._block("mid", lambda: self.downsample1(h1), emb)
        h = self._block("up1", lambda: torch.cat([_upsample(h), h1], dim=1), emb)
        h = self._block("up0", lambda: torch.cat([_upsample(h), h0], dim=1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))

    def _block(self, name: str, block_input, emb: torch.Tensor) -> torch.Tensor:
        """Residual block ``name`` on the lazily computed ``block_input``, in its current mode."""
        block = getattr(self, name)
        return self.blocks.run(name, lambda: block(block_input(), emb), lambda: block.skip(block_input()))


def _upsample(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.interpolate(x, scale_factor=2, mode="nearest")
