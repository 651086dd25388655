"""An NFE space over a range of budgets: the union of one fixed-NFE space at every NFE from ``min_nfe``
to the budget, so that a Pareto search (``--objectives METRIC,nfe``) trades quality against NFE.

A candidate is the inner space's candidate plus its ``nfe``; every operator keeps the NFE in range.
The schedule spaces hold their NFE exactly, so the runner wraps them in this space for several
objectives (the budget becomes an upper bound, ``RunConfig.space_settings``); ``spaces.base.build_space``
builds it from the ``min_nfe`` option, in the driver and in every worker. ``macs_ratio`` divides by the
full network at the budget's NFE (``reference_nfe``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from diffsearch.budget import Budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.schedule import Schedule
from diffsearch.spaces.base import Candidate, SearchSpace

NFE_JUMP = 0.2  # probability that a mutation moves to a neighbouring NFE


def default_min_nfe(budget_nfe: int) -> int:
    """The lower end of a Pareto search's NFE range when ``min_nfe`` is not given: half the budget (at least 2)."""
    return max(2, int(np.ceil(budget_nfe / 2)))


class NfeRangeSpace(SearchSpace):
    """Every NFE from ``min_nfe`` to the budget of a fixed-NFE space (``space_options: {min_nfe: 4}``)."""

    def __init__(self, inner: type[SearchSpace], model: Denoiser, budget: Budget, min_nfe: int, **options: Any) -> None:
        super().__init__(model, budget, min_nfe=min_nfe, **options)
        if budget.unit != "nfe":
            raise DiffsearchError(f"space option min_nfe needs an NFE budget like 10nfe, not {budget}")
        if not isinstance(min_nfe, int) or not 1 <= min_nfe <= budget.value:
            raise DiffsearchError(f"space option min_nfe {min_nfe!r}: a whole number from 1 to the budget's {int(budget.value)} NFE")
        self.inner, self.name, self.inner_options = inner, inner.name, options
        self.nfes = tuple(range(min_nfe, int(budget.value) + 1))
        self._spaces: dict[int, SearchSpace] = {}
        self._presets: dict[int, list[tuple[str, Candidate]]] = {}
        self.at(min_nfe), self.at(self.nfes[-1])  # a range the inner space refuses fails here, before any search

    def at(self, nfe: int) -> SearchSpace:
        """The inner space at exactly ``nfe``."""
        if nfe not in self._spaces:
            self._spaces[nfe] = self.inner(self.model, Budget(value=nfe, unit="nfe"), **self.inner_options)
        return self._spaces[nfe]

    def presets(self, nfe: int) -> list[tuple[str, Candidate]]:
        """The inner space's initial candidates at ``nfe`` (computed once)."""
        if nfe not in self._presets:
            self._presets[nfe] = self.at(nfe).initial()
        return self._presets[nfe]

    def _split(self, candidate: Candidate) -> tuple[SearchSpace, Candidate]:
        nfe = candidate.get("nfe")
        if nfe not in self.nfes:
            raise DiffsearchError(f"candidate nfe {nfe!r}: this space holds {self.nfes[0]} to {self.nfes[-1]} NFE")
        return self.at(nfe), {key: value for key, value in candidate.items() if key != "nfe"}

    def initial(self) -> list[tuple[str, Candidate]]:
        """The inner presets at every NFE, interleaved (each preset at every NFE before the next preset)."""
        per_nfe = {nfe: self.presets(nfe) for nfe in self.nfes}
        longest = max(len(presets) for presets in per_nfe.values())
        return [(f"{per_nfe[nfe][i][0]}/{nfe}nfe", {"nfe": nfe, **per_nfe[nfe][i][1]})
                for i in range(longest) for nfe in reversed(self.nfes) if i < len(per_nfe[nfe])]

    def sample(self, rng: np.random.Generator) -> Candidate:
        nfe = int(rng.choice(self.nfes))
        return {"nfe": nfe, **self.at(nfe).sample(rng)}

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """The inner mutation; with probability ``NFE_JUMP``, a mutated preset at a neighbouring NFE instead."""
        space, inner = self._split(candidate)
        nfe = candidate["nfe"]
        if rng.random() < NFE_JUMP and len(self.nfes) > 1:
            nfe = int(np.clip(nfe + rng.choice((-1, 1)), self.nfes[0], self.nfes[-1]))
            presets = self.presets(nfe)
            space, inner = self.at(nfe), presets[int(rng.integers(len(presets)))][1]
        return {"nfe": nfe, **space.mutate(inner, rng)}

    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        """The inner crossover of parents at one NFE; parents at different NFE give a copy of the first."""
        if first.get("nfe") != second.get("nfe"):
            return copy.deepcopy(first)
        space, inner = self._split(first)
        return {"nfe": first["nfe"], **space.crossover(inner, self._split(second)[1], rng)}

    def encode(self, candidate: Candidate) -> np.ndarray:
        """The inner features, zero-padded to the longest NFE's length, then NFE over the budget."""
        space, inner = self._split(candidate)
        width = len(self.at(self.nfes[-1]).encode(self.presets(self.nfes[-1])[0][1]))
        features = space.encode(inner)
        return np.concatenate([features, np.zeros(width - len(features)), [candidate["nfe"] / self.nfes[-1]]])

    def decode(self, candidate: Candidate) -> Schedule:
        space, inner = self._split(candidate)
        return space.decode(inner)

    def distributions(self) -> dict[str, Any]:
        """``nfe`` plus the budget space's names (a smaller NFE reads a prefix of them)."""
        from optuna.distributions import IntDistribution

        return {"nfe": IntDistribution(self.nfes[0], self.nfes[-1]), **self.at(self.nfes[-1]).distributions()}

    def from_params(self, params: dict[str, Any]) -> Candidate:
        nfe = int(params["nfe"])
        return {"nfe": nfe, **self.at(nfe).from_params(params)}

    def from_schedule(self, schedule: Schedule) -> Candidate:
        return self.validate({"nfe": schedule.nfe, **self.at(schedule.nfe).from_schedule(schedule)})

    def validate(self, candidate: Candidate) -> Candidate:
        space, inner = self._split(candidate)
        return {"nfe": candidate["nfe"], **space.validate(inner)}
