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
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from diffsearch.predictors.pretrain import log_targets
from diffsearch.predictors.rank import kendall_tau


@dataclass(frozen=True)
class GatePolicy:
    """Promotion fractions and safeguards of the gate (keys of ``strategy_options``)."""

    proxy_fraction: float = 0.06  # share of offspring sent to the proxy (L1)
    proxy_explore: float = 0.25  # share of the L1 set drawn at random instead of by the predictor
    top_k: int = 4  # expensive evaluations per stage chosen by proxy rank (L2)
    explore: int = 1  # random offspring per stage evaluated expensively (keeps the predictor honest)
    kappa: float = 0.5  # acquisition mu - kappa * sigma (uncertainty bonus)
    tau_threshold: float = 0.3  # kill switch: ungated stage when online tau < this
    tau_window: int = 10  # newest expensive labels used for the online tau
    tau_min_labels: int = 10  # no kill switch with fewer labels (tau on 5 labels has a standard error of ~0.4)
    initial_promote: int = 6  # presets promoted from the proxy-ranked initial pool
    initial_shortlist: int = 12  # stage 0: presets re-ranked by a second, larger proxy (successive halving; 0 = off)
    proxy_samples: int = 256  # samples of the proxy evaluation
    proxy_metric: str | None = None  # default: the model's first metric (small-sample FID / Frechet)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> GatePolicy:
        """The policy from the keys of ``options`` it knows."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in options.items() if key in names})


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


def proxy_values(space, candidates: list[dict[str, Any]], policy: GatePolicy, samples: int | None = None) -> list[float | None]:
    """The cheap proxy of each candidate: the objective on ``samples`` (``proxy_samples``) search-noise samples."""
    from diffsearch.evaluators.evaluate import default_metrics, evaluate
    from diffsearch.evaluators.noise import SEARCH_SEED

    metric = policy.proxy_metric or default_metrics(space.model)[0]
    values = []
    for candidate in candidates:
        try:
            result = evaluate(space.model, space.decode(candidate), samples=samples or policy.proxy_samples, seed=SEARCH_SEED, metrics=[metric])
            value = result.get(metric) if result["status"] == "ok" else None
        except Exception:
            value = None
        values.append(value if value is not None and math.isfinite(value) else None)
    return values
