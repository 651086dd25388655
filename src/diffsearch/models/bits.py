"""Bitwidth configurations and their accounting: kind ``bits`` network configurations, quantisable
layers and the layout that turns per-layer bits into mean bits per weight and weight bytes.

Torch-free values (nas_spec.md 3.1): a ``BitsConfig`` gives the weight bitwidth of each quantised
layer and the calibrated input range of each layer whose activations are quantised (8 bits per
tensor); layers it omits run in full precision. The byte accounting is the packed export's exactly:
``ceil(n b / 8)`` bytes of packed integers per layer, a float32 scale per output channel, a float32
(low, high) input range per layer with quantised activations, float32 for every other parameter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

BITWIDTHS = (2, 3, 4, 6, 8)
ACTIVATION_BITS = 8
FLOAT_BYTES = 4  # scales, ranges and full-precision parameters are float32
FULL_PRECISION_BITS = 32


class BitsConfig(BaseModel):
    """Kind ``bits``: the weight bitwidth per quantised layer and the calibrated input range per layer.

    Example:
        >>> BitsConfig(weights={"conv_in": 4}).weights
        {'conv_in': 4}
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["bits"] = "bits"
    #: layer name -> weight bits (one of ``BITWIDTHS``), per output channel, symmetric; omitted: float32.
    weights: dict[str, int] = Field(default_factory=dict)
    #: layer name -> calibrated (low, high) of its input; its activations are quantised to
    #: ``ACTIVATION_BITS`` per tensor (asymmetric). Omitted: float activations.
    activations: dict[str, tuple[float, float]] = Field(default_factory=dict)

    @field_validator("weights")
    @classmethod
    def _bits(cls, weights: dict[str, int]) -> dict[str, int]:
        wrong = {name: bits for name, bits in weights.items() if bits not in BITWIDTHS}
        if wrong:
            raise ValueError(f"weight bits {wrong} are not among {', '.join(map(str, BITWIDTHS))}")
        return weights

    @field_validator("activations")
    @classmethod
    def _ranges(cls, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        wrong = [name for name, (low, high) in ranges.items() if not (math.isfinite(low) and math.isfinite(high) and low <= 0.0 <= high)]
        if wrong:
            raise ValueError(f"activation ranges of {', '.join(wrong)} must be finite with low <= 0 <= high")
        return ranges

    def active(self) -> dict[str, object]:
        """The canonical form (sorted), used by plan fingerprints."""
        return {"weights": dict(sorted(self.weights.items())),
                "activations": {name: list(value) for name, value in sorted(self.activations.items())}}


class QuantizableLayer(BaseModel):
    """A conv or linear layer a network declares quantisable: its weight count and output channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    kind: Literal["conv", "linear"]
    params: int = Field(ge=1)
    out_channels: int = Field(ge=1)


class QuantizationLayout(BaseModel):
    """A network's quantisable layers and its other parameters: the cost of any bit allocation.

    Example:
        >>> layout = QuantizationLayout(layers=(QuantizableLayer(name="a", kind="linear", params=30, out_channels=3),
        ...                                     QuantizableLayer(name="b", kind="linear", params=10, out_channels=1)),
        ...                             other_params=4)
        >>> layout.mean_bits({"a": 4, "b": 8}), layout.weight_bytes({"a": 4, "b": 8})
        (5.0, 73)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: tuple[QuantizableLayer, ...]
    #: parameters that are never quantised (biases, norms, embedding tables), stored as float32.
    other_params: int = Field(0, ge=0)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    @property
    def total_weights(self) -> int:
        return sum(layer.params for layer in self.layers)

    def mean_bits(self, bits: dict[str, int]) -> float:
        """Parameter-weighted mean bits per weight (nas_spec.md 3.1); omitted layers count 32."""
        total = sum(layer.params * bits.get(layer.name, FULL_PRECISION_BITS) for layer in self.layers)
        return total / self.total_weights

    def weight_bytes(self, bits: dict[str, int], activations: int | None = None) -> int:
        """Bytes of the packed export: packed integers, float32 scales, ``activations`` input ranges (default: every layer), the rest."""
        return self.stored_bytes({name: (width,) for name, width in bits.items()}, activations)

    def stored_bytes(self, widths: dict[str, Iterable[int]], activations: int | None = None) -> int:
        """Bytes to store each layer at every bitwidth ``widths`` names for it (a per-step allocation keeps one
        copy per distinct bitwidth; a layer without any stays float32), plus ranges and the other parameters."""
        ranges = len(self.layers) if activations is None else activations
        total = FLOAT_BYTES * self.other_params + 2 * FLOAT_BYTES * ranges
        for layer in self.layers:
            stored = set(widths.get(layer.name, ()))
            total += sum(math.ceil(layer.params * width / 8) + FLOAT_BYTES * layer.out_channels for width in stored) if stored \
                else FLOAT_BYTES * layer.params
        return total

    def check(self, names) -> None:
        """Refuse layer names the network does not declare."""
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise ValueError(f"unknown layer(s) {', '.join(unknown)}; this network quantises {', '.join(self.names)}")
