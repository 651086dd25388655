"""Architecture spaces: the MACs budget under every operator, the labelled baselines, one-line refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffsearch.budget import parse_budget
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.cost import plan_cost
from diffsearch.models.loading import load_model
from diffsearch.spaces import SPACES

BLOCK_SPACES = ("architecture", "timesteps+architecture", "solver_schedule+architecture")


@pytest.fixture(scope="module")
def digits():
    return load_model("digits")


def make(digits, name: str, percent: int, nfe: int = 4):
    return SPACES.get(name)(digits, parse_budget(f"{percent}%macs"), nfe=nfe)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(BLOCK_SPACES[:2]), percent=st.integers(35, 95), seed=st.integers(0, 2**16))
def test_every_candidate_is_at_or_under_the_macs_budget(digits, name, percent, seed):
    space, rng = make(digits, name, percent), np.random.default_rng(seed)
    population = [space.sample(rng) for _ in range(3)] + [c for _, c in space.initial()]
    for _ in range(6):
        first, second = (population[int(i)] for i in rng.integers(len(population), size=2))
        population.append(space.mutate(space.crossover(first, second, rng), rng))
    for candidate in population:
        plan = space.validate(candidate) and space.plan(candidate)
        measured = plan_cost(digits, plan, reference_nfe=4)["macs_ratio"]
        assert measured <= percent / 100 * (1 + 1e-9) and space.cost(candidate)["macs_ratio"] == pytest.approx(measured)


def test_initial_population_holds_the_labelled_baselines_at_the_budget(digits):
    space = make(digits, "architecture", 60, nfe=10)
    labels = [label for label, _ in space.initial()]
    assert "shorter:unipc_bh2@quadratic:6nfe" in labels  # 6 of 10 full evaluations fit 60%
    assert "deepcache:interval10:depth1" in labels  # reusing down1, mid and up1 saves 47% of a digits call
    assert {"deepcache:interval2:depth1", "deepcache:interval3:depth1"} <= {label for label, _ in make(digits, "architecture", 80, 10).initial()}
    assert any(label.startswith("skip:") for label in labels)
    for label, candidate in space.initial():
        assert space.cost(candidate)["macs_ratio"] <= 0.6 + 1e-9, label
    joint = [label for label, _ in make(digits, "timesteps+architecture", 60, nfe=10).initial()]
    assert "shorter:unipc_bh2@quadratic:6nfe" in joint and any(label.startswith("deepcache:") for label in joint)


def test_the_joint_space_varies_the_number_of_steps_under_the_total_budget(digits):
    space = make(digits, "timesteps+architecture", 50, nfe=6)
    steps = {space.sample(np.random.default_rng(seed))["nfe"] for seed in range(30)}
    assert len(steps) > 2 and max(steps) > 6  # pruned blocks buy steps beyond the reference's


@pytest.mark.parametrize("name", BLOCK_SPACES)
def test_a_model_without_blocks_gets_one_line(gmm, name):
    with pytest.raises(DiffsearchError, match="declares none") as caught:
        SPACES.get(name)(gmm, parse_budget("60%macs"))
    assert "\n" not in str(caught.value)


def test_bad_candidates_and_budgets_are_one_line_errors(digits):
    space = make(digits, "architecture", 60)
    candidate = space.sample(np.random.default_rng(0))
    for broken in ({}, {**candidate, "modes": [["fly"] * 5] * 4}, {**candidate, "modes": [["reuse"] * 5] * 4},
                   {**candidate, "nfe": 3}):
        with pytest.raises(DiffsearchError):
            space.validate(broken)
    with pytest.raises(DiffsearchError, match="every block skipped"):
        make(digits, "architecture", 1)


def test_the_joint_spaces_min_nfe_option_reaches_them_through_build_space(digits):
    from diffsearch.spaces.base import build_space

    space = build_space(digits, {"space": "timesteps+architecture", "budget": "60%macs", "space_options": {"nfe": 6, "min_nfe": 5}})
    assert space.name == "timesteps+architecture" and space.min_nfe == 5
