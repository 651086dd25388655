"""Search strategies behind one ask contract: ``propose(history, params, rng) -> candidate``.

Every strategy first proposes the space's initial candidates (the presets), then its own. All state
is derived from the study's history (and, for ``s3``, stage queues stored in the study), so a
resumed search continues where it stopped and the same seed gives the same search.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from diffsearch.registry import Registry
from diffsearch.spaces.base import Candidate, SearchSpace, candidate_fingerprint

STRATEGIES: Registry[type["Strategy"]] = Registry("strategy")


@dataclass(frozen=True)
class Record:
    """One finished or running trial as strategies see it."""

    number: int
    candidate: Candidate
    value: float | None
    fingerprint: str
    tags: dict[str, Any]


class StudyState:
    """Key-value state a strategy keeps in the study (a dict in memory; Optuna user attrs on disk)."""

    def __init__(self, get: Callable[[str], Any], set_: Callable[[str, Any], None]) -> None:
        self.get, self.set = get, set_


class Strategy(ABC):
    """Propose the next candidate from the history of evaluated ones."""

    def __init__(self, space: SearchSpace, seed: int = 0, **options: Any) -> None:
        self.space, self.seed, self.options = space, seed, options
        self._initial = space.initial()

    def optuna_sampler(self):
        """The Optuna sampler the study is created with (only Optuna strategies use it)."""
        import optuna

        return optuna.samplers.RandomSampler(seed=self.seed)

    def distributions(self, history: list[Record]) -> dict[str, Any] | None:
        """Distributions for ``study.ask`` (Optuna strategies, after the initial candidates)."""
        return None

    def pending_initial(self, history: list[Record]) -> tuple[str, Candidate] | None:
        seen = {record.fingerprint for record in history}
        return next(((label, c) for label, c in self._initial if candidate_fingerprint(c) not in seen), None)

    def propose(self, history: list[Record], params: dict[str, Any] | None, rng: np.random.Generator, state: StudyState) -> tuple[Candidate, dict[str, Any]]:
        """The next candidate and tags recorded with it."""
        initial = self.pending_initial(history)
        if initial is not None:
            return initial[1], {"origin": "initial", "label": initial[0]}
        return self.next_candidate(history, params, rng, state)

    @abstractmethod
    def next_candidate(self, history: list[Record], params, rng: np.random.Generator, state: StudyState) -> tuple[Candidate, dict[str, Any]]:
        """The strategy's own proposal once the initial candidates are evaluated."""


def completed(history: list[Record]) -> list[Record]:
    return [record for record in history if record.value is not None]


@STRATEGIES.register("random")
class RandomStrategy(Strategy):
    """Uniform random candidates from the space."""

    def next_candidate(self, history, params, rng, state):
        return self.space.sample(rng), {"origin": "random"}


def tournament(population: list[Record], size: int, rng: np.random.Generator) -> Record:
    """The best of ``size`` members drawn without replacement."""
    picks = rng.choice(len(population), size=min(size, len(population)), replace=False)
    return min((population[i] for i in picks), key=lambda record: record.value)


def offspring(space: SearchSpace, population: list[Record], rng: np.random.Generator, tournament_size: int, crossover: float) -> Candidate:
    """Tournament parent(s), optional crossover, then one mutation."""
    parent = tournament(population, tournament_size, rng).candidate
    if rng.random() < crossover:
        parent = space.crossover(parent, tournament(population, tournament_size, rng).candidate, rng)
    return space.mutate(parent, rng)


@STRATEGIES.register("evolution")
class EvolutionStrategy(Strategy):
    """Regularized (aging) evolution: the population is the newest ``population`` evaluations."""

    def next_candidate(self, history, params, rng, state):
        population = completed(history)[-int(self.options.get("population", 20)) :]
        if len(population) < 2:
            return self.space.sample(rng), {"origin": "random"}
        child = offspring(self.space, population, rng, int(self.options.get("tournament", 5)), float(self.options.get("crossover", 0.3)))
        return child, {"origin": "mutation"}


@STRATEGIES.register("s3")
class S3Strategy(Strategy):
    """Multi-stage predictor-guided evolution (S³): per stage, many mutants are ranked by a predictor
    refit on every evaluation, and only the top ones (plus one random explorer) are evaluated."""

    def next_candidate(self, history, params, rng, state):
        stage = int(state.get("s3:stage") or 0)
        queue = state.get(f"s3:queue:{stage}") or []
        used = sum(1 for record in history if record.tags.get("stage") == stage)
        if used >= len(queue):
            stage, queue = self._new_stage(history, rng, state, stage + 1)
            used = 0
        return queue[used], {"origin": "s3", "stage": stage}

    def _new_stage(self, history, rng, state, stage: int) -> tuple[int, list[Candidate]]:
        """Fit the predictor, rank many offspring, queue the top k and one random explorer."""
        started = time.perf_counter()
        done = completed(history)
        mutants = int(self.options.get("mutants", 200))
        top_k = int(self.options.get("top_k", 4))
        parents = sorted(done, key=lambda record: record.value)[: int(self.options.get("parents", 15))]
        seen = {record.fingerprint for record in history}
        pool: dict[str, Candidate] = {}
        for _ in range(mutants):
            child = offspring(self.space, parents, rng, 3, 0.3)
            fingerprint = candidate_fingerprint(child)
            if fingerprint not in seen:
                pool.setdefault(fingerprint, child)
        candidates = list(pool.values())
        scores = self._predict(done, candidates)
        order = np.argsort(scores)
        queue = [candidates[i] for i in order[:top_k]]
        rest = [candidates[i] for i in order[top_k:]]
        if rest:
            queue.append(rest[int(rng.integers(len(rest)))])
        state.set(f"s3:queue:{stage}", queue)
        state.set("s3:stage", stage)
        state.set(f"s3:stats:{stage}", {"predicted": len(candidates), "predictor_s": time.perf_counter() - started})
        return stage, queue

    def _predict(self, done: list[Record], candidates: list[Candidate]) -> np.ndarray:
        """Random-forest regression on log-values of every evaluated candidate (a simple predictor)."""
        from sklearn.ensemble import RandomForestRegressor

        features = np.stack([self.space.encode(record.candidate) for record in done])
        targets = np.log(np.maximum([record.value for record in done], 1e-12))
        forest = RandomForestRegressor(n_estimators=100, min_samples_leaf=2, random_state=self.seed, n_jobs=1)
        forest.fit(features, targets)
        return forest.predict(np.stack([self.space.encode(c) for c in candidates]))


class OptunaStrategy(Strategy):
    """One of Optuna's samplers through ask/tell over the space's fixed parameter names."""

    def distributions(self, history):
        return None if self.pending_initial(history) is not None else self.space.distributions()

    def next_candidate(self, history, params, rng, state):
        return self.space.from_params(params), {"origin": type(self).__name__}


@STRATEGIES.register("tpe")
class TPEStrategy(OptunaStrategy):
    """Optuna's multivariate TPE."""

    def optuna_sampler(self):
        import optuna

        return optuna.samplers.TPESampler(seed=self.seed, multivariate=True, n_startup_trials=int(self.options.get("startup", 10)))


@STRATEGIES.register("gp")
class GPStrategy(OptunaStrategy):
    """Optuna's Gaussian-process Bayesian optimisation (slow in many dimensions)."""

    def optuna_sampler(self):
        import optuna

        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=int(self.options.get("startup", 10)))


@STRATEGIES.register("nsga2")
class NSGA2Strategy(OptunaStrategy):
    """Optuna's NSGA-II genetic algorithm (single objective here: the search metric)."""

    def optuna_sampler(self):
        import optuna

        return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=int(self.options.get("population", 20)))
