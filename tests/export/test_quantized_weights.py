"""Packed weights: the exported bytes equal the budget's accounting, and a fresh network loaded from
them samples exactly as the fake-quantised plan."""

from __future__ import annotations

import torch

import diffsearch
from diffsearch.budget import parse_budget
from diffsearch.export.plan import load_plan, save_plan
from diffsearch.export.quantized import install_quantized_weights, write_quantized_weights
from diffsearch.spaces import SPACES

TINY_STATISTICS = {"samples": 8, "sensitivity_samples": 2, "probes": 2}


def test_export_load_sample_round_trip(tmp_path):
    digits = diffsearch.load_model("digits")
    space = SPACES.get("bitwidth_per_step")(digits, parse_budget("300kB"), nfe=4, statistics=TINY_STATISTICS)
    candidate = space.initial()[-1][1]
    candidate = space.mutate(candidate, __import__("numpy").random.default_rng(3))
    plan = space.decode(candidate)
    save_plan(plan, tmp_path / "plan.json")
    report = write_quantized_weights(digits, plan, tmp_path / "weights")
    assert report["payload_bytes"] == report["accounting_bytes"] == space.cost(candidate)["weight_bytes"]
    assert report["file_bytes"] == (tmp_path / "weights" / "weights.safetensors").stat().st_size > report["payload_bytes"]
    x_T = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = diffsearch.sample(digits, plan, x_T, torch.arange(6))

    fresh = diffsearch.load_model("digits")
    with torch.no_grad():
        for parameter in fresh.unet.parameters():
            parameter.zero_()  # everything must come from the exported folder
    install_quantized_weights(fresh, tmp_path / "weights")
    assert torch.equal(diffsearch.sample(fresh, load_plan(tmp_path / "plan.json"), x_T, torch.arange(6)), expected)
