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


def two_block_model():
    """Two Linear(8, 8) blocks behind a real BlockRunner: 64 MACs each per sample."""
    from diffsearch.models.blocks import BlockRunner

    first, second, runner = torch.nn.Linear(8, 8), torch.nn.Linear(8, 8), BlockRunner(("first", "second"))

    def fn(x, t, c):
        h = runner.run("first", lambda: first(x), lambda: x)
        return runner.run("second", lambda: second(h), lambda: h)

    model = diffsearch.Denoiser(fn, {"beta_schedule": "linear"}, data_shape=(8,), blocks=runner, modules=(first, second))
    return model, (first, second)


def test_macs_are_measured_per_network_configuration_and_summed_over_a_plan(gmm):
    from diffsearch.evaluators.cost import macs_per_call, plan_cost
    from diffsearch.models.blocks import BlocksConfig
    from diffsearch.solvers.plan import Plan

    model, _ = two_block_model()
    assert macs_per_call(model) == 128
    assert macs_per_call(model, BlocksConfig(modes={"first": "skip"})) == 64
    assert macs_per_call(model, BlocksConfig(modes={"first": "reuse", "second": "reuse"})) == 0
    schedule = diffsearch.load_schedule("preset:ddim", nfe=4, model=gmm)
    network = (BlocksConfig(), BlocksConfig(modes={"second": "skip"}), BlocksConfig(modes={"first": "reuse", "second": "reuse"}), BlocksConfig())
    cost = plan_cost(model, Plan(schedule=schedule, network=network))
    assert cost == {"macs_per_sample": 128 + 64 + 0 + 128, "full_network_macs_per_sample": 512, "macs_ratio": 320 / 512}
    assert plan_cost(model, Plan(schedule=schedule), guidance=2.0)["macs_ratio"] == 1.0
    assert model.nfe == 0 and model.blocks.modes is None and not model.blocks.cache


def test_macs_are_counted_on_the_model_device():
    """A model whose modules live off the CPU ('meta' here) is measured with inputs on its device."""
    from diffsearch.evaluators.cost import macs_per_call
    from diffsearch.models.blocks import BlocksConfig

    model, layers = two_block_model()
    for layer in layers:
        layer.to("meta")
    model.device = "meta"
    assert macs_per_call(model) == 128 and macs_per_call(model, BlocksConfig(modes={"second": "skip"})) == 64


def test_digits_block_macs_follow_the_architecture():
    """Skipping digits' mid block saves exactly the MACs of its two 3x3 convs and embedding projection at 2x2."""
    from diffsearch.evaluators.cost import macs_per_call
    from diffsearch.models.blocks import BlocksConfig

    digits = diffsearch.load_model("digits")
    full, skipped = macs_per_call(digits), macs_per_call(digits, BlocksConfig(modes={"mid": "skip"}))
    assert full - skipped == 2 * (64 * 64 * 9 * 2 * 2) + 128 * 64


def test_seconds_per_sample_are_measured(gmm):
    from diffsearch.evaluators.cost import seconds_per_sample

    nfe = gmm.nfe
    timing = seconds_per_sample(gmm, diffsearch.load_schedule("preset:ddim", nfe=2, model=gmm), samples=16, repeats=2)
    assert timing["min"] <= timing["seconds_per_sample"] <= timing["max"] and timing["min"] > 0 and gmm.nfe == nfe
