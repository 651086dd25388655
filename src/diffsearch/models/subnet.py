"""Sub-networks of a once-for-all supernet: the ``subnet`` network configuration and its space.

A ``SubnetConfig`` (kind ``subnet`` of the per-evaluation ``NetworkConfig`` union) gives, for each
stage of an elastic network, its depth (the first ``depth`` residual blocks run), its width (the
share of each block's hidden channels kept, the first ones) and its kernel (the centre of the
largest kernel, through a learned transform: OFA's elastic kernel, Cai et al. 2020). An
``ElasticSpace`` is what a supernet declares: its stages and the choices of each dimension. The
space's one-hot ``encode`` is OFA's architecture encoding, shared by predictors and search.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict

from diffsearch.errors import DiffsearchError


class SubnetConfig(BaseModel):
    """Kind ``subnet``: one sub-network of an elastic supernet, per stage depth, width and kernel."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["subnet"] = "subnet"
    #: residual blocks run in each stage (the first ones).
    depth: tuple[int, ...]
    #: share of each block's hidden channels kept in each stage (the first ones).
    width: tuple[float, ...]
    #: kernel size of each stage's first convolutions (a centre crop of the largest).
    kernel: tuple[int, ...]

    def replace(self, stage: int, dimension: str, value: Any) -> SubnetConfig:
        """A copy with ``dimension`` (depth, width or kernel) of ``stage`` set to ``value``."""
        values = list(getattr(self, dimension))
        values[stage] = value
        return self.model_copy(update={dimension: tuple(values)})

    def label(self) -> str:
        """A short readable name, e.g. ``d33333-w1,1,1,1,1-k55355``."""
        widths = ",".join(f"{w:g}" for w in self.width)
        return f"d{''.join(map(str, self.depth))}-w{widths}-k{''.join(map(str, self.kernel))}"


class ElasticSpace(BaseModel):
    """The sub-networks a supernet offers: its stages and the choices of each elastic dimension.

    Example:
        >>> space = ElasticSpace(stages=("a", "b"), depth_choices=(1, 2), width_choices=(0.5, 1.0),
        ...                      kernel_choices=((3, 5), (3,)))
        >>> space.largest().label(), space.smallest().label(), space.encode(space.largest()).shape
        ('d22-w1,1-k53', 'd11-w0.5,0.5-k33', (11,))
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    stages: tuple[str, ...]
    depth_choices: tuple[int, ...]
    width_choices: tuple[float, ...]
    #: the kernel sizes of each stage (one choice: that stage's kernel is fixed).
    kernel_choices: tuple[tuple[int, ...], ...]
    #: the dimensions this space varies (progressive shrinking trains them one after another).
    elastic: tuple[Literal["kernel", "depth", "width"], ...] = ("kernel", "depth", "width")

    def choices(self, dimension: str, stage: int) -> tuple[Any, ...]:
        """The values ``dimension`` may take in ``stage`` (only the largest when it is not elastic)."""
        options = {"depth": self.depth_choices, "width": self.width_choices, "kernel": self.kernel_choices[stage]}[dimension]
        return tuple(options) if dimension in self.elastic else (max(options),)

    def largest(self) -> SubnetConfig:
        return self._extreme(max)

    def smallest(self) -> SubnetConfig:
        return self._extreme(min)

    def _extreme(self, pick) -> SubnetConfig:
        values = {d: tuple(pick(self.choices(d, s)) for s in range(len(self.stages))) for d in ("depth", "width", "kernel")}
        return SubnetConfig(**values)

    def uniform(self) -> list[SubnetConfig]:
        """Every uniformly scaled sub-network: one depth and one width everywhere, each stage's kernel alike (small or large)."""
        configs = []
        for depth in self.choices("depth", 0):
            for width in self.choices("width", 0):
                for pick in (min, max) if "kernel" in self.elastic else (max,):
                    kernel = tuple(pick(self.choices("kernel", s)) for s in range(len(self.stages)))
                    configs.append(SubnetConfig(depth=(depth,) * len(self.stages), width=(width,) * len(self.stages), kernel=kernel))
        return list(dict.fromkeys(configs))

    def random(self, rng: np.random.Generator) -> SubnetConfig:
        """A uniformly random sub-network."""
        return SubnetConfig(**{d: tuple(_pick(self.choices(d, s), rng) for s in range(len(self.stages))) for d in ("depth", "width", "kernel")})

    def check(self, config: Any) -> SubnetConfig:
        """``config`` as a SubnetConfig of this space; a DiffsearchError naming the bad value otherwise."""
        config = config if isinstance(config, SubnetConfig) else SubnetConfig.model_validate(config)
        for dimension in ("depth", "width", "kernel"):
            values = getattr(config, dimension)
            if len(values) != len(self.stages):
                raise DiffsearchError(f"subnet {dimension}: {len(values)} values for {len(self.stages)} stages ({', '.join(self.stages)})")
            for stage, value in enumerate(values):
                if value not in self.choices(dimension, stage):
                    allowed = ", ".join(f"{v:g}" for v in self.choices(dimension, stage))
                    raise DiffsearchError(f"subnet {dimension} of stage {self.stages[stage]!r} is {value:g}; allowed: {allowed}")
        return config

    def encode(self, config: SubnetConfig) -> np.ndarray:
        """OFA's one-hot architecture encoding: per stage one-hot depth, width and kernel."""
        parts = []
        for stage in range(len(self.stages)):
            for dimension in ("depth", "width", "kernel"):
                options = self.choices(dimension, stage)
                parts.append(np.asarray([float(getattr(config, dimension)[stage] == o) for o in options]))
        return np.concatenate(parts)


def _pick(options: tuple[Any, ...], rng: np.random.Generator) -> Any:
    return options[int(rng.integers(len(options)))]


class ElasticNetwork(Protocol):
    """What a Denoiser declares to run sub-networks: the space and the active configuration."""

    space: ElasticSpace

    def set_active(self, config: SubnetConfig | None) -> None:
        """Select ``config``'s slices for the next calls (None: the largest network)."""


def config_subnet(config: Any) -> SubnetConfig | None:
    """The sub-network of one evaluation's configuration (None for other kinds or the full network)."""
    return config if isinstance(config, SubnetConfig) else None

