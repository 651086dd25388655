"""Packed integer weights of a quantised plan: write them (``search export --quantized-weights DIR``)
and install them into a network, which then samples exactly as the fake-quantised plan does.

``DIR/weights.safetensors`` holds, for every (layer, bits) the plan uses, ``<layer>.weight.w<bits>``
(uint8: the signed integers offset to unsigned and bit-packed, ``ceil(n b / 8)`` bytes) and
``<layer>.weight.w<bits>.scale`` (float32 per output channel); ``<layer>.input_range`` (float32 low,
high) for layers with quantised activations; every other tensor of the network in float32.
``DIR/quantization.json`` gives each packed tensor's shape and bits, the byte counts, and the
model's fingerprint. The tensors' bytes equal the budget's accounting (``QuantizationLayout``);
the file adds only safetensors' JSON header.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.files import atomic_path, atomic_write_text
from diffsearch.models.bits import BitsConfig
from diffsearch.models.denoiser import Denoiser
from diffsearch.models.quantize import dequantize_weight, pack_integers, quantize_weight, unpack_integers
from diffsearch.solvers.plan import Plan

WEIGHTS_FILE = "weights.safetensors"
METADATA_FILE = "quantization.json"
FORMAT = "diffsearch.quantized-weights/v1"


def plan_bits(plan: Plan) -> tuple[dict[str, set[int]], dict[str, tuple[float, float]]]:
    """Every bitwidth each layer runs at in the plan, and the activation ranges (one set for the plan)."""
    configs = [config for config in plan.network if isinstance(config, BitsConfig)]
    if not configs:
        raise DiffsearchError("--quantized-weights: the plan has no bitwidths (search a bitwidth space)")
    widths: dict[str, set[int]] = {}
    for config in configs:
        for name, bits in config.weights.items():
            widths.setdefault(name, set()).add(bits)
    ranges = configs[0].activations
    if any(config.activations != ranges for config in configs):
        raise DiffsearchError("--quantized-weights: the plan's evaluations use different activation ranges")
    return widths, ranges


def write_quantized_weights(model: Denoiser, plan: Plan, folder: str | Path) -> dict[str, Any]:
    """Write the plan's packed weights into ``folder``; returns the byte report (payload, file, accounting)."""
    from safetensors.torch import save_file

    quantizer = _quantizer(model)
    widths, ranges = plan_bits(plan)
    quantizer.layout.check([*widths, *ranges])
    module, tensors, shapes = quantizer.module, {}, {}
    quantised = {f"{name}.weight" for name in widths}
    for key, value in module.state_dict().items():
        if key not in quantised:
            tensors[key] = value.detach().float().contiguous()
    for name, bit_set in widths.items():
        weight = module.get_submodule(name).weight.detach()
        for bits in sorted(bit_set):
            q, scales = quantize_weight(weight, bits)
            tensors[f"{name}.weight.w{bits}"] = torch.from_numpy(pack_integers(q, bits))
            tensors[f"{name}.weight.w{bits}.scale"] = scales.float().contiguous()
            shapes[f"{name}.weight.w{bits}"] = {"bits": bits, "shape": list(weight.shape)}
    for name, (low, high) in ranges.items():
        tensors[f"{name}.input_range"] = torch.tensor([low, high], dtype=torch.float32)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS_FILE) as temporary:
        save_file(tensors, str(temporary))
    report = _report(model, tensors, folder / WEIGHTS_FILE, widths, len(ranges))
    atomic_write_text(folder / METADATA_FILE, json.dumps({**report, "packed": shapes}, indent=2) + "\n")
    return report


def _report(model: Denoiser, tensors: dict[str, torch.Tensor], path: Path, widths: dict[str, set[int]], ranges: int) -> dict[str, Any]:
    """Bytes of the tensors, of the file on disk, and of the budget's accounting for the same (layer, bits) set."""
    layout = _quantizer(model).layout
    accounting = layout.stored_bytes(widths, activations=ranges)
    channels = {layer.name: layer for layer in layout.layers}
    payload = sum(t.numel() * t.element_size() for t in tensors.values())
    return {"format": FORMAT, "model": model.fingerprint, "payload_bytes": payload, "file_bytes": path.stat().st_size,
            "header_bytes": path.stat().st_size - payload, "accounting_bytes": accounting,
            "mean_bits_stored": sum(channels[n].params * b for n, bits in widths.items() for b in bits) / layout.total_weights}


def install_quantized_weights(model: Denoiser, folder: str | Path) -> dict[str, Any]:
    """Load ``folder``'s packed weights into ``model``: float tensors into the network, each (layer, bits)
    dequantised into its quantizer, so that a plan samples from the packed integers alone."""
    from safetensors.torch import load_file

    quantizer = _quantizer(model)
    folder = Path(folder)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / METADATA_FILE).is_file():
        raise DiffsearchError(f"{folder}: no {WEIGHTS_FILE} and {METADATA_FILE} (write them with search export --quantized-weights)")
    tensors, metadata = load_file(str(folder / WEIGHTS_FILE)), json.loads((folder / METADATA_FILE).read_text())
    if metadata.get("format") != FORMAT:
        raise DiffsearchError(f"{folder / METADATA_FILE}: format {metadata.get('format')!r} is not {FORMAT}")
    weights = {}
    for key, info in metadata["packed"].items():
        count = int(np.prod(info["shape"]))
        q = unpack_integers(tensors[key].numpy(), info["bits"], count).reshape(info["shape"])
        weights[(key.rsplit(".weight.", 1)[0], info["bits"])] = dequantize_weight(q, tensors[f"{key}.scale"])
    state = {key: value for key, value in tensors.items() if key in quantizer.module.state_dict()}
    for (name, bits), value in sorted(weights.items()):
        state[f"{name}.weight"] = value  # the highest bitwidth stands in for the float weight (sorted: it comes last)
    missing = sorted(set(quantizer.module.state_dict()) - set(state))
    if missing:
        raise DiffsearchError(f"{folder / WEIGHTS_FILE}: tensors missing for {', '.join(missing[:5])}")
    with torch.no_grad():
        quantizer.module.load_state_dict({key: value.to(quantizer.module.state_dict()[key].dtype) for key, value in state.items()})
    quantizer.load(weights)
    return metadata


def _quantizer(model: Denoiser):
    if model.quantizer is None:
        raise DiffsearchError(f"model {model.name!r} declares no quantisable layers")
    return model.quantizer
