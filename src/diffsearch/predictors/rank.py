"""Rank metrics for predictors (lower true value = better candidate), via scipy."""

from __future__ import annotations

import numpy as np
from scipy import stats


def kendall_tau(predicted, true) -> float:
    """Kendall tau-b between predicted scores and true values (0 for constant predictions, nan below 2 points)."""
    if len(true) < 2:
        return float("nan")
    if np.ptp(predicted) == 0:
        return 0.0
    return float(stats.kendalltau(predicted, true).statistic)


def spearman_rho(predicted, true) -> float:
    """Spearman rank correlation between predicted scores and true values."""
    if len(true) < 2:
        return float("nan")
    return float(stats.spearmanr(predicted, true).statistic)


def precision_at_k(predicted, true, k: int) -> float:
    """|top-k by prediction ∩ true top-k| / k (lowest values are the top)."""
    k = min(k, len(true))
    top_predicted = set(np.argsort(predicted, kind="stable")[:k].tolist())
    top_true = set(np.argsort(true, kind="stable")[:k].tolist())
    return len(top_predicted & top_true) / k


def regret(predicted, true, k: int = 1) -> float:
    """True value of the best of the predicted top-k minus the best true value (0 is perfect)."""
    true = np.asarray(true, dtype=float)
    chosen = np.argsort(predicted, kind="stable")[: min(k, len(true))]
    return float(true[chosen].min() - true.min())


def rank_report(predicted, true, k: int = 10) -> dict[str, float]:
    """Every rank metric at once."""
    return {"kendall_tau": kendall_tau(predicted, true), "spearman_rho": spearman_rho(predicted, true),
            f"precision_at_{k}": precision_at_k(predicted, true, k), "regret": regret(predicted, true)}
