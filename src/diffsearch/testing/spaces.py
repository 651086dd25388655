"""The shared contract test every search space passes: subclass and provide a ``space`` fixture."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diffsearch.spaces.base import SearchSpace, candidate_fingerprint


class SpaceContract:
    """Subclass in a test module and define a ``space`` fixture returning a SearchSpace."""

    budget_nfe: int
    min_nfe: int | None = None  # an NFE-range space (``min_nfe`` option): candidates cost min_nfe to budget_nfe

    def _population(self, space: SearchSpace, seed: int = 0, size: int = 12):
        rng = np.random.default_rng(seed)
        return [space.sample(rng) for _ in range(size)] + [candidate for _, candidate in space.initial()]

    def test_initial_candidates_are_valid_presets(self, space):
        labels = [label for label, _ in space.initial()]
        assert labels and all(label.startswith("preset:") for label in labels)
        for _, candidate in space.initial():
            space.validate(candidate)

    def test_operators_stay_valid_and_within_budget(self, space):
        rng = np.random.default_rng(1)
        population = self._population(space)
        for _ in range(60):
            a, b = (population[int(i)] for i in rng.integers(len(population), size=2))
            child = space.mutate(space.crossover(a, b, rng), rng)
            space.validate(child)
            nfe = space.cost(child)["nfe"]
            assert space.decode(child).nfe == nfe and (self.min_nfe or self.budget_nfe) <= nfe <= self.budget_nfe
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

    def over_budget(self, space: SearchSpace, candidate: dict) -> dict:
        """A copy of ``candidate`` beyond the budget (one step less); spaces with other budgets override it."""
        broken = json.loads(json.dumps(candidate))
        broken["timesteps"] = broken["timesteps"][:-2] + broken["timesteps"][-1:]
        if "steps" in broken:
            broken["steps"] = broken["steps"][:-1]
        return broken

    def test_budget_is_enforced(self, space):
        candidate = space.sample(np.random.default_rng(0))
        with pytest.raises(Exception):
            space.validate(self.over_budget(space, candidate))
