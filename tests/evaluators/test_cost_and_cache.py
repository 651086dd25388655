"""Free cost statistics (measured MACs against a hand count) and the persistent evaluation cache."""

from __future__ import annotations

import torch

import diffsearch
from diffsearch.evaluators.cache import EvaluationCache, cache_for
from diffsearch.evaluators.cost import cost_statistics
from diffsearch.evaluators.evaluate import evaluate


def linear_model():
    layer = torch.nn.Linear(8, 8)
    model = diffsearch.Denoiser(lambda x, t, c: layer(x), {"beta_schedule": "linear"}, data_shape=(8,), fingerprint="linear-test")
    model.module = layer
    return model


def test_macs_are_measured_per_sample_and_scale_with_nfe_and_guidance():
    model = linear_model()
    stats = cost_statistics(model, nfe=5)
    assert stats["macs_per_sample"] == 5 * 8 * 8  # a Linear(8, 8) call is 64 multiply-accumulates
    assert stats["params"] == 72 and stats["bytes"] == 72 * 4
    assert cost_statistics(model, nfe=5, guidance=2.0)["macs_per_sample"] == 2 * 5 * 64
    assert model.nfe == 0  # measuring costs no NFE


def test_evaluation_cache_skips_repeat_evaluations(tmp_path, gmm):
    cache = EvaluationCache(tmp_path / "cache.sqlite")
    schedule = diffsearch.load_schedule("preset:ddim", nfe=3, model=gmm)
    first = evaluate(gmm, schedule, samples=64, metrics=["frechet_exact"], cache=cache)
    calls = gmm.nfe
    second = evaluate(gmm, schedule, samples=64, metrics=["frechet_exact"], cache=cache)
    assert gmm.nfe == calls and second["cached"] and second["frechet_exact"] == first["frechet_exact"]
    other = evaluate(gmm, schedule, samples=65, metrics=["frechet_exact"], cache=cache)
    assert "cached" not in other and gmm.nfe > calls


def test_only_models_with_a_content_fingerprint_use_the_cache(gmm):
    anonymous = diffsearch.Denoiser(gmm.fn, gmm.noise_schedule, data_shape=(8,))
    assert cache_for(anonymous) is None and cache_for(gmm) is not None and cache_for(gmm, enabled=False) is None
