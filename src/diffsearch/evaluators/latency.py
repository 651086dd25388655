"""A latency look-up table of a supernet's sub-networks, measured per block configuration (OFA 2.4).

Every block configuration (stage, first or later block of the stage, width, kernel) is timed inside
materialised sub-networks by forward hooks, at a fixed batch on the model's own device (CUDA
synchronised around each block); the rest of the network (embedding, stem, resampling, head) is the
trunk: the whole call minus its blocks. A sub-network's seconds per sample are the trunk plus its
blocks. Tables are cached under ``$DIFFSEARCH_CACHE/latency`` per model, device, torch and threads.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from typing import Any

import torch

from diffsearch.evaluators.image_metrics import cache_dir
from diffsearch.files import atomic_write_text
from diffsearch.models.denoiser import Denoiser


def block_key(stage: str, index: int, width: float, kernel: int) -> str:
    return f"{stage}:{'first' if index == 0 else 'later'}:w{width:g}:k{kernel}"


def _probe_configs(space) -> list[Any]:
    """The deepest uniform sub-networks at each width, with every stage's smallest and largest kernel: all block configurations."""
    return [u for u in space.uniform() if u.depth[0] == max(space.depth_choices)]


def _time_network(model: Denoiser, subnet: torch.nn.Module, config, batch: int, repeats: int) -> tuple[float, dict[str, float]]:
    """Median seconds of a whole call and of each block (forward hooks) over ``repeats`` calls after one warm-up."""
    device = model.device
    x = torch.randn(batch, *model.data_shape, device=device)
    t_in = torch.full((batch,), 500.0, device=device)
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    samples: dict[str, list[float]] = {}
    starts: dict[str, float] = {}
    handles = []
    for s, stage in enumerate(model.elastic.space.stages):
        for index, block in enumerate(subnet.stages[stage]):
            key = block_key(stage, index, config.width[s], config.kernel[s])
            handles.append(block.register_forward_pre_hook(lambda *_, key=key: starts.__setitem__(key, _now(device))))
            handles.append(block.register_forward_hook(lambda *_, key=key: samples.setdefault(key, []).append(_now(device) - starts[key])))
    totals = []
    with torch.no_grad():
        subnet(x, t_in, labels)
        samples.clear()
        for _ in range(repeats):
            start = _now(device)
            subnet(x, t_in, labels)
            totals.append(_now(device) - start)
    for handle in handles:
        handle.remove()
    return statistics.median(totals), {key: statistics.median(values) for key, values in samples.items()}


def _now(device: str) -> float:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


class LatencyTable:
    """Seconds per sample of a sub-network: the trunk plus a measured entry per block configuration."""

    def __init__(self, entries: dict[str, float], trunk: float, batch: int, device: str, stages: tuple[str, ...]) -> None:
        self.entries, self.trunk, self.batch, self.device, self.stages = entries, trunk, batch, device, stages

    @classmethod
    def measure(cls, model: Denoiser, batch: int = 256, repeats: int = 5) -> LatencyTable:
        """Time every block configuration on the model's device (the supernet's active network is restored)."""
        entries: dict[str, list[float]] = {}
        trunks = []
        for config in _probe_configs(model.elastic.space):
            model.elastic.set_active(config)
            total, blocks = _time_network(model, model.elastic.get_active_subnet(), config, batch, repeats)
            trunks.append(total - sum(blocks.values()))
            for key, seconds in blocks.items():
                entries.setdefault(key, []).append(seconds)
        model.elastic.set_active(None)
        medians = {key: statistics.median(values) / batch for key, values in entries.items()}
        return cls(medians, max(0.0, statistics.median(trunks)) / batch, batch, str(model.device), model.elastic.space.stages)

    def seconds(self, config) -> float:
        """Predicted seconds per sample of one call of sub-network ``config``."""
        blocks = sum(self.entries[block_key(stage, i, config.width[s], config.kernel[s])]
                     for s, stage in enumerate(self.stages) for i in range(config.depth[s]))
        return self.trunk + blocks

    def to_json(self) -> str:
        return json.dumps({"entries": self.entries, "trunk": self.trunk, "batch": self.batch, "device": self.device,
                           "stages": list(self.stages)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        data = json.loads(text)
        return cls(data["entries"], data["trunk"], data["batch"], data["device"], tuple(data["stages"]))


def latency_table(model: Denoiser, batch: int = 256) -> LatencyTable:
    """The model's table on its device, measured once per (weights, device, torch, threads) and cached on disk."""
    device = str(model.device)
    hardware = torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or platform.machine()
    name = f"{model.fingerprint}-{device}-{hardware}-torch{torch.__version__}-threads{torch.get_num_threads()}-b{batch}"
    path = cache_dir() / "latency" / f"{_safe(name)}.json"
    if path.is_file():
        return LatencyTable.from_json(path.read_text())
    table = LatencyTable.measure(model, batch)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, table.to_json())
    return table


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
