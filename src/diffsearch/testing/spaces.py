"""The shared contract test every search space passes: subclass and provide a ``space`` fixture.

``tests/spaces`` runs it over every registered space, built from the space's ``example`` settings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffsearch.budget import BYTES_PER_UNIT, weight_bytes_budget
from diffsearch.spaces.base import SearchSpace, candidate_fingerprint


def within_budget(space: SearchSpace, candidate) -> bool:
    """An NFE budget is met exactly; a MACs budget by the candidate's share of the reference network; bits and bytes at or under."""
    cost = space.cost(candidate)
    assert cost["nfe"] == space.decode(candidate).nfe
    if space.budget.unit == "nfe":  # an NFE-range space (``min_nfe`` option) costs min_nfe to the budget
        return (space.options.get("min_nfe") or space.budget.value) <= cost["nfe"] <= space.budget.value
    if space.budget.unit == "bits":
        return cost["bits"] <= space.budget.value + 1e-9
    if space.budget.unit in BYTES_PER_UNIT:
        return cost["weight_bytes"] <= weight_bytes_budget(space.budget)
    return cost["macs_ratio"] <= space.budget.value / 100 * (1 + 1e-9)


def over_budget(candidate):
    """A copy of ``candidate`` that breaks its budget: a step fewer (schedule spaces), or every block run (block modes)."""
    broken = json.loads(json.dumps(candidate))
    if "subnet" in broken or "subnets" in broken:  # supernet spaces: every stage at its deepest and widest
        for net in broken.get("subnets") or [broken["subnet"]]:
            net["depth"], net["width"] = [3] * len(net["depth"]), [1.0] * len(net["width"])
        return broken
    if "bits" in broken:  # bitwidth spaces: every layer at 8 bits
        broken["bits"] = [[8] * len(row) for row in broken["bits"]]
        return broken
    if "modes" in broken:
        broken["modes"] = [["run"] * len(row) for row in broken["modes"]]
        if broken.get("schedule") is not None or "nfe" in broken:
            return broken
    broken["timesteps"] = broken["timesteps"][:-2] + broken["timesteps"][-1:]
    if "steps" in broken:
        broken["steps"] = broken["steps"][:-1]
    return broken


class SpaceContract:
    """Subclass in a test module and define a ``space`` fixture returning a SearchSpace."""

    def _population(self, space: SearchSpace, seed: int = 0, size: int = 12):
        rng = np.random.default_rng(seed)
        return [space.sample(rng) for _ in range(size)] + [candidate for _, candidate in space.initial()]

    def test_initial_candidates_are_valid_labelled_baselines(self, space):
        labels = [label for label, _ in space.initial()]
        assert labels and all(isinstance(label, str) and label for label in labels) and len(set(labels)) == len(labels)
        for _, candidate in space.initial():
            space.validate(candidate)
            assert within_budget(space, candidate)

    def test_operators_stay_valid_and_within_budget(self, space):
        rng = np.random.default_rng(1)
        population = self._population(space)
        for _ in range(60):
            a, b = (population[int(i)] for i in rng.integers(len(population), size=2))
            child = space.mutate(space.crossover(a, b, rng), rng)
            space.validate(child)
            assert within_budget(space, child)
            population.append(child)

    def test_encoding_has_fixed_length_and_is_finite(self, space):
        vectors = [space.encode(c) for c in self._population(space)]
        assert len({v.shape for v in vectors}) == 1
        assert all(np.isfinite(v).all() for v in vectors)

    def test_json_round_trip_and_fingerprint(self, space):
        for candidate in self._population(space, size=4):
            copy = space.from_json(space.to_json(candidate))
            assert copy == json.loads(json.dumps(candidate))
            assert candidate_fingerprint(copy) == candidate_fingerprint(candidate)

    def test_optuna_parameters_map_to_valid_candidates(self, space):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(10):
            trial = study.ask(space.distributions())
            space.validate(space.from_params(trial.params))
            study.tell(trial, 0.0)

    def test_same_seed_same_candidates(self, space):
        first = [candidate_fingerprint(c) for c in self._population(space, seed=7)]
        second = [candidate_fingerprint(c) for c in self._population(space, seed=7)]
        assert first == second

    def test_budget_is_enforced(self, space):
        from diffsearch.errors import DiffsearchError

        candidate = space.sample(np.random.default_rng(0))
        with pytest.raises(DiffsearchError):
            space.validate(over_budget(candidate))
