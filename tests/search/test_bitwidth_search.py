"""A bitwidth search end to end on a tiny plug-in network: the runner searches bits under the budget,
exports a plan/v1 artifact with per-layer bits and calibrated ranges, and ``search export
--quantized-weights`` packs it into bytes a fresh network samples from exactly."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import diffsearch
from diffsearch.cli import app
from diffsearch.export.quantized import install_quantized_weights
from diffsearch.models.bits import BitsConfig
from diffsearch.models.loading import load_model

PLUGIN = '''
import torch, diffsearch
from diffsearch.models.quantize import LayerQuantizer

def make():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    quantizer = LayerQuantizer(net)
    return diffsearch.Denoiser(lambda x, t, c: quantizer(x) * 0.5, {"beta_schedule": "linear"}, data_shape=(3,), name="tinyq",
                               quantizer=quantizer, objective="teacher_error")
'''


def test_search_export_and_packed_weights(tmp_path):
    plugin = tmp_path / "tinyq.py"
    plugin.write_text(PLUGIN)
    storage, spec = f"sqlite:///{tmp_path}/bits.db", f"{plugin}:make"
    result = diffsearch.run_search({
        "model": spec, "space": "bitwidth", "budget": "4bits", "strategy": "random", "evals": 6, "search_samples": 64,
        "final_samples": 64, "final_seeds": 2, "study": "bits", "storage": storage, "out": str(tmp_path / "best.json"),
        "progress": False, "space_options": {"nfe": 5, "statistics": {"samples": 16, "sensitivity_samples": 4, "probes": 4}}})
    plan = diffsearch.load_plan(result.path)
    assert json.loads(result.path.read_text())["schema_version"] == "diffsearch.plan/v1"
    assert plan.nfe == 5 and all(isinstance(config, BitsConfig) and config.activations for config in plan.network)
    layout = load_model(spec).quantizer.layout
    assert layout.mean_bits(plan.network[0].weights) <= 4.0

    out = CliRunner().invoke(app, ["export", "--study", "bits", "--storage", storage, "--out", str(tmp_path / "again.json"),
                                   "--model", spec, "--quantized-weights", str(tmp_path / "packed")])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "packed" / "quantization.json").read_text())
    assert f"{report['file_bytes']} bytes on disk" in out.output and report["payload_bytes"] == report["accounting_bytes"]
    fresh = load_model(spec)
    with torch.no_grad():
        for parameter in fresh.quantizer.module.parameters():
            parameter.zero_()
    install_quantized_weights(fresh, tmp_path / "packed")
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(diffsearch.sample(fresh, plan, x_T), diffsearch.sample(load_model(spec), plan, x_T))
