"""The multi-fidelity gate (nas_spec.md 4.6): free statistics -> predictor -> cheap proxy -> expensive metric.

Per stage, the predictor (pretrained on every proxy label so far, fine-tuned on the expensive
labels) ranks the offspring by ``mu - kappa * sigma``; the top ``proxy_fraction`` plus a random
slice go to the proxy (the objective on few samples); the best ``promote`` by proxy plus
``explore`` random offspring earn an expensive evaluation. When the online Kendall tau between
the predictor's scores and the newest expensive labels falls below ``tau_threshold``, the next
stage is ungated (random offspring evaluated directly) and gating resumes after it.

Stage 0 (the presets) is successive halving on the proxy: every preset at ``proxy_samples``, the
best ``initial_shortlist`` again at twice as many, and the best ``initial_promote`` of those (plus
one random preset) earn an expensive evaluation.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from diffsearch.predictors.pretrain import log_targets
from diffsearch.predictors.rank import kendall_tau


class GatePolicy(BaseModel):
    """Promotion fractions and safeguards of the gate (keys of ``strategy_options``), each bounded."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    proxy_fraction: float = Field(0.06, ge=0, le=1)  # share of offspring sent to the proxy (L1)
    proxy_explore: float = Field(0.25, ge=0, le=1)  # share of the L1 set drawn at random instead of by the predictor
    top_k: int = Field(4, ge=1, le=1000)  # expensive evaluations per stage chosen by proxy rank (L2)
    explore: int = Field(1, ge=0, le=1000)  # random offspring per stage evaluated expensively (keeps the predictor honest)
    kappa: float = Field(0.5, ge=0, le=100)  # acquisition mu - kappa * sigma (uncertainty bonus)
    tau_threshold: float = Field(0.3, ge=-1, le=2)  # kill switch: ungated stage when online tau < this (> 1: always)
    tau_window: int = Field(10, ge=2, le=10_000)  # newest expensive labels used for the online tau
    tau_min_labels: int = Field(10, ge=2, le=10_000)  # no kill switch with fewer labels (tau on 5 labels has a standard error of ~0.4)
    initial_promote: int = Field(6, ge=1, le=1000)  # presets promoted from the proxy-ranked initial pool
    initial_shortlist: int = Field(12, ge=0, le=1000)  # stage 0: presets re-ranked by a second, larger proxy (successive halving; 0 = off)
    proxy_samples: int = Field(256, ge=2, le=1_000_000)  # samples of the proxy evaluation
    proxy_metric: str | None = Field(None, max_length=64)  # default: the model's first metric (small-sample FID / Frechet)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> GatePolicy:
        """The policy from the keys of ``options`` it knows."""
        return cls(**{key: value for key, value in options.items() if key in cls.model_fields})


def online_tau(history, window: int, min_labels: int) -> tuple[float | None, int]:
    """Kendall tau of predicted vs log true value on the newest ``window`` labelled predictions."""
    labelled = [r for r in history if r.value is not None and r.tags.get("predicted") is not None][-window:]
    if len(labelled) < min_labels:
        return None, len(labelled)
    return kendall_tau([r.tags["predicted"] for r in labelled], log_targets([r.value for r in labelled])), len(labelled)


def split_top_and_random(scores: np.ndarray, count: int, random_share: float, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Indices of the best ``count`` scores, a ``random_share`` of them replaced by random others."""
    count = min(count, len(scores))
    n_random = min(int(math.ceil(random_share * count)), max(len(scores) - (count - int(math.ceil(random_share * count))), 0))
    order = np.argsort(scores, kind="stable")
    top = [int(i) for i in order[: count - n_random]]
    rest = [int(i) for i in order[count - n_random :]]
    explorers = [rest[int(i)] for i in rng.choice(len(rest), size=min(n_random, len(rest)), replace=False)] if rest else []
    return top, explorers


def order_by_value(values: list[float | None], indices) -> list[int]:
    """``indices`` ordered by their ``values`` (lowest first, ties by index), missing values last."""
    return [int(i) for _, i in sorted((v if v is not None else math.inf, i) for v, i in zip(values, indices))]


def proxy_values(space, candidates: list[dict[str, Any]], policy: GatePolicy, samples: int | None = None,
                 run_batch: Callable[[list[dict[str, Any]], int, str], list[dict[str, Any]]] | None = None) -> list[float | None]:
    """The cheap proxy of each candidate: the objective on ``samples`` (``proxy_samples``) search-noise samples.

    ``run_batch(candidates, samples, metric)`` returns result dicts (the search's executor, so a crashing
    or hanging candidate is handled where every evaluation is); without it they are evaluated here."""
    from diffsearch.evaluators.evaluate import default_metrics

    metric = policy.proxy_metric or default_metrics(space.model)[0]
    results = (run_batch or _evaluate_here(space))(candidates, samples or policy.proxy_samples, metric)
    values = [result.get(metric) if result.get("status") == "ok" else None for result in results]
    return [value if isinstance(value, (int, float)) and math.isfinite(value) else None for value in values]


def _evaluate_here(space) -> Callable[[list[dict[str, Any]], int, str], list[dict[str, Any]]]:
    """Evaluate proxies in this process (outside a search: tests, benchmarks)."""
    from diffsearch.evaluators.evaluate import evaluate
    from diffsearch.evaluators.noise import SEARCH_SEED

    def run_batch(candidates, samples, metric):
        results = []
        for candidate in candidates:
            try:
                results.append(evaluate(space.model, space.plan(candidate), samples=samples, seed=SEARCH_SEED, metrics=[metric]))
            except Exception as error:
                results.append({"status": "failed", "error": f"{type(error).__name__}: {error}"})
        return results

    return run_batch
