"""Every registered space passes the shared contract."""

from __future__ import annotations

import pytest

from diffsearch.budget import parse_budget
from diffsearch.errors import DiffsearchError
from diffsearch.spaces import SPACES
from diffsearch.testing.spaces import SpaceContract


class TestSolverSchedule(SpaceContract):
    budget_nfe = 5

    @pytest.fixture(scope="class")
    def space(self, gmm):
        return SPACES.get("solver_schedule")(gmm, parse_budget("5nfe"))


class TestTimesteps(SpaceContract):
    budget_nfe = 6

    @pytest.fixture(scope="class")
    def space(self, gmm):
        return SPACES.get("timesteps")(gmm, parse_budget("6nfe"), solver="unipc_bh2")


def test_every_registered_space_has_a_contract_test():
    assert set(SPACES) == {"solver_schedule", "timesteps", "bitwidth", "bitwidth_per_step", "solver_schedule+bitwidth",  # bitwidth: tests/spaces/test_bitwidth.py
                           "supernet", "supernet_per_step", "solver_schedule+supernet"}  # supernet: tests/spaces/test_supernet_spaces.py


def test_spaces_refuse_non_nfe_budgets(gmm):
    for name in (name for name in SPACES if SPACES.get(name).budget_units == ("nfe",)):
        with pytest.raises(DiffsearchError, match="NFE budget"):
            SPACES.get(name)(gmm, parse_budget("60%macs"))
