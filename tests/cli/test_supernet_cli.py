"""The supernet spaces on the command line: one-line errors, standalone sub-network weights of an exported plan."""

from __future__ import annotations

import pytest
import torch

import diffsearch
from diffsearch.cli import main
from diffsearch.export.plan import load_plan
from diffsearch.export.subnets import load_subnet


def test_export_subnet_weights_writes_the_plans_subnetworks_from_the_model_its_provenance_names(tmp_path):
    from diffsearch.cli import _export_subnet_weights
    from diffsearch.export.plan import save_plan
    from diffsearch.solvers.plan import Plan

    model = diffsearch.load_model("digits_ofa")
    space = model.elastic.space
    schedule = diffsearch.load_schedule("preset:ddim", nfe=2, model=model)
    plan = Plan(schedule=schedule, network=(space.smallest(), space.smallest()), provenance={"config": {"model": "digits_ofa"}})
    save_plan(plan, tmp_path / "best.json")
    assert load_plan(str(tmp_path / "best.json")).subnets() == [space.smallest()]
    (weights,) = _export_subnet_weights(tmp_path / "best.json", str(tmp_path / "subnets"))
    assert weights.stem == space.smallest().label()
    network = load_subnet(weights)
    x, t, labels = torch.zeros(2, 1, 8, 8), torch.full((2,), 500.0), torch.tensor([3, 10])
    model.elastic.set_active(space.smallest())
    assert torch.equal(network(x, t, labels), model.elastic(x, t, labels))
    model.elastic.set_active(None)


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
