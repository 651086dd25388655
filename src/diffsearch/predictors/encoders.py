"""Fixed-length candidate features shared by every budget of a space (one predictor, many NFEs).

Per-step decisions are one-hot slots padded to ``MAX_STEPS``; timesteps enter as logSNR (and its
gaps); the NFE and free cost statistics (log MACs per sample, logSNR-gap statistics, mean order,
corrector share) are global features. Encoders register per space name in ``ENCODERS``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from diffsearch.registry import Registry

MAX_STEPS = 24
ENCODERS: Registry[Callable[..., np.ndarray]] = Registry("encoder")
_SCALES = ("none", "bh1", "bh2", "linear")
_CORRECTORS = ("none", "pseudo", "implicit")
_FIRST_STEPS = ("model", "zero_x0", "mean_x0")
_SLOT = 19


def _lambdas(space, times) -> np.ndarray:
    return np.minimum(space.ns.lambda_(np.asarray(times, dtype=np.float64)), 20.0) / 10.0


def _log_macs(space, nfe: int) -> float:
    """log10 MACs per sample at ``nfe`` (0 when the model exposes no torch network), cached on the space."""
    cache = space.__dict__.setdefault("_predictor_log_macs", {})
    if nfe not in cache:
        cache[nfe] = _measure_log_macs(space, nfe)
    return cache[nfe]


def _measure_log_macs(space, nfe: int) -> float:
    try:
        from diffsearch.evaluators.cost import cost_statistics

        return math.log10(max(cost_statistics(space.model, nfe)["macs_per_sample"], 1.0))
    except Exception:
        return 0.0


def free_statistics(space, candidate: dict[str, Any]) -> dict[str, float]:
    """Statistics of a candidate that cost nothing to compute (FBNetV3's "free" targets)."""
    gaps = np.diff(_lambdas(space, candidate["timesteps"])[:-1] if candidate["timesteps"][-1] == 0.0 else _lambdas(space, candidate["timesteps"]))
    steps = candidate.get("steps") or []
    nfe = int(space.budget.value) if space.budget.unit == "nfe" else int(space.cost(candidate)["nfe"])
    return {"nfe": float(nfe), "log_macs": _log_macs(space, nfe), "max_gap": float(gaps.max(initial=0.0)),
            "gap_std": float(gaps.std()) if len(gaps) else 0.0, "lambda_end": float(_lambdas(space, candidate["timesteps"][-1:])[0]),
            "mean_order": float(np.mean([s["order"] for s in steps])) if steps else 1.0,
            "corrector_share": float(np.mean([bool(s.get("corrector")) for s in steps])) if steps else 0.0}


def _step_slot(step: dict[str, Any], lam: float, gap: float) -> list[float]:
    """One step: used flag, logSNR, gap, prediction, order one-hot, start, points, scale one-hot, coefficient, corrector."""
    first = step["derivatives"][0] if step.get("derivatives") else {"points": [], "scale": "none", "coefficient": 0.0}
    corrector = step.get("corrector") or {"kind": "none"}
    order = [float(step["order"] == k) for k in (1, 2, 3, 4)]
    scale = [float(first.get("scale", "none") == s) for s in _SCALES]
    kinds = [float(corrector["kind"] == k) for k in _CORRECTORS]
    return [1.0, lam, gap, float(step["prediction"] == "data"), *order, -step.get("start", -1) / 3, len(first["points"]) / 3,
            *scale, float(first.get("coefficient", 0.0)), *kinds, (corrector.get("order", 0) or 0) / 4]


def _globals(space, candidate: dict[str, Any]) -> list[float]:
    stats = free_statistics(space, candidate)
    first_step = candidate.get("first_step", "model")
    return [stats["nfe"] / 10, stats["log_macs"] / 10, stats["max_gap"], stats["gap_std"], stats["lambda_end"],
            stats["mean_order"] / 4, stats["corrector_share"], *[float(first_step == f) for f in _FIRST_STEPS]]


@ENCODERS.register("solver_schedule")
def encode_solver_schedule(space, candidate: dict[str, Any], max_steps: int = MAX_STEPS) -> np.ndarray:
    """Per-step slots (padded to ``max_steps``) plus budget and free-statistics globals."""
    lambdas = _lambdas(space, candidate["timesteps"])
    slots = np.zeros((max_steps, _SLOT))
    for i, step in enumerate(candidate["steps"][:max_steps]):
        slots[i] = _step_slot(step, lambdas[i + 1], lambdas[i + 1] - lambdas[i])
    return np.concatenate([slots.ravel(), np.asarray(_globals(space, candidate))])


@ENCODERS.register("timesteps")
def encode_timesteps(space, candidate: dict[str, Any], max_steps: int = MAX_STEPS) -> np.ndarray:
    """logSNR of each timestep and its gaps (padded), plus budget and free-statistics globals."""
    lambdas = _lambdas(space, candidate["timesteps"])[: max_steps + 1]
    padded = np.zeros((2, max_steps + 1))
    padded[0, : len(lambdas)] = lambdas
    padded[1, : len(lambdas) - 1] = np.diff(lambdas)
    return np.concatenate([padded.ravel(), np.asarray(_globals(space, candidate))])


def encode(space, candidate: dict[str, Any], max_steps: int = MAX_STEPS) -> np.ndarray:
    """Fixed-length features of ``candidate`` in ``space`` (the space's own ``encode`` plus NFE otherwise)."""
    if space.name in ENCODERS:
        return ENCODERS.get(space.name)(space, candidate, max_steps)
    return np.concatenate([space.encode(candidate), [space.cost(candidate)["nfe"] / 10]])


def encode_many(space, candidates: list[dict[str, Any]], max_steps: int = MAX_STEPS) -> np.ndarray:
    """A (len(candidates), features) matrix."""
    return np.stack([encode(space, c, max_steps) for c in candidates]) if candidates else np.zeros((0, 0))
