"""Standalone sub-network weights of a plan (``search export --subnet-weights DIR``).

Each distinct sub-network a plan runs is materialised from the supernet (``get_active_subnet``) and
written as ``<label>.safetensors`` plus ``<label>.json`` (its architecture, the builder that rebuilds
it, the supernet's fingerprint, sha256); ``load_subnet`` rebuilds it without the supernet.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffsearch.errors import DiffsearchError

if TYPE_CHECKING:
    import torch

    from diffsearch.models.denoiser import Denoiser
    from diffsearch.solvers.plan import Plan


def export_subnet_weights(model: Denoiser, plan: Plan, directory: str | Path) -> list[Path]:
    """Write every sub-network of ``plan`` into ``directory``; returns the safetensors paths, in order of first use."""
    from diffsearch.models.digits import write_weights

    subnets = plan.subnets()
    if not subnets:
        raise DiffsearchError("--subnet-weights: the plan runs no sub-networks (it is not from a supernet space)")
    if model.elastic is None:
        raise DiffsearchError(f"--subnet-weights: model {model.name!r} is not a supernet")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for config in subnets:
        model.elastic.set_active(config)
        module = model.elastic.get_active_subnet()
        builder = f"{type(module).__module__}:{type(module).__name__}"
        metadata = {"subnet": config.label(), "builder": builder, "architecture": module.config.model_dump(mode="json"),
                    "supernet_fingerprint": model.fingerprint, "params": sum(p.numel() for p in module.parameters())}
        paths.append(write_weights(module, directory / f"{config.label()}.safetensors", metadata))
    model.elastic.set_active(None)
    return paths


def load_subnet(path: str | Path) -> torch.nn.Module:
    """A standalone sub-network from its safetensors file and JSON (rebuilt by its recorded builder)."""
    from diffsearch.models.digits import load_network

    command = "search export --subnet-weights DIR"
    json_path = Path(path).with_suffix(".json")
    if not json_path.is_file():
        raise DiffsearchError(f"{json_path} not found; {command} writes it beside the weights")
    builder = str(json.loads(json_path.read_text()).get("builder", ""))
    module_name, _, class_name = builder.partition(":")
    if not module_name.startswith("diffsearch."):
        raise DiffsearchError(f"{path}: builder {builder!r} is not a diffsearch network")
    network_class: Any = getattr(importlib.import_module(module_name), class_name)
    return load_network(network_class, network_class.config_class, Path(path), command)
