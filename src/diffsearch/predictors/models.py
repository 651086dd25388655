"""The built-in predictor families: ``mlp`` (torch), ``xgboost`` (ranker), ``gp`` (scikit-learn), ``ensemble``."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffsearch.predictors.base import Predictor


def _pair_hinge(scores, targets, groups, margin: float):
    """Pairwise hinge ranking loss over same-group pairs whose targets differ by more than 0.05."""
    import torch

    diff_y = targets[:, None] - targets[None, :]
    mask = (groups[:, None] == groups[None, :]) & (diff_y.abs() > 0.05)
    if not mask.any():
        return scores.sum() * 0.0
    diff_s = scores[:, None] - scores[None, :]
    return torch.relu(margin - torch.sign(diff_y) * diff_s)[mask].mean()


class MLPPredictor(Predictor):
    """Two-layer MLP (torch) with Huber regression plus a pairwise hinge ranking loss; warm-starts from pretraining."""

    def __init__(self, seed: int = 0, hidden: int = 64, epochs: int = 150, rank_weight: float = 1.0, **options: Any) -> None:
        super().__init__(seed, hidden=hidden, epochs=epochs, rank_weight=rank_weight, **options)
        self._net = None

    def pretrain(self, features, targets, groups=None) -> MLPPredictor:
        """Train the whole network on proxy labels; ``fit`` then fine-tunes it (FBNetV3)."""
        self.fit(features, targets, groups)
        self._pretrained_stats = (self._x_mean, self._x_std)
        return self

    def fit(self, features, targets, groups=None) -> MLPPredictor:
        """Fit (or fine-tune, keeping the pretraining feature scaling) on expensive labels."""
        stats = getattr(self, "_pretrained_stats", None)
        super().fit(features, targets, groups)
        if stats is not None:
            self._x_mean, self._x_std = stats
        return self

    def _build(self, width: int):
        import torch

        torch.manual_seed(self.seed)
        hidden = self.options["hidden"]
        return torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, hidden),
                                   torch.nn.SiLU(), torch.nn.Linear(hidden, 1)).double()

    def _fit(self, x, y, groups) -> None:
        import torch

        fine_tune = self._net is not None
        if not fine_tune:
            self._net = self._build(x.shape[1])
        if fine_tune and hasattr(self, "_pretrained_stats"):
            x = (x * self._x_std + self._x_mean - self._pretrained_stats[0]) / self._pretrained_stats[1]
        xs, ys, gs = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(np.asarray(groups, dtype=np.float64))
        optimizer = torch.optim.Adam(self._net.parameters(), lr=3e-4 if fine_tune else 1e-3, weight_decay=1e-4)
        for _ in range(self.options["epochs"] // (2 if fine_tune else 1)):
            optimizer.zero_grad()
            scores = self._net(xs).squeeze(1)
            loss = torch.nn.functional.huber_loss(scores, ys) + self.options["rank_weight"] * _pair_hinge(scores, ys, gs, 0.1)
            loss.backward()
            optimizer.step()

    def _predict(self, x) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._net(torch.from_numpy(x)).squeeze(1).numpy()


class XGBoostPredictor(Predictor):
    """Gradient-boosted trees with xgboost's pairwise ranking objective (query groups = NFE), mapped to target scale."""

    def _fit(self, x, y, groups) -> None:
        import xgboost

        order = np.argsort(groups, kind="stable")
        self._model = xgboost.XGBRanker(objective="rank:pairwise", n_estimators=int(self.options.get("trees", 150)), max_depth=3,
                                        learning_rate=0.1, subsample=0.8, colsample_bytree=0.5, random_state=self.seed,
                                        n_jobs=1, tree_method="hist", lambdarank_pair_method="mean")
        self._model.fit(x[order], -y[order], qid=np.asarray(groups)[order].astype(int))
        scores = self._model.predict(x)
        self._slope, self._intercept = np.polyfit(-scores, y, 1) if np.std(scores) > 0 else (0.0, 0.0)

    def _predict(self, x) -> np.ndarray:
        return -self._model.predict(x) * self._slope + self._intercept if self._slope else -self._model.predict(x)


class GPPredictor(Predictor):
    """Gaussian-process regression (Matérn-5/2 + white noise, scikit-learn) with predictive uncertainty."""

    def _fit(self, x, y, groups) -> None:
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        import warnings

        kernel = (ConstantKernel(1.0) * Matern(length_scale=np.sqrt(x.shape[1]), nu=2.5, length_scale_bounds=(1e-1, 1e4))
                  + WhiteKernel(0.1, noise_level_bounds=(1e-6, 1e1)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._model = GaussianProcessRegressor(kernel=kernel, normalize_y=True, random_state=self.seed).fit(x, y)

    def _predict(self, x) -> np.ndarray:
        return self._model.predict(x)

    def _predict_std(self, x) -> np.ndarray:
        return self._model.predict(x, return_std=True)[1]


class EnsemblePredictor(Predictor):
    """Mean (prediction) and spread (uncertainty) of several registered predictors."""

    def __init__(self, seed: int = 0, members: tuple[str, ...] = ("mlp", "xgboost", "gp"), **options: Any) -> None:
        from diffsearch.predictors import make_predictor

        super().__init__(seed, members=tuple(members), **options)
        self._members = [make_predictor(name, seed=seed + i) for i, name in enumerate(members)]

    def pretrain(self, features, targets, groups=None) -> EnsemblePredictor:
        """Pretrain every member its own way."""
        for member in self._members:
            member.pretrain(features, targets, groups)
        return self

    def fit(self, features, targets, groups=None) -> EnsemblePredictor:
        """Fit every member on the raw (unstandardized) data."""
        for member in self._members:
            member.fit(features, targets, groups)
        return self

    def _stack(self, features) -> np.ndarray:
        return np.stack([member.predict(features) for member in self._members])

    def predict(self, features) -> np.ndarray:
        """Mean of the members' predictions."""
        return self._stack(features).mean(0)

    def predict_std(self, features) -> np.ndarray:
        """Spread (standard deviation) of the members' predictions."""
        return self._stack(features).std(0)

    def _fit(self, x, y, groups) -> None:  # members do the work
        raise NotImplementedError

    def _predict(self, x) -> np.ndarray:
        raise NotImplementedError
