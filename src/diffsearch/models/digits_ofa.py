"""The ``digits_ofa`` model: a once-for-all elastic digits UNet and its progressive-shrinking training.

The supernet (Cai et al. 2020, "Once-for-All") is the ``digits`` UNet with up to three residual
blocks per stage. Per stage it is elastic in depth (the first 1-3 blocks run), width (0.5 / 0.75 /
1.0 of each block's hidden channels, the first ones) and kernel (3 or 5 on the first conv of each
block at 8x8: the centre 3x3 of the 5x5 weights through a learned 9x9 transform, OFA's
elastic kernel). Weights are held once at their largest size; ``set_active`` selects slices and
``get_active_subnet`` returns a standalone ``DigitsSubnet`` with copied weights.

``python -m diffsearch.models.digits_ofa train`` reproduces ``weights/digits_ofa.safetensors``:
the largest network first, then the kernel, depth and width made elastic one after another
(progressive shrinking), each step training the largest, the smallest and random sub-networks of
the current phase (the sandwich rule, Yu et al. 2019) with in-place distillation from the largest.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diffsearch.models._digits_unet import ResBlock, UNetConfig, _upsample, timestep_embedding
from diffsearch.models.denoiser import Denoiser
from diffsearch.models.digits import (
    DIGITS_NOISE_SCHEDULE, NULL_LABEL, WEIGHTS_DIR, denoising_loss, digits_denoiser, file_fingerprint, learning_rate,
    load_network, optimisation_step, report_written, training_batch, training_cli, training_setup, write_weights,
)
from diffsearch.models.subnet import ElasticSpace, SubnetConfig

STAGES = ("down0", "down1", "mid", "up1", "up0")
OFA_WEIGHTS = WEIGHTS_DIR / "digits_ofa.safetensors"
TRAIN_COMMAND = "python -m diffsearch.models.digits_ofa train"


class OFAArchitecture(UNetConfig):
    """The digits UNet's architecture (the supernet's largest network) and the choices of each elastic dimension."""

    depth_choices: tuple[int, ...] = (1, 2, 3)
    width_choices: tuple[float, ...] = (0.5, 0.75, 1.0)
    #: kernel sizes of the first conv of each block, per stage (5x5 where it fits: the 8x8 stages).
    kernel_choices: tuple[tuple[int, ...], ...] = ((3, 5), (3,), (3,), (3,), (3, 5))

    def space(self) -> ElasticSpace:
        return ElasticSpace(stages=STAGES, depth_choices=self.depth_choices, width_choices=self.width_choices,
                            kernel_choices=self.kernel_choices)

    def stage_channels(self) -> dict[str, tuple[int, int]]:
        """(input channels of the first block, output channels) of each stage."""
        c0, c1 = self.channels
        return {"down0": (c0, c0), "down1": (c0, c1), "mid": (c1, c1), "up1": (c1 + c1, c1), "up0": (c1 + c0, c0)}

    def hidden(self, stage: str, width: float) -> int:
        """Hidden channels of a block of ``stage`` at ``width`` (a whole number of groups)."""
        out = self.stage_channels()[stage][1]
        return max(self.groups, int(round(out * width / self.groups)) * self.groups)


class SubnetArchitecture(BaseModel):
    """A materialised sub-network: the supernet's architecture plus the chosen sub-network (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    supernet: OFAArchitecture = OFAArchitecture()
    subnet: SubnetConfig


class ElasticResBlock(ResBlock):
    """A ResBlock held at its largest hidden width and kernel; ``active_hidden`` / ``active_kernel`` slice it."""

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int, groups: int, kernels: tuple[int, ...]) -> None:
        super().__init__(in_channels, out_channels, embedding_dim, groups, kernel_size=max(kernels))
        self.groups = groups
        self.kernel_transforms = nn.ParameterDict(
            {str(k): nn.Parameter(torch.eye(k * k)) for k in kernels if k != max(kernels)})
        self.active_hidden, self.active_kernel = out_channels, max(kernels)

    def kernel_weight(self, kernel: int) -> torch.Tensor:
        """OFA's elastic kernel: the centre ``kernel`` x ``kernel`` crop of conv1, times a learned transform."""
        weight = self.conv1.weight
        if kernel == weight.shape[-1]:
            return weight
        start = (weight.shape[-1] - kernel) // 2
        crop = weight[:, :, start:start + kernel, start:start + kernel].reshape(-1, kernel * kernel)
        return (crop @ self.kernel_transforms[str(kernel)]).reshape(*weight.shape[:2], kernel, kernel)

    def active_weights(self) -> dict[str, torch.Tensor]:
        """The weights of the active slice under ResBlock's names (contiguous copies of slices)."""
        h = self.active_hidden
        sliced = {"conv1.weight": self.kernel_weight(self.active_kernel)[:h], "conv1.bias": self.conv1.bias[:h],
                  "embedding.weight": self.embedding.weight[:h], "embedding.bias": self.embedding.bias[:h],
                  "norm2.weight": self.norm2.weight[:h], "norm2.bias": self.norm2.bias[:h],
                  "conv2.weight": self.conv2.weight[:, :h], "conv2.bias": self.conv2.bias}
        return {name: tensor.contiguous() for name, tensor in sliced.items()}

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        functional, w = nn.functional, self.active_weights()
        h = functional.conv2d(functional.silu(self.norm1(x)), w["conv1.weight"], w["conv1.bias"], padding=self.active_kernel // 2)
        h = h + functional.linear(emb, w["embedding.weight"], w["embedding.bias"])[:, :, None, None]
        h = functional.group_norm(h, self.groups, w["norm2.weight"], w["norm2.bias"], self.norm2.eps)
        h = functional.conv2d(functional.silu(h), w["conv2.weight"], w["conv2.bias"], padding=1)
        return self.skip(x) + h

    def materialise(self) -> ResBlock:
        """A standalone ResBlock with the active slice's weights copied."""
        in_channels, out_channels = self.norm1.num_channels, self.conv2.out_channels
        block = ResBlock(in_channels, out_channels, self.embedding.in_features, self.groups, self.active_hidden, self.active_kernel)
        state = {k: v for k, v in self.state_dict().items() if k.startswith(("norm1.", "skip."))}
        block.load_state_dict({**state, **{k: v.detach().clone() for k, v in self.active_weights().items()}})
        return block


class _OFATopology(nn.Module):
    """The UNet wiring shared by the supernet and its sub-networks; stages run ``stage_blocks(name)``."""

    def _build_trunk(self, architecture: OFAArchitecture) -> None:
        c0, c1 = architecture.channels
        emb = architecture.embedding_dim
        self.architecture = architecture
        self.time_mlp = nn.Sequential(nn.Linear(emb, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.label_embedding = nn.Embedding(architecture.num_classes + 1, emb)
        self.conv_in = nn.Conv2d(architecture.in_channels, c0, 3, padding=1)
        self.downsample0 = nn.Conv2d(c0, c0, 3, stride=2, padding=1)
        self.downsample1 = nn.Conv2d(c1, c1, 3, stride=2, padding=1)
        self.norm_out = nn.GroupNorm(architecture.groups, c0)
        self.conv_out = nn.Conv2d(c0, architecture.in_channels, 3, padding=1)

    def stage_blocks(self, name: str) -> list[nn.Module]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t_in: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        a = self.architecture
        time_embedding = self.time_mlp(timestep_embedding(t_in, a.embedding_dim, a.max_period))
        emb = nn.functional.silu(time_embedding + self.label_embedding(labels))
        h0 = self._stage("down0", self.conv_in(x), emb)
        h1 = self._stage("down1", self.downsample0(h0), emb)
        h = self._stage("mid", self.downsample1(h1), emb)
        h = self._stage("up1", torch.cat([_upsample(h), h1], dim=1), emb)
        h = self._stage("up0", torch.cat([_upsample(h), h0], dim=1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))

    def _stage(self, name: str, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for block in self.stage_blocks(name):
            h = block(h, emb)
        return h


class DigitsSubnet(_OFATopology):
    """A standalone sub-network of ``digits_ofa`` (plain ResBlocks; it does not know the supernet)."""

    config_class = SubnetArchitecture

    def __init__(self, config: SubnetArchitecture) -> None:
        super().__init__()
        self.config = config
        self._build_trunk(config.supernet)
        a, subnet = config.supernet, config.subnet
        self.stages = nn.ModuleDict()
        for index, (name, (in_channels, out_channels)) in enumerate(a.stage_channels().items()):
            hidden, kernel = a.hidden(name, subnet.width[index]), subnet.kernel[index]
            self.stages[name] = nn.ModuleList(
                ResBlock(in_channels if i == 0 else out_channels, out_channels, a.embedding_dim, a.groups, hidden, kernel)
                for i in range(subnet.depth[index]))

    def stage_blocks(self, name: str) -> list[nn.Module]:
        return list(self.stages[name])


class DigitsSupernet(_OFATopology):
    """The elastic digits UNet: weights at their largest size, ``set_active`` selects a sub-network.

    Example:
        >>> net = DigitsSupernet()
        >>> net.set_active(net.space.smallest()); net.active_config.label()
        'd11111-w0.5,0.5,0.5,0.5,0.5-k33333'
    """

    def __init__(self, architecture: OFAArchitecture | None = None) -> None:
        super().__init__()
        architecture = architecture or OFAArchitecture()
        self._build_trunk(architecture)
        self.space = architecture.space()
        depth = max(architecture.depth_choices)
        self.stages = nn.ModuleDict()
        for index, (name, (in_channels, out_channels)) in enumerate(architecture.stage_channels().items()):
            self.stages[name] = nn.ModuleList(
                ElasticResBlock(in_channels if i == 0 else out_channels, out_channels, architecture.embedding_dim,
                                architecture.groups, architecture.kernel_choices[index])
                for i in range(depth))
        self.deployed, self._subnets = False, {}
        self.set_active(None)

    def deploy(self) -> DigitsSupernet:
        """From now on run each active sub-network materialised (built once, cached): weights are frozen."""
        self.deployed, self._subnets = True, {}
        return self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, t_in: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if not self.deployed:
            return super().forward(x, t_in, labels)
        if self.active_config not in self._subnets:
            self._subnets[self.active_config] = self.get_active_subnet()
        return self._subnets[self.active_config](x, t_in, labels)

    def _apply(self, fn, *args, **kwargs):
        self._subnets = {}  # moved or cast: materialise again from the moved weights
        return super()._apply(fn, *args, **kwargs)

    def set_active(self, config: SubnetConfig | None) -> None:
        """Select ``config``'s depth, width and kernel slices (None: the largest network)."""
        config = self.space.largest() if config is None else self.space.check(config)
        self.active_config = config
        for index, name in enumerate(STAGES):
            for block in self.stages[name]:
                block.active_hidden = self.architecture.hidden(name, config.width[index])
                block.active_kernel = config.kernel[index]

    def stage_blocks(self, name: str) -> list[nn.Module]:
        return list(self.stages[name])[: self.active_config.depth[STAGES.index(name)]]

    def get_active_subnet(self) -> DigitsSubnet:
        """The active sub-network as a standalone module with copied weights (OFA's ``get_active_subnet``)."""
        subnet = DigitsSubnet(SubnetArchitecture(supernet=self.architecture, subnet=self.active_config))
        trunk = {k: v for k, v in self.state_dict().items() if not k.startswith("stages.")}
        blocks = {f"stages.{name}.{i}.{k}": v for name in STAGES for i, block in enumerate(self.stage_blocks(name))
                  for k, v in block.materialise().state_dict().items()}
        subnet.load_state_dict({**{k: v.detach().clone() for k, v in trunk.items()}, **blocks})
        return subnet.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# training: progressive shrinking with the sandwich rule and in-place distillation

Dimension = Literal["kernel", "depth", "width"]


class PhaseConfig(BaseModel):
    """One phase of progressive shrinking: which dimensions are elastic, for how many steps."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: the elastic dimensions (empty: the largest network alone).
    elastic: tuple[Dimension, ...]
    steps: int = Field(ge=1)
    learning_rate: float
    warmup_steps: int = 50
    #: random sub-networks per step besides the largest and the smallest (the sandwich rule).
    random_subnets: int = Field(1, ge=0)

    @property
    def label(self) -> str:
        """``kernel+depth``, or ``largest`` for the phase without elastic dimensions."""
        return "+".join(self.elastic) or "largest"


DEFAULT_PHASES = (
    PhaseConfig(elastic=(), steps=3000, learning_rate=1e-3, warmup_steps=200, random_subnets=0),
    PhaseConfig(elastic=("kernel",), steps=200, learning_rate=5e-4),
    PhaseConfig(elastic=("kernel", "depth"), steps=400, learning_rate=5e-4),
    PhaseConfig(elastic=("kernel", "depth", "width"), steps=1000, learning_rate=5e-4),
)


class OFATrainConfig(BaseModel):
    """Hyperparameters of ``train_digits_ofa``; stored in the weights' JSON metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    phases: tuple[PhaseConfig, ...] = DEFAULT_PHASES
    batch_size: int = Field(128, ge=2)
    ema_decay: float = 0.999
    label_dropout: float = Field(0.15, ge=0.0, le=1.0)
    #: weight of the largest network's (detached) prediction in a smaller one's target; the rest is the true noise.
    distillation: float = Field(0.5, ge=0.0, le=1.0)
    seed: int = 0
    split_seed: int = 0
    threads: int = 1
    architecture: OFAArchitecture = OFAArchitecture()


def sandwich_loss(supernet: DigitsSupernet, batch, phase: PhaseConfig, distillation: float, rng: np.random.Generator) -> torch.Tensor:
    """Largest network's epsilon-MSE plus, per smaller sub-network, MSE to the noise and to the largest's prediction."""
    x_t, t, labels, noise = batch
    supernet.set_active(None)
    teacher = supernet(x_t, t, labels)
    loss = (teacher - noise).pow(2).mean()
    if not phase.elastic:
        return loss
    space = supernet.space.model_copy(update={"elastic": phase.elastic})
    target = teacher.detach()
    for config in [space.smallest()] + [space.random(rng) for _ in range(phase.random_subnets)]:
        supernet.set_active(config)
        prediction = supernet(x_t, t, labels)
        loss = loss + (1 - distillation) * (prediction - noise).pow(2).mean() + distillation * (prediction - target).pow(2).mean()
    supernet.set_active(None)
    return loss


def train_digits_ofa(config: OFATrainConfig, log_every: int = 250, checkpoints: Path | None = None) -> tuple[DigitsSupernet, dict[str, Any]]:
    """Progressive shrinking (largest, then kernel, depth, width) with the sandwich rule; returns (EMA supernet, info).

    ``info["phases"]`` holds the held-out losses after each phase; ``checkpoints`` (a directory) also
    receives the EMA weights after each phase (``phase1/`` ...), which do not change the training.
    """
    split, alphas_cumprod, supernet, ema = training_setup(config, DigitsSupernet)
    generator, rng = torch.Generator().manual_seed(config.seed), np.random.default_rng(config.seed)
    start, total, phases = time.perf_counter(), 0, []
    for index, phase in enumerate(config.phases, 1):
        optimizer = torch.optim.AdamW(supernet.parameters(), lr=phase.learning_rate, weight_decay=0.0)
        for step in range(phase.steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, phase)
            batch = training_batch(split.train_images, split.train_labels, alphas_cumprod, config, generator)
            loss = sandwich_loss(supernet, batch, phase, config.distillation, rng)
            optimisation_step(optimizer, loss, ema, supernet, total, config.ema_decay)
            if log_every and step % log_every == 0:
                print(f"phase {phase.label} step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f}s", flush=True)
            total += 1
        phases.append({"phase": phase.label, "steps_done": total,
                       "seconds": round(time.perf_counter() - start, 1), "held_out_denoising_mse": held_out_losses(ema, split, alphas_cumprod)})
        print(json.dumps(phases[-1]), flush=True)
        if checkpoints is not None:
            (checkpoints / f"phase{index}").mkdir(parents=True, exist_ok=True)
            save_digits_ofa(ema, config, {"steps_done": total, "phases": phases}, checkpoints / f"phase{index}")
    info = {"steps_done": total, "train_seconds": round(time.perf_counter() - start, 1),
            "held_out_denoising_mse": phases[-1]["held_out_denoising_mse"], "phases": phases}
    return ema.eval(), info


def held_out_losses(supernet: DigitsSupernet, split, alphas_cumprod) -> dict[str, float]:
    """Held-out epsilon-MSE of the largest and the smallest sub-network."""
    losses = {}
    for label, config in (("largest", supernet.space.largest()), ("smallest", supernet.space.smallest())):
        supernet.set_active(config)
        losses[label] = denoising_loss(supernet, split.held_out_images, split.held_out_labels, alphas_cumprod)
    supernet.set_active(None)
    return losses


def save_digits_ofa(supernet: DigitsSupernet, config: OFATrainConfig, info: dict[str, Any], out: Path) -> Path:
    """Write ``digits_ofa.safetensors`` and its ``digits_ofa.json`` metadata into ``out``."""
    metadata = {
        "model": "digits_ofa", "command": f"{TRAIN_COMMAND} --seed {config.seed} --threads {config.threads}",
        "architecture": config.architecture.model_dump(mode="json"), "noise_schedule": DIGITS_NOISE_SCHEDULE,
        "prediction_type": "epsilon", "null_label": NULL_LABEL,
        "training": config.model_dump(mode="json", exclude={"architecture"}), "metrics": info,
    }
    return write_weights(supernet, out / OFA_WEIGHTS.name, metadata)


# ---------------------------------------------------------------------------------------------
# loading


def load_supernet(weights: str | Path | None = None) -> DigitsSupernet:
    """The trained supernet from its safetensors file and JSON metadata (offline)."""
    return load_network(DigitsSupernet, OFAArchitecture, Path(weights) if weights is not None else OFA_WEIGHTS, TRAIN_COMMAND)


def build_digits_ofa(weights: str | Path | None = None) -> Denoiser:
    """The ``digits_ofa`` model: the elastic supernet behind a Denoiser that runs any of its sub-networks.

    Example:
        >>> model = build_digits_ofa()
        >>> model.elastic.space.stages
        ('down0', 'down1', 'mid', 'up1', 'up0')
    """
    path = Path(weights) if weights is not None else OFA_WEIGHTS
    supernet = load_supernet(path).deploy()
    return digits_denoiser(supernet, "digits_ofa", f"digits_ofa-{file_fingerprint(path)}", elastic=supernet)


def main(argv: list[str] | None = None) -> None:
    """``python -m diffsearch.models.digits_ofa train [--out DIR] [--seed S] [--threads T] [--scale F] [--checkpoints DIR]``."""
    parser, train = training_cli("diffsearch.models.digits_ofa", "the once-for-all supernet", OFATrainConfig().threads)
    train.add_argument("--scale", type=float, default=1.0, help="multiply every phase's steps (smoke runs; not the shipped weights)")
    train.add_argument("--checkpoints", type=Path, default=None, help="also write the EMA weights after each phase into DIR/phaseN")
    args = parser.parse_args(argv)
    phases = tuple(p.model_copy(update={"steps": max(1, round(p.steps * args.scale)),
                                        "warmup_steps": min(p.warmup_steps, max(1, round(p.steps * args.scale)))})
                   for p in DEFAULT_PHASES)
    config = OFATrainConfig(seed=args.seed, threads=args.threads, phases=phases)
    supernet, info = train_digits_ofa(config, checkpoints=args.checkpoints)
    report_written(info, save_digits_ofa(supernet, config, info, args.out))


if __name__ == "__main__":
    main()
