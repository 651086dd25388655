"""Every registered predictor passes the shared contract; rank metrics; encoders across budgets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffsearch.budget import parse_budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.loading import load_model
from diffsearch.predictors import PREDICTORS, make_predictor
from diffsearch.predictors.encoders import encode, free_statistics
from diffsearch.predictors.rank import kendall_tau, precision_at_k, rank_report, regret, spearman_rho
from diffsearch.spaces.base import SPACES
from diffsearch.testing.predictors import PredictorContract

torch.set_num_threads(1)


class TestEveryPredictor(PredictorContract):
    @pytest.fixture(params=PREDICTORS.names())
    def predictor_name(self, request):
        return request.param


def test_unknown_predictor_lists_the_valid_ones():
    with pytest.raises(DiffsearchError, match="ensemble, gp, mlp, ofa, xgboost"):
        make_predictor("forest")


def test_ensemble_spread_is_zero_for_identical_members():
    x = np.random.default_rng(0).normal(size=(30, 3))
    ensemble = make_predictor("ensemble", members=("gp", "gp")).fit(x, x[:, 0])
    np.testing.assert_allclose(ensemble.predict_std(x), 0.0, atol=1e-12)


def test_rank_metrics_on_known_orders():
    true = np.arange(10.0)
    assert kendall_tau(true, true) == pytest.approx(1.0) and spearman_rho(-true, true) == pytest.approx(-1.0)
    assert precision_at_k(true, true, 3) == 1.0 and precision_at_k(-true, true, 3) == 0.0
    assert regret(true, true) == 0.0 and regret(-true, true) == 9.0
    assert kendall_tau(np.zeros(10), true) == 0.0
    assert set(rank_report(true, true, k=5)) == {"kendall_tau", "spearman_rho", "precision_at_5", "regret"}


@pytest.mark.parametrize("space_name", ["solver_schedule", "timesteps"])
def test_one_feature_length_for_every_budget(space_name):
    model, lengths = load_model("gmm"), set()
    for nfe in (3, 5, 8, 10):
        space = SPACES.get(space_name)(model, parse_budget(f"{nfe}nfe"), **({"solver": "dpmpp_2m"} if space_name == "timesteps" else {}))
        rng = np.random.default_rng(nfe)
        for candidate in [space.sample(rng) for _ in range(3)] + [c for _, c in space.initial()[:3]]:
            vector = encode(space, candidate)
            assert np.isfinite(vector).all()
            lengths.add(vector.shape)
        assert free_statistics(space, candidate)["nfe"] == nfe
    assert len(lengths) == 1
