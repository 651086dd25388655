"""The gated s3 search: decisions and online tau recorded in the study and shown; kill switch; --predictor."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
import torch

from diffsearch.predictors.gating import GatePolicy, online_tau, split_top_and_random
from diffsearch.search.config import RunConfig
from diffsearch.search.report import gating_rows, top_rows
from diffsearch.search.runner import run_search
from diffsearch.search.strategies import Record

torch.set_num_threads(1)


def _records(predicted, values):
    return [Record(i, {}, v, str(i), {"predicted": p}) for i, (p, v) in enumerate(zip(predicted, values))]


def test_online_tau_uses_the_newest_labels():
    good = _records(range(10), np.exp(np.arange(10.0)))
    bad = _records(range(10), np.exp(-np.arange(10.0)))
    assert online_tau(bad + good, window=10, min_labels=5) == (pytest.approx(1.0), 10)
    assert online_tau(good + bad, window=10, min_labels=5)[0] == pytest.approx(-1.0)
    assert online_tau(good[:3], window=10, min_labels=5) == (None, 3)


def test_split_top_and_random_keeps_a_random_slice():
    top, explorers = split_top_and_random(np.arange(100.0), 8, 0.25, np.random.default_rng(0))
    assert top == list(range(6)) and len(explorers) == 2 and all(i >= 6 for i in explorers)


def test_policy_reads_known_options_only():
    assert GatePolicy.from_options({"top_k": 2, "mutants": 50}).top_k == 2


def test_predictor_reaches_s3_options():
    config = RunConfig.model_validate({"strategy": "s3", "predictor": "xgboost"})
    assert config.strategy_options["predictor"] == "xgboost" and config.strategy_options["gating"] is True
    assert "predictor" not in RunConfig.model_validate({"strategy": "evolution"}).strategy_options


def test_gated_search_records_decisions_and_tau(tmp_path):
    storage = f"sqlite:///{tmp_path}/s.db"
    run_search({"model": "gmm", "budget": "4nfe", "strategy": "s3", "predictor": "gp", "evals": 18, "search_samples": 200,
                "final_samples": 400, "final_top": 2, "study": "g", "storage": storage, "out": str(tmp_path / "b.json"),
                "progress": False, "strategy_options": {"mutants": 60, "proxy_samples": 64, "tau_threshold": 2.0, "initial_promote": 4}})
    study = optuna.load_study(study_name="g", storage=storage)
    gates = [study.user_attrs[k] for k in sorted(study.user_attrs) if k.startswith("s3:gate:")]
    assert gates[0]["mode"] == "initial" and gates[0]["proxied"] == 40
    modes = [g["mode"] for g in sorted(gates, key=lambda g: g["stage"])]
    assert "ungated" in modes and "gated" in modes  # tau_threshold 2 forces the kill switch, then gating resumes
    assert all(g.get("online_tau") is None or -1 <= g["online_tau"] <= 1 for g in gates)
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert len(complete) == 18 and all(t.user_attrs["tags"].get("gate") for t in complete)
    rows = gating_rows(study)
    assert rows[0]["gate"] == "initial" and {"online_tau", "proxied", "promoted"} <= set(rows[-1])
    assert all("gate" in row for row in top_rows(study, 5))


def test_stage_zero_halves_the_presets_on_a_larger_proxy():
    """The promoted presets are the best by the 2x-sample proxy among the shortlist of the best by the 1x proxy."""
    from diffsearch.budget import parse_budget
    from diffsearch.models.gmm import build_gmm
    from diffsearch.predictors.gating import proxy_values
    from diffsearch.spaces.base import SPACES
    from diffsearch.search.strategies import S3Strategy, StudyState

    space = SPACES.get("solver_schedule")(build_gmm(), parse_budget("4nfe"))
    strategy = S3Strategy(space, seed=0, predictor="xgboost", proxy_samples=64, initial_shortlist=8, initial_promote=3)
    attrs: dict = {}
    strategy.propose([], None, np.random.default_rng(0), StudyState(attrs.get, attrs.__setitem__))
    presets = [c for _, c in strategy._initial]
    first = proxy_values(space, presets, strategy.policy)
    shortlist = sorted(range(len(presets)), key=lambda i: first[i])[:8]
    second = proxy_values(space, [presets[i] for i in shortlist], strategy.policy, samples=128)
    expected = [presets[shortlist[j]] for j in np.argsort(second, kind="stable")[:3]]
    assert attrs["s3:queue:0"][:3] == expected and len(attrs["s3:queue:0"]) == 4
    assert attrs["s3:gate:0"]["refined"] == 8 and len(attrs["s3:proxy:0"]) == len(presets)
