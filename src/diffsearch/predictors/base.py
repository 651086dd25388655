"""The predictor contract: ``fit``/``predict`` on (features, log metric) with lower = better.

Subclasses implement ``_fit`` and ``_predict`` (and optionally ``_predict_std``) on standardized
features and targets. ``pretrain`` (FBNetV3) fits a copy on proxy labels; by default ``fit`` then
calibrates that prior to the expensive labels (least-squares line) and learns only the residual,
so that with few labels the prediction falls back to the calibrated proxy model. Families that
can warm-start (the MLP) override it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Predictor(ABC):
    """Predicts a candidate's (log) metric from its encoded features; deterministic given ``seed``."""

    def __init__(self, seed: int = 0, **options: Any) -> None:
        self.seed, self.options = seed, options
        self._prior: Predictor | None = None

    def pretrain(self, features: np.ndarray, targets: np.ndarray, groups: np.ndarray | None = None) -> Predictor:
        """Learn from many cheap (proxy) labels before ``fit`` sees the few expensive ones."""
        self._prior = type(self)(seed=self.seed, **self.options).fit(features, targets, groups)
        return self

    def fit(self, features: np.ndarray, targets: np.ndarray, groups: np.ndarray | None = None) -> Predictor:
        """Fit on expensive labels (``groups``: the NFE of each row, for per-budget ranking losses)."""
        features = np.asarray(features, dtype=np.float64)
        targets = np.asarray(targets, dtype=np.float64) - self._calibrated_prior(features, targets)
        self._x_mean, self._x_std = features.mean(0), features.std(0) + 1e-8
        self._y_mean, self._y_std = targets.mean(), targets.std() + 1e-8
        groups = np.zeros(len(targets)) if groups is None else np.asarray(groups)
        self._fit(self._x(features), (targets - self._y_mean) / self._y_std, groups)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted targets (lower = better)."""
        features = np.asarray(features, dtype=np.float64)
        return self._predict(self._x(features)) * self._y_std + self._y_mean + self._calibrated_prior(features)

    def predict_std(self, features: np.ndarray) -> np.ndarray | None:
        """Predictive standard deviation in target units, or None for point predictors."""
        std = self._predict_std(self._x(np.asarray(features, dtype=np.float64)))
        return None if std is None else std * self._y_std

    def _calibrated_prior(self, features: np.ndarray, targets: np.ndarray | None = None) -> np.ndarray:
        """The pretrained prediction mapped to the target scale (fitted when ``targets`` is given); 0 without pretraining."""
        if self._prior is None:
            return np.zeros(len(features))
        prior = self._prior.predict(features)
        if targets is not None:
            self._line = np.polyfit(prior, targets, 1) if len(targets) > 2 and np.ptp(prior) > 0 else np.array([1.0, 0.0])
        return np.polyval(self._line, prior)

    def _x(self, features: np.ndarray) -> np.ndarray:
        return (features - self._x_mean) / self._x_std

    @abstractmethod
    def _fit(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> None:
        """Fit on standardized features and targets."""

    @abstractmethod
    def _predict(self, x: np.ndarray) -> np.ndarray:
        """Standardized predictions."""

    def _predict_std(self, x: np.ndarray) -> np.ndarray | None:
        return None
