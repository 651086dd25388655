"""Named, skippable network blocks: per-evaluation network configurations and the block runner.

A ``NetworkConfig`` says how the network runs for one model evaluation. Kind ``blocks`` gives a
mode per named block (AutoDiffusion's skip, DeepCache / Learning-to-Cache's reuse); unnamed blocks
run. The tagged union leaves room for ``subnet`` (once-for-all widths) and ``bits`` (quantisation).

A network with named blocks owns one ``BlockRunner`` and routes every block through
``runner.run(name, compute, shortcut)``. The ``Denoiser`` configures the runner before each call
(the one declared hook) and resets its reuse cache at the start of each ``sample``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field

from diffsearch.errors import DiffsearchError
from diffsearch.models.bits import BitsConfig
from diffsearch.models.subnet import SubnetConfig

BlockMode = Literal["run", "skip", "reuse"]
BLOCK_MODES = ("run", "skip", "reuse")
T = TypeVar("T")


class BlocksConfig(BaseModel):
    """Kind ``blocks``: the mode of each named block for one evaluation (omitted blocks run).

    ``skip``: the block's shortcut only (a residual block keeps its 1x1 skip conv, attention is the
    identity); ``reuse``: the block's output from the most recent evaluation that ran it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["blocks"] = "blocks"
    #: block name -> mode; ``run`` entries are allowed and mean the same as omitting the block.
    modes: dict[str, BlockMode] = Field(default_factory=dict)

    def active(self) -> dict[str, BlockMode]:
        """The modes that differ from ``run``, sorted by name (the canonical form)."""
        return {name: mode for name, mode in sorted(self.modes.items()) if mode != "run"}


#: One network configuration per model evaluation; a tagged union on ``kind``.
NetworkConfig = Annotated[Union[BlocksConfig, BitsConfig, SubnetConfig], Field(discriminator="kind")]  # noqa: UP007


class BlockRunner:
    """Runs a network's named blocks in the modes of the current evaluation; owns the reuse cache.

    Args:
        names: the block names, in execution order.

    Example:
        >>> runner = BlockRunner(("a",))
        >>> runner.configure({}); runner.run("a", lambda: 2, lambda: 0)
        2
        >>> runner.configure({"a": "skip"}); runner.run("a", lambda: 2, lambda: 0)
        0
        >>> runner.configure({"a": "reuse"}); runner.run("a", lambda: 3, lambda: 0)
        2
    """

    def __init__(self, names: tuple[str, ...]) -> None:
        if len(set(names)) != len(names):
            raise ValueError(f"block names must be unique: {names}")
        self.names = tuple(names)
        self.modes: Mapping[str, str] | None = None
        self.cache: dict[str, Any] = {}

    def configure(self, modes: Mapping[str, str] | None) -> None:
        """Modes for the next call; ``None`` runs the full network without caching."""
        if modes is not None:
            unknown = sorted(set(modes) - set(self.names))
            if unknown:
                raise DiffsearchError(f"unknown block(s) {', '.join(unknown)}; this network has {', '.join(self.names)}")
        self.modes = modes

    def reset(self) -> None:
        """Forget cached outputs and modes (the start of a sampling run)."""
        self.cache.clear()
        self.modes = None

    def run(self, name: str, compute: Callable[[], T], shortcut: Callable[[], T]) -> T:
        """The block's output in its current mode: computed (and cached), its shortcut, or reused."""
        if self.modes is None:
            return compute()
        mode = self.modes.get(name, "run")
        if mode == "skip":
            return shortcut()
        if mode == "reuse":
            if name not in self.cache:
                raise DiffsearchError(f"block {name!r} is reused before any evaluation of this sample ran it")
            return self.cache[name]
        output = compute()
        self.cache[name] = output
        return output


def config_modes(config: Any) -> dict[str, str] | None:
    """The block modes of one evaluation's configuration (``None``: the full network, quantised or a sub-network; no cache)."""
    if config is None or isinstance(config, (BitsConfig, SubnetConfig)):
        return None
    if isinstance(config, BlocksConfig):
        return dict(config.modes)
    raise DiffsearchError(f"network configuration kind {getattr(config, 'kind', type(config).__name__)!r} is not supported")
