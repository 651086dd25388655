"""The once-for-all spaces (the shared contract runs in test_space_contracts.py): budgets at or under after every operator (hypothesis),
MACs from the per-stage table equal to torch's flop counter, and the initial uniform sub-networks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from diffsearch.budget import parse_budget
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.cost import macs_per_call, plan_cost
from diffsearch.spaces import SPACES
from diffsearch.testing.models import untrained_digits_ofa

NFE = 4
SUPERNET_SPACES = ("supernet", "supernet_per_step", "solver_schedule+supernet")


@pytest.fixture(scope="module")
def ofa_model(tmp_path_factory):
    return untrained_digits_ofa(tmp_path_factory.mktemp("ofa"))


def make(ofa_model, name: str, budget: str = "50%macs"):
    return SPACES.get(name)(ofa_model, parse_budget(budget, ("%macs",)), nfe=NFE)


@pytest.mark.parametrize("name", SUPERNET_SPACES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**31 - 1), percent=st.sampled_from([20, 35, 50, 75]))
def test_operators_keep_the_run_at_or_under_the_macs_budget(ofa_model, name, seed, percent):
    space = make(ofa_model, name, f"{percent}%macs")
    rng = np.random.default_rng(seed)
    population = [space.sample(rng) for _ in range(3)] + [c for _, c in space.initial()[:3]]
    for _ in range(4):
        a, b = (population[int(i)] for i in rng.integers(len(population), size=2))
        for child in (space.mutate(a, rng), space.crossover(a, b, rng)):
            assert space.cost(child)["macs_ratio"] <= percent / 100 + 1e-12
            population.append(space.validate(child))


def test_the_stage_table_equals_the_flop_counter_on_whole_plans(ofa_model):
    space = make(ofa_model, "supernet_per_step", "60%macs")
    rng = np.random.default_rng(5)
    for _ in range(3):
        candidate = space.sample(rng)
        plan = space.decode(candidate)
        assert sum(macs_per_call(ofa_model, c) for c in plan.network) == space.cost(candidate)["macs"]
        assert plan_cost(ofa_model, plan)["macs_ratio"] == pytest.approx(space.cost(candidate)["macs_ratio"], rel=1e-12)


def test_initial_population_is_every_uniform_subnet_at_the_budget(ofa_model):
    space = make(ofa_model, "supernet", "50%macs")
    initial = dict(space.initial())
    uniform = space.elastic.uniform()
    fitting = [u for u in uniform if space.ratio([u]) <= 0.5]
    assert 0 < len(initial) == len(fitting) < len(uniform)
    for candidate in initial.values():
        subnet = space.subnets(candidate)[0]
        assert len(set(subnet.depth)) == len(set(subnet.width)) == 1
    joint = dict(make(ofa_model, "solver_schedule+supernet").initial())
    assert len(joint) == 39 + len(fitting)


def test_supernet_spaces_refuse_other_models_and_impossible_budgets(ofa_model, gmm):
    with pytest.raises(DiffsearchError, match="needs a supernet model"):
        make(gmm, "supernet")
    with pytest.raises(DiffsearchError, match="the smallest sub-network costs"):
        make(ofa_model, "supernet", "5%macs")
    with pytest.raises(DiffsearchError, match="accepts only %macs"):
        parse_budget("10nfe", SPACES.get("supernet").budget_units, "space supernet")
    space = make(ofa_model, "supernet")
    bad = json.loads(json.dumps(space.sample(np.random.default_rng(0))))
    bad["subnet"]["width"][0] = 0.6
    with pytest.raises(DiffsearchError, match="allowed: 0.5, 0.75, 1"):
        space.validate(bad)


def test_latency_table_covers_every_block_configuration_and_round_trips(ofa_model):
    from diffsearch.evaluators.latency import LatencyTable

    table = LatencyTable.measure(ofa_model, batch=8, repeats=1)
    space = ofa_model.elastic.space
    per_stage = [len(space.choices("width", s)) * len(space.choices("kernel", s)) * 2 for s in range(len(space.stages))]
    assert len(table.entries) == sum(per_stage) and all(v > 0 for v in table.entries.values())
    assert table.seconds(space.largest()) > table.seconds(space.smallest()) > 0
    copy = LatencyTable.from_json(table.to_json())
    assert copy.seconds(space.largest()) == table.seconds(space.largest())
