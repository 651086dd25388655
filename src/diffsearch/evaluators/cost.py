"""Free statistics of a candidate's cost: NFE, MACs per sample (measured), parameters, bytes, seconds.

MACs are counted with torch's ``FlopCounterMode`` on one sample, on the model's own device, once
per (model, network configuration): a configuration that skips or reuses blocks costs what its
executed operations cost. ``plan_cost`` sums them over a plan's evaluations.
"""

from __future__ import annotations

import time
import weakref
from typing import TYPE_CHECKING, Any

import torch

from diffsearch.models.blocks import BlocksConfig
from diffsearch.models.denoiser import Denoiser

if TYPE_CHECKING:
    from diffsearch.solvers.plan import Plan

_MACS: weakref.WeakKeyDictionary[Denoiser, dict[str, float]] = weakref.WeakKeyDictionary()


def network_module(model: Denoiser) -> torch.nn.Module | None:
    """The torch module behind a Denoiser, when it exposes one (``unet`` or ``module``)."""
    for name in ("unet", "module"):
        module = getattr(model, name, None)
        if isinstance(module, torch.nn.Module):
            return module
    return None


def _config_key(config: Any) -> str:
    return "full" if config is None else config.model_dump_json()


def macs_per_call(model: Denoiser, config: Any = None) -> float:
    """Multiply-accumulates of one network call on one sample in ``config`` (None: the full network)."""
    per_model = _MACS.setdefault(model, {})
    key = _config_key(config)
    if key not in per_model:
        per_model[key] = _count_macs(model, config)
    return per_model[key]


def _count_macs(model: Denoiser, config: Any) -> float:
    """FlopCounterMode over one call; a configuration with reuse first fills the cache, and every configuration
    runs once uncounted first (what a network builds on first use is not a per-call cost)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros((1, *model.data_shape), device=model.device)
    cond = torch.zeros(1, dtype=torch.long, device=model.device) if model.num_classes else None
    t = float(model.noise_schedule.t_max) / 2
    counter = FlopCounterMode(display=False)
    nfe = model.nfe
    try:
        with torch.no_grad():
            model.begin_sample()
            if config is not None:
                model.network(x, t, cond, config=BlocksConfig())
                model.network(x, t, cond, config=config)  # uncounted first use: a supernet materialises the sub-network here
            with counter:
                model.network(x, t, cond, config=config)
    finally:
        model.begin_sample()
        model.nfe = nfe
    return counter.get_total_flops() / 2.0


def cost_statistics(model: Denoiser, nfe: int, guidance: float | None = None) -> dict[str, Any]:
    """MACs per sample for ``nfe`` full-network evaluations (guidance doubles the batch), parameters and bytes."""
    module = network_module(model)
    macs = macs_per_call(model) * nfe * (2 if guidance is not None else 1)
    result: dict[str, Any] = {"macs_per_sample": macs}
    if module is not None:
        tensors = list(module.parameters()) + list(module.buffers())
        result["params"] = sum(p.numel() for p in module.parameters())
        result["bytes"] = sum(t.numel() * t.element_size() for t in tensors)
    return result


def plan_cost(model: Denoiser, plan: Plan, guidance: float | None = None, reference_nfe: int | None = None) -> dict[str, float]:
    """MACs per sample of a whole sampling run, the full network's on the reference schedule (``reference_nfe``
    evaluations; None: the plan's own schedule), and their ratio."""
    factor = 2 if guidance is not None else 1
    macs = factor * sum(macs_per_call(model, config) for config in plan.evaluation_configs())
    full = factor * macs_per_call(model) * (plan.nfe if reference_nfe is None else reference_nfe)
    return {"macs_per_sample": macs, "full_network_macs_per_sample": full, "macs_ratio": macs / full if full else 1.0}


def evaluation_cost(model: Denoiser, plan: Plan, guidance: float | None, seconds: float) -> dict[str, float]:
    """The cost fields of an evaluation record: ``macs`` (one sample's whole run), ``macs_ratio`` (over the full
    network on the same schedule) and ``seconds`` (measured seconds per sample); no MACs without a data shape."""
    if model.data_shape is None:
        return {"seconds": seconds}
    try:
        cost = plan_cost(model, plan, guidance)
    except Exception:  # auxiliary: a network that cannot run one bare sample (text conditioning) reports no MACs
        return {"seconds": seconds}
    return {"macs": cost["macs_per_sample"], "macs_ratio": cost["macs_ratio"], "seconds": seconds}


def seconds_per_sample(
    model: Denoiser, plan: Any, samples: int = 256, repeats: int = 3, cond: Any = None, guidance: float | None = None, seed: int = 0
) -> dict[str, float]:
    """Measured seconds per sample of ``sample(model, plan, ...)``: wall clock (median, min, max of ``repeats``
    runs) and this process's CPU time (median; less sensitive to other load on a shared CPU machine)."""
    import statistics

    from diffsearch.solvers.sampler import sample

    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn((samples, *model.data_shape), generator=generator).to(model.device)
    cond = cond.to(model.device) if isinstance(cond, torch.Tensor) else cond
    nfe, times, cpu_times = model.nfe, [], []
    with torch.no_grad():
        sample(model, plan, x_T[: min(8, samples)], None if cond is None else cond[: min(8, samples)], guidance)
        for _ in range(repeats):
            _synchronize(model.device)
            start, cpu_start = time.perf_counter(), time.process_time()
            sample(model, plan, x_T, cond, guidance)
            _synchronize(model.device)
            times.append((time.perf_counter() - start) / samples)
            cpu_times.append((time.process_time() - cpu_start) / samples)
    model.nfe = nfe
    return {"seconds_per_sample": statistics.median(times), "min": min(times), "max": max(times),
            "cpu_seconds_per_sample": statistics.median(cpu_times), "repeats": repeats, "samples": samples}


def _synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


class StageMacs:
    """MACs of any sub-network of a supernet from its stages: the smallest network's plus each stage's difference.

    Stages meet at fixed channel counts, so a stage's MACs depend on its own depth, width and kernel only and
    the total is additive (checked against ``macs_per_call`` in the tests). One measured call per stage choice.
    """

    def __init__(self, model: Denoiser) -> None:
        if model.elastic is None:
            raise ValueError(f"model {model.name!r} is not a supernet")
        space = model.elastic.space
        self.smallest = space.smallest()
        self.base = macs_per_call(model, self.smallest)
        self.largest = macs_per_call(model, space.largest())
        self.delta: dict[tuple[int, int, float, int], float] = {}
        for stage in range(len(space.stages)):
            for depth in space.choices("depth", stage):
                for width in space.choices("width", stage):
                    for kernel in space.choices("kernel", stage):
                        config = self.smallest.replace(stage, "depth", depth).replace(stage, "width", width).replace(stage, "kernel", kernel)
                        self.delta[(stage, depth, width, kernel)] = macs_per_call(model, config) - self.base

    def __call__(self, config: Any) -> float:
        """MACs of one call of sub-network ``config`` on one sample."""
        return self.base + sum(self.delta[(s, config.depth[s], config.width[s], config.kernel[s])] for s in range(len(config.depth)))


_STAGE_MACS: weakref.WeakKeyDictionary[Denoiser, StageMacs] = weakref.WeakKeyDictionary()


def stage_macs(model: Denoiser) -> StageMacs:
    """The model's ``StageMacs`` (measured once per model)."""
    if model not in _STAGE_MACS:
        _STAGE_MACS[model] = StageMacs(model)
    return _STAGE_MACS[model]
