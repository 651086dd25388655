"""The shared contract test every predictor passes: subclass and provide a ``predictor_name`` fixture."""

from __future__ import annotations

import numpy as np
import pytest

from diffsearch.predictors import make_predictor
from diffsearch.predictors.rank import kendall_tau


def toy_problem(rows: int = 60, width: int = 8, seed: int = 0):
    """Features, log targets (a smooth function of two features) and groups (two "NFEs")."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, width))
    y = x[:, 0] + 0.5 * np.tanh(x[:, 1]) + 0.05 * rng.normal(size=rows)
    return x, y, np.where(np.arange(rows) % 2 == 0, 5, 10)


class PredictorContract:
    """Subclass in a test module and define a ``predictor_name`` fixture naming a registered predictor."""

    def test_fit_predict_ranks_held_out_rows_on_the_target_scale(self, predictor_name):
        x, y, groups = toy_problem()
        predictor = make_predictor(predictor_name, seed=0).fit(x[:40], 100.0 + y[:40], groups[:40])
        predicted = predictor.predict(x[40:])
        assert predicted.shape == (20,) and np.isfinite(predicted).all()
        assert kendall_tau(predicted, y[40:]) > 0.4 and abs(np.median(predicted) - 100.0) < 3.0
        std = predictor.predict_std(x[40:])
        assert std is None or (std.shape == (20,) and (std >= 0).all())

    def test_same_seed_same_predictions(self, predictor_name):
        x, y, groups = toy_problem(rows=30)
        first = make_predictor(predictor_name, seed=3).fit(x[:20], y[:20], groups[:20]).predict(x[20:])
        second = make_predictor(predictor_name, seed=3).fit(x[:20], y[:20], groups[:20]).predict(x[20:])
        np.testing.assert_array_equal(first, second)

    def test_pretraining_on_proxies_then_fine_tuning(self, predictor_name):
        x, y, groups = toy_problem(rows=100)
        proxy = y + 0.2 * np.random.default_rng(1).normal(size=len(y))
        predictor = make_predictor(predictor_name, seed=0).pretrain(x[:80], proxy[:80], groups[:80]).fit(x[:8], y[:8], groups[:8])
        assert kendall_tau(predictor.predict(x[80:]), y[80:]) > 0.4


@pytest.fixture
def predictor_name():  # pragma: no cover - subclasses override
    raise NotImplementedError
