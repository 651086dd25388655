"""Quantisation statistics: calibration sees only its own noise, Hutchinson's trace estimate matches
torch's exact Hessian, the ILP allocation is the brute-force optimum under the budget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import diffsearch
from diffsearch.evaluators import noise, quantization
from diffsearch.evaluators.teacher import FLOOR_SEED, PROBE_SEED, TEACHER_SEED
from diffsearch.models.bits import BITWIDTHS, QuantizableLayer, QuantizationLayout
from diffsearch.models.quantize import LayerQuantizer
from diffsearch.solvers.anchors import GITS_WARMUP_SEED, LD3_SEED


def tiny_model() -> diffsearch.Denoiser:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3)).double()
    quantizer = LayerQuantizer(net)
    return diffsearch.Denoiser(lambda x, t, c: quantizer(x), {"beta_schedule": "linear"}, data_shape=(3,), quantizer=quantizer)


def test_calibration_seed_is_disjoint_from_every_other_noise_set():
    others = {noise.SEARCH_SEED, *noise.heldout_seeds(noise.MAX_HELDOUT_SETS), TEACHER_SEED, PROBE_SEED, GITS_WARMUP_SEED, LD3_SEED,
              *range(FLOOR_SEED, FLOOR_SEED + 1000)}
    assert noise.CALIBRATION_SEED not in others


def test_calibration_never_sees_search_or_held_out_noise(monkeypatch, tmp_path):
    monkeypatch.setenv("DIFFSEARCH_CACHE", str(tmp_path))
    seeds = []

    def recording_noise_set(model, n, seed=noise.HELDOUT_SEED):
        seeds.append(seed)
        return noise.noise_set(model, n, seed)

    monkeypatch.setattr(quantization, "noise_set", recording_noise_set)
    digits = diffsearch.load_model("digits")
    schedule = diffsearch.load_schedule("preset:ddim", nfe=3, model=digits)
    statistics = quantization.layer_statistics(digits, schedule, samples=4, sensitivity_samples=2, probes=2)
    assert seeds and set(seeds) == {noise.CALIBRATION_SEED}
    assert set(statistics.ranges) == set(digits.quantizer.layout.names) - {"conv_in"}  # fed x_t itself: float input
    for name, by_bits in statistics.sqnr.items():
        values = [by_bits[b] for b in BITWIDTHS]
        assert values == sorted(values), name  # more bits, less output noise
    assert len(list(tmp_path.glob("quantization/digits-*.json"))) == 1


def test_hutchinson_trace_matches_the_exact_hessian():
    model = tiny_model()
    x0 = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    times = [0.3, 0.7]
    estimate = quantization.hessian_traces(model, x0, None, times, probes=3000)
    generator = torch.Generator().manual_seed(noise.CALIBRATION_SEED)
    noises = [torch.randn(x0.shape, generator=generator) for _ in times]
    module = model.quantizer.module
    for name in ("0", "2"):
        weight = module.get_submodule(name).weight.detach()

        def loss(w, name=name):
            with model.quantizer.override({name: w}):
                return sum(quantization._denoising_loss(model, x0, n.double(), t, None) for n, t in zip(noises, times)) / len(times)

        exact = torch.autograd.functional.hessian(loss, weight).reshape(weight.numel(), weight.numel()).trace()
        assert estimate[name] == pytest.approx(float(exact), rel=0.1)


def test_ilp_allocation_is_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    layers = tuple(QuantizableLayer(name=f"l{i}", kind="linear", params=int(p), out_channels=2) for i, p in enumerate([10, 40, 25, 70]))
    layout = QuantizationLayout(layers=layers, other_params=5)
    omega = {layer.name: dict(zip(BITWIDTHS, sorted(rng.random(5) * 10 ** rng.uniform(-2, 2), reverse=True))) for layer in layers}
    for kind, limit in (("bits", 4.3), ("bytes", 130)):
        budget = {"max_mean_bits": limit} if kind == "bits" else {"max_bytes": limit}
        chosen = quantization.ilp_allocation(layout, omega, **budget)
        best = min((sum(omega[n][b] for n, b in zip(layout.names, combo)), combo) for combo in itertools.product(BITWIDTHS, repeat=4)
                   if (layout.mean_bits(dict(zip(layout.names, combo))) <= limit if kind == "bits"
                       else layout.weight_bytes(dict(zip(layout.names, combo))) <= limit))
        assert tuple(chosen[n] for n in layout.names) == best[1]
