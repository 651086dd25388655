"""Every registered space passes the shared contract (built from its own ``example`` settings, not a hand-kept list)."""

from __future__ import annotations

import re

import pytest

from diffsearch.budget import UNITS, EXAMPLES, parse_budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.loading import load_model
from diffsearch.spaces import SPACES
from diffsearch.spaces.base import build_space
from diffsearch.testing.spaces import SpaceContract


@pytest.fixture(scope="module", params=SPACES.names())
def space(request):
    example = SPACES.get(request.param).example
    return build_space(load_model(example["model"]), {"space": request.param, **example})


class TestEveryRegisteredSpace(SpaceContract):
    pass


@pytest.mark.parametrize("name", SPACES.names())
def test_spaces_refuse_budgets_in_units_they_do_not_take(gmm, name):
    for unit in set(UNITS) - set(SPACES.get(name).budget_units):
        with pytest.raises(DiffsearchError, match="accepts only"):
            build_space(gmm, {"space": name, "budget": EXAMPLES[unit]})
        with pytest.raises(DiffsearchError, match=re.escape(name)):
            SPACES.get(name)(gmm, parse_budget(EXAMPLES[unit]))
