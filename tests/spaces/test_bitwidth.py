"""The bitwidth spaces: the shared contract, budgets honoured after every operator (property test),
the baselines in the initial population, and plans that run the quantised network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffsearch
from diffsearch.budget import parse_budget, weight_bytes_budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.bits import BitsConfig
from diffsearch.spaces import SPACES

TINY_STATISTICS = {"samples": 8, "sensitivity_samples": 2, "probes": 2}
NFE = 4


@pytest.fixture(scope="module")
def digits():
    return diffsearch.load_model("digits")


def make_space(digits, name="bitwidth", budget="4bits", **options):
    return SPACES.get(name)(digits, parse_budget(budget), nfe=NFE, statistics=TINY_STATISTICS, **options)


@pytest.mark.parametrize("name, budget", [("bitwidth", "4bits"), ("bitwidth_per_step", "200kB"), ("solver_schedule+bitwidth", "3bits")])
def test_budget_is_enforced(digits, name, budget):
    """The shared contract (tests/spaces/test_space_contracts.py) runs over these spaces too; here: the refusals' wording."""
    space = make_space(digits, name, budget)
    broken = json.loads(json.dumps(space.sample(np.random.default_rng(0))))
    broken["bits"] = [[8] * len(row) for row in broken["bits"]]
    with pytest.raises(DiffsearchError, match="the budget is"):
        space.validate(broken)
    with pytest.raises(DiffsearchError, match="not among"):
        space.validate(dict(broken, bits=[[5] * len(row) for row in broken["bits"]]))


def test_joint_space_calibrates_on_each_schedule(digits):
    space = make_space(digits, "solver_schedule+bitwidth", "4bits")
    labels = [label for label, _ in space.initial()]
    assert labels[:2] == ["preset:uniform4", "preset:hawq_ilp"] and "preset:ddim@logsnr+hawq_ilp" in labels
    candidate = space.mutate(space.sample(np.random.default_rng(0)), np.random.default_rng(1))
    plan = space.decode(candidate)
    assert plan.schedule == space.schedules.decode(candidate["schedule"]) and plan.nfe == NFE
    base = space.decode(dict(candidate, schedule=space.schedules.from_schedule(space.schedule)))
    assert base.network[0].activations == space.stats.ranges != plan.network[0].activations


@pytest.fixture(scope="module")
def spaces(digits):
    return {budget: make_space(digits, name, budget) for name, budget in
            [("bitwidth", "3.3bits"), ("bitwidth", "300kB"), ("bitwidth_per_step", "5bits"), ("bitwidth_per_step", "400kB"),
             ("solver_schedule+bitwidth", "4.5bits")]}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["3.3bits", "300kB", "5bits", "400kB", "4.5bits"]), seed=st.integers(0, 10_000), steps=st.integers(1, 6))
def test_every_operator_keeps_the_budget(spaces, which, seed, steps):
    space, rng = spaces[which], np.random.default_rng(seed)
    population = [space.sample(rng) for _ in range(3)] + [c for _, c in space.initial()]
    for _ in range(steps):
        a, b = (population[int(i)] for i in rng.integers(len(population), size=2))
        population += [space.mutate(a, rng), space.crossover(a, b, rng)]
    for candidate in population:
        space.validate(candidate)
        cost = space.cost(candidate)
        if space.budget.unit == "bits":
            assert cost["bits"] <= space.budget.value + 1e-9
        else:
            assert cost["weight_bytes"] <= weight_bytes_budget(space.budget)


def test_initial_population_holds_the_baselines(digits):
    labels = [label for label, _ in make_space(digits, budget="6bits").initial()]
    assert labels == ["preset:uniform6", "preset:uniform4", "preset:hawq_ilp"]
    assert [label for label, _ in make_space(digits, budget="8bits").initial()][:3] == ["preset:uniform8", "preset:uniform6", "preset:uniform4"]


def test_refuses_nfe_budgets_and_models_without_layers(digits, gmm):
    with pytest.raises(DiffsearchError, match="bits or weight-bytes budget"):
        SPACES.get("bitwidth")(digits, parse_budget("10nfe"))
    with pytest.raises(DiffsearchError, match="no quantisable layers"):
        SPACES.get("bitwidth")(gmm, parse_budget("4bits"))
    with pytest.raises(DiffsearchError, match="exceeds the budget"):
        SPACES.get("bitwidth")(digits, parse_budget("10kB"))


def test_per_step_plan_changes_bits_along_the_trajectory(digits):
    space = make_space(digits, "bitwidth_per_step", "5bits")
    names = space.layout.names
    candidate = {"bits": [[2] * len(names), [8] * len(names)]}
    plan = space.decode(space.validate(candidate))
    assert [config.weights[names[0]] for config in plan.network] == [2, 2, 8, 8]
    assert all(isinstance(c, BitsConfig) and set(c.activations) == set(names) - {"conv_in"} for c in plan.network)
    assert space.cost(candidate)["bits"] == 5.0


def test_decoded_plan_samples_with_the_quantised_network(digits):
    space = make_space(digits)
    x_T = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    full = diffsearch.sample(digits, space.schedule, x_T, torch.arange(4))
    low = diffsearch.sample(digits, space.decode({"bits": [[2] * len(space.layout.names)]}), x_T, torch.arange(4))
    eight = diffsearch.sample(digits, space.decode(dict(space.initial()[0][1], bits=[[4] * len(space.layout.names)])), x_T, torch.arange(4))
    assert float((low - full).norm()) > float((eight - full).norm()) > 0
    assert torch.equal(diffsearch.sample(digits, space.schedule, x_T, torch.arange(4)), full)


@pytest.mark.parametrize(("text", "value"), [("4.5bits", 4.5), ("2bits", 2.0), ("1.2MB", 1_200_000), ("250kB", 250_000)])
def test_bits_and_bytes_budgets_parse(text, value):
    budget = parse_budget(text)
    assert (budget.value if budget.unit == "bits" else weight_bytes_budget(budget)) == value and str(budget) == text


@pytest.mark.parametrize("text", ["9bits", "1.5bits", "0MB", "1.2mb", "4.5 bits"])
def test_bad_bits_and_bytes_budgets_are_refused(text):
    with pytest.raises(DiffsearchError, match="budget"):
        parse_budget(text)


def test_cli_refuses_an_nfe_budget_for_a_bitwidth_space_before_any_work(tmp_path):
    from typer.testing import CliRunner

    from diffsearch.cli import app

    result = CliRunner().invoke(app, ["run", "--space", "bitwidth", "--budget", "10nfe", "--out", str(tmp_path / "best.json"),
                                      "--storage", f"sqlite:///{tmp_path}/s.db"])
    assert isinstance(result.exception, DiffsearchError)  # the console entry point prints it as one line, exit 2 (tests/cli)
    assert "space bitwidth accepts only bits, MB, kB budgets" in str(result.exception)
    assert not (tmp_path / "s.db").exists()  # refused before any study was created
