"""A supernet search end to end on the shipped digits_ofa weights: run, plan artifact, standalone sub-network weights."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from diffsearch.cli import app, main
from diffsearch.export.plan import load_plan
from diffsearch.export.subnets import load_subnet

runner = CliRunner()


def test_supernet_search_exports_a_plan_and_standalone_subnet_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFSEARCH_CACHE", str(tmp_path / "cache"))
    storage, out = f"sqlite:///{tmp_path / 'study.db'}", tmp_path / "best.json"
    common = ["--model", "digits_ofa", "--space", "supernet", "--budget", "40%macs"]
    result = runner.invoke(app, ["run", *common, "--strategy", "random", "--evals", "3", "--samples", "32", "--final-samples", "32",
                                 "--final-seeds", "2", "--metric", "fid", "--no-progress", "--storage", storage, "--out", str(out),
                                 "--study", "ofa"])
    assert result.exit_code == 0, result.output
    plan = load_plan(str(out))
    assert len(plan.network) == 10 and len(plan.subnets()) == 1
    assert json.loads(out.read_text())["schema_version"] == "diffsearch.plan/v1"
    exported = runner.invoke(app, ["export", "--study", "ofa", "--storage", storage, "--out", str(tmp_path / "again.json"),
                                   "--subnet-weights", str(tmp_path / "subnets")])
    assert exported.exit_code == 0, exported.output
    (weights,) = sorted((tmp_path / "subnets").glob("*.safetensors"))
    assert weights.stem == plan.subnets()[0].label()
    network = load_subnet(weights)
    assert network(torch.zeros(2, 1, 8, 8), torch.full((2,), 500.0), torch.tensor([3, 10])).shape == (2, 1, 8, 8)


def _one_line_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1, captured
    return captured.err


def test_a_supernet_space_refuses_an_nfe_budget_and_a_model_without_supernet(capsys, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    line = _one_line_error(capsys, "run", "--model", "digits_ofa", "--space", "supernet", "--budget", "10nfe", "--storage", storage)
    assert "space supernet accepts only %macs budgets" in line
    line = _one_line_error(capsys, "run", "--model", "gmm", "--space", "supernet_per_step", "--budget", "50%macs", "--storage", storage)
    assert "needs a supernet model" in line
