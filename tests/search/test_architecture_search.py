"""Searches over architecture spaces end to end: a plan/v1 artifact, ``search eval`` on it, a diffusers UNet from a directory."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import diffsearch
from diffsearch.cli import app
from diffsearch.export.plan import load_plan


PLUGIN = """
from diffsearch.models.digits import build_digits

def make():
    model = build_digits()
    model.data_range = None  # no out-of-range gate: at 64 samples one outlier would fail a candidate
    return model
"""


def objective_only(monkeypatch) -> None:
    """No side metrics in the final stage (the search names its metric): fd_teacher's 4000-sample teacher
    reference would cost most of a test's minute."""
    from diffsearch.search import runner

    monkeypatch.setattr(runner, "default_metrics", lambda model, reference=None: [])


def test_a_digits_architecture_search_exports_a_plan_that_search_eval_scores(tmp_path, monkeypatch):
    objective_only(monkeypatch)
    (tmp_path / "unbounded.py").write_text(PLUGIN)
    spec = f"{tmp_path / 'unbounded.py'}:make"
    config = {"model": spec, "space": "architecture", "budget": "80%macs", "space_options": {"nfe": 10}, "strategy": "evolution",
              "evals": 12, "search_samples": 64, "final_samples": 64, "final_seeds": 2, "study": "architecture-e2e", "metric": "teacher_error",
              "storage": f"sqlite:///{tmp_path}/study.db", "out": str(tmp_path / "best.json"), "progress": False, "cache": False}  # digits' teacher, not digits' cached evaluations
    result = diffsearch.run_search(config)
    written = json.loads(result.path.read_text())
    assert result.plan is not None and written["schema_version"] == "diffsearch.plan/v1"
    plan = load_plan(result.path)
    assert plan == result.plan and not plan.full_network and plan.metrics["heldout"]["samples"] == 64
    assert written["metrics"]["baseline"]["schedule"].split(":")[0] in ("deepcache", "skip", "shorter")
    outcome = CliRunner().invoke(app, ["eval", "--model", spec, "--schedule", str(result.path), "--json", "--no-floor", "--samples", "64", "--no-cache",
                                       "--metric", "teacher_error"])
    assert outcome.exit_code == 0, outcome.output
    row = json.loads(outcome.stdout)
    assert row["macs_ratio"] <= 0.8 + 1e-9 and row["nfe"] == 10 and row["macs_per_sample"] == row["macs"]


@pytest.mark.slow
def test_search_run_on_a_diffusers_unet_directory_with_the_architecture_space(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    import torch

    objective_only(monkeypatch)

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                                 down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=4)
    scheduler = diffusers.DDPMScheduler(beta_schedule="linear", num_train_timesteps=1000)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    out = tmp_path / "best.json"
    arguments = ["run", "--model", f"diffusers:{tmp_path / 'pipe'}", "--space", "architecture", "--budget", "60%macs", "--nfe", "3",
                 "--strategy", "random", "--evals", "3", "--samples", "32", "--final-samples", "32", "--final-seeds", "2",
                 "--metric", "teacher_error", "--storage", f"sqlite:///{tmp_path}/study.db", "--out", str(out), "--no-progress"]
    outcome = CliRunner().invoke(app, arguments)
    assert outcome.exit_code == 0, outcome.output
    plan = load_plan(out)
    model = diffsearch.load_model(f"diffusers:{tmp_path / 'pipe'}")
    assert plan.nfe <= 3 and diffsearch.evaluators.cost.plan_cost(model, plan, reference_nfe=3)["macs_ratio"] <= 0.6 + 1e-9
