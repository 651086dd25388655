"""Search strategies behind one ask contract: ``propose(history, params, rng) -> candidate``.

Every strategy first proposes the space's initial candidates (the presets), then its own. All state
is derived from the study's history (and, for ``s3``, stage queues stored in the study), so a
resumed search continues where it stopped and the same seed gives the same search.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any, Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from diffsearch.errors import DiffsearchError
from diffsearch.predictors.gating import GatePolicy
from diffsearch.registry import Registry
from diffsearch.search.records import DeadlineReached, Record, StudyState
from diffsearch.spaces.base import Candidate, SearchSpace, candidate_fingerprint

STRATEGIES: Registry[type["Strategy"]] = Registry("strategy")
_log = logging.getLogger(__name__)


class NoOptions(BaseModel):
    """Strategy options (``strategy_options``): typed, bounded, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EvolutionOptions(NoOptions):
    population: int = Field(20, ge=2, le=10_000)  # newest evaluations forming the population
    tournament: int = Field(5, ge=1, le=1000)  # members per tournament
    crossover: float = Field(0.3, ge=0, le=1)  # probability of crossover before the mutation


class StartupOptions(NoOptions):
    startup: int = Field(10, ge=0, le=10_000)  # random trials before the model-based sampler


class PopulationOptions(NoOptions):
    population: int = Field(20, ge=2, le=10_000)  # NSGA-II population size


class S3Options(GatePolicy):
    """s3's options: the gate policy plus the evolution knobs of each stage."""

    predictor: str = Field("ensemble", max_length=64)  # registered predictor
    gating: bool = True  # proxy cascade + kill switch; False = predictor top-k only
    parents: int = Field(15, ge=1, le=10_000)  # best evaluated candidates mutated per stage
    mutants: int = Field(200, ge=1, le=100_000)  # offspring drawn per stage (the predictor ranks them)


def validate_strategy_options(strategy: str, options: dict[str, Any]) -> BaseModel:
    """``options`` checked against the strategy's options model; one line naming the bad key."""
    return _parse_options(STRATEGIES.get(strategy).Options, strategy, options)


def _parse_options(model: type[BaseModel], strategy: str, options: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(options)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        allowed = ", ".join(model.model_fields) or "none"
        raise DiffsearchError(f"strategy_options.{key}: {first['msg']} (strategy {strategy} takes: {allowed})") from None


class Strategy(ABC):
    """Propose the next candidate from the history of evaluated ones."""

    Options: type[BaseModel] = NoOptions
    several_objectives = False  # True: keeps a Pareto front when the study has several objectives (``--objectives``)

    def __init__(self, space: SearchSpace, seed: int = 0, **options: Any) -> None:
        self.space, self.seed = space, seed
        self.settings = _parse_options(self.Options, type(self).__name__, options)
        self.options = self.settings.model_dump()
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

    several_objectives = True

    def next_candidate(self, history, params, rng, state):
        return self.space.sample(rng), {"origin": "random"}


def tournament(population: list[Record], size: int, rng: np.random.Generator) -> Record:
    """The best of ``size`` members drawn without replacement."""
    picks = rng.choice(len(population), size=min(size, len(population)), replace=False)
    return min((population[i] for i in picks), key=lambda record: record.value)


def offspring(space: SearchSpace, population: list[Record], rng: np.random.Generator, tournament_size: int, crossover: float) -> Candidate:
    """Tournament parent(s), optional crossover, then one mutation."""
    return bred(space, population, rng, tournament_size, crossover)[0]


def bred(space: SearchSpace, population: list[Record], rng: np.random.Generator, tournament_size: int, crossover: float) -> tuple[Candidate, str]:
    """``offspring`` and the operator that made it: ``mutation`` or ``crossover`` (then a mutation)."""
    parent = tournament(population, tournament_size, rng).candidate
    operator = "mutation"
    if rng.random() < crossover:
        parent, operator = space.crossover(parent, tournament(population, tournament_size, rng).candidate, rng), "crossover"
    return space.mutate(parent, rng), operator


@STRATEGIES.register("evolution")
class EvolutionStrategy(Strategy):
    """Regularized (aging) evolution: the population is the newest ``population`` evaluations. With several
    objectives, NSGA-II's elitist selection instead: the ``population`` best of every evaluation by
    non-dominated front and crowding distance, parents by the crowded-comparison tournament."""

    Options = EvolutionOptions
    several_objectives = True

    def next_candidate(self, history, params, rng, state):
        done = completed(history)
        if len(done) < 2:
            return self.space.sample(rng), {"origin": "random"}
        tournament_size, crossover = int(self.options.get("tournament", 5)), float(self.options.get("crossover", 0.3))
        if done[0].values is not None and len(done[0].values) > 1:
            population = nsga2_population(done, int(self.options.get("population", 20)))
            return bred(self.space, population, rng, tournament_size, crossover)[0], {"origin": "nsga2"}
        child = offspring(self.space, done[-int(self.options.get("population", 20)) :], rng, tournament_size, crossover)
        return child, {"origin": "mutation"}


def nsga2_population(done: list[Record], size: int) -> list[Record]:
    """NSGA-II's (mu + lambda) survivors: distinct evaluated candidates with finite objectives, best ``size`` by
    the crowded comparison, as records whose ``value`` is their selection rank (for ``tournament``)."""
    from dataclasses import replace

    from diffsearch.search.pareto import nsga2_order

    distinct = list({r.fingerprint: r for r in done if all(np.isfinite(v) for v in r.values)}.values())
    if len(distinct) < 2:
        return done
    order = nsga2_order(np.asarray([r.values for r in distinct]))[:size]
    return [replace(distinct[i], value=float(position)) for position, i in enumerate(order)]


CLAIM_POLL_S = 0.5  # how often a joined s3 driver looks for the stage another driver claimed


@STRATEGIES.register("s3")
class S3Strategy(Strategy):
    """Multi-stage predictor-gated evolution (S³): per stage, many mutants are ranked by a learned predictor
    (pretrained on cheap proxies, fine-tuned on expensive labels); only the best by proxy (plus explorers) are evaluated."""

    Options = S3Options

    def __init__(self, space: SearchSpace, seed: int = 0, **options: Any) -> None:
        from diffsearch.predictors import PREDICTORS

        super().__init__(space, seed, **options)
        PREDICTORS.get(self.settings.predictor)
        self.predictor, self.policy = self.settings.predictor, GatePolicy.from_options(self.options) if self.settings.gating else None
        self._memo: dict[str, Any] = {}  # s3:* attrs this instance read or wrote (it is their only writer)
        self._features: dict[str, np.ndarray] = {}
        self._operators: dict[str, str] = {}  # offspring fingerprint -> mutation / crossover (stored in the stage tags)
        self.run_batch, self.max_attempts = None, 2
        self._killed: set[str] = set()  # fingerprints whose proxy killed the run more than max_attempts times

    def attach(self, run_batch, max_attempts: int) -> None:
        """Evaluate proxies with ``run_batch(candidates, samples, metric)`` (the search's executor); a proxy
        whose evaluation killed the run ``max_attempts`` times counts as failed."""
        self.run_batch, self.max_attempts = run_batch, max_attempts

    def _proxy_scores(self, state, key: str, candidates: list[Candidate], samples: int | None = None) -> list[float | None]:
        """Proxy values of ``candidates``, stored in the study under ``key`` as they are computed: a resumed
        run reuses them, and one that keeps killing the run fails after ``max_attempts``."""
        from diffsearch.predictors.gating import proxy_values

        stored = dict(self._get(state, key) or {})
        todo = list({candidate_fingerprint(c): c for c in candidates if "value" not in stored.get(candidate_fingerprint(c), {})}.values())
        chunk = max(getattr(self.run_batch, "slots", 1), 1)
        for begin in range(0, len(todo), chunk):
            batch, before = todo[begin : begin + chunk], dict(stored)
            for candidate in batch:  # record the attempt before it runs: a crash here is counted on resume
                entry = stored.get(candidate_fingerprint(candidate), {})
                attempts = entry.get("attempts", 0) + 1
                stored[candidate_fingerprint(candidate)] = {"attempts": attempts, **({"value": None} if attempts > self.max_attempts else {})}
            self._set(state, key, dict(stored))
            runnable = [c for c in batch if "value" not in stored[candidate_fingerprint(c)]]
            try:
                values = proxy_values(self.space, runnable, self.policy, samples, self.run_batch) if runnable else []
            except DeadlineReached:  # the --time deadline, not the candidates: their attempts do not count
                self._set(state, key, before)
                raise
            for candidate, value in zip(runnable, values):
                stored[candidate_fingerprint(candidate)] = {**stored[candidate_fingerprint(candidate)], "value": value}
            self._set(state, key, dict(stored))
        self._killed |= {fp for fp, entry in stored.items() if entry.get("attempts", 0) > self.max_attempts}
        return [stored[candidate_fingerprint(c)]["value"] for c in candidates]

    def _get(self, state, key: str) -> Any:
        """``state.get`` memoized: study user attrs are deep-copied on every read."""
        if key not in self._memo:
            self._memo[key] = state.get(key)
        return self._memo[key]

    def _set(self, state, key: str, value: Any) -> None:
        state.set(key, value)
        self._memo[key] = value

    def _encode(self, candidates: list[Candidate]) -> np.ndarray:
        """Predictor features of ``candidates`` (cached by fingerprint)."""
        from diffsearch.predictors.encoders import encode

        rows = []
        for candidate in candidates:
            key = candidate_fingerprint(candidate)
            if key not in self._features:
                self._features[key] = encode(self.space, candidate)
            rows.append(self._features[key])
        return np.stack(rows)

    def propose(self, history, params, rng, state):
        """Ungated: presets first, as every strategy; gated: the presets too go through the proxy gate (stage 0)."""
        if self.policy is None:
            return super().propose(history, params, rng, state)
        if self._get(state, "s3:stage") is None:
            self._build(state, 0, lambda: self._initial_stage(history, rng, state))
        return self.next_candidate(history, params, rng, state)

    def next_candidate(self, history, params, rng, state):
        stage = int(self._get(state, "s3:stage") or 0)
        queue = self._get(state, f"s3:queue:{stage}") or []
        used = sum(1 for record in history if record.tags.get("stage") == stage)
        while used >= len(queue):  # joined drivers: the next stage may be built (or being built) by another
            stage += 1
            queue = self._build(state, stage, lambda: self._new_stage(history, rng, state, stage))
            used = sum(1 for record in history if record.tags.get("stage") == stage)
        tags = (self._get(state, f"s3:tags:{stage}") or [{}] * len(queue))[used]
        return queue[used], {"origin": "s3", **tags, "stage": stage}

    def _build(self, state, stage: int, build) -> list[Candidate]:
        """Stage ``stage``'s queue, built once: here when this driver claims ``s3:build:<stage>`` first, else read
        when the claiming driver has saved it (its ``s3:stats:<stage>`` is written last but one)."""
        while True:
            for key in (f"s3:queue:{stage}", f"s3:tags:{stage}", f"s3:stats:{stage}"):
                self._memo.pop(key, None)  # another driver may have written them since this one read
            if self._get(state, f"s3:stats:{stage}") is not None:
                return self._get(state, f"s3:queue:{stage}") or []
            if state.claim(f"s3:build:{stage}") and self._get(state, f"s3:stats:{stage}") is None:
                build()
                return self._get(state, f"s3:queue:{stage}") or []
            time.sleep(CLAIM_POLL_S)

    def _offspring(self, history, rng) -> list[Candidate]:
        """Distinct unseen mutants of the best ``parents`` evaluated candidates."""
        parents = sorted(completed(history), key=lambda record: record.value)[: int(self.options.get("parents", 15))]
        seen = {record.fingerprint for record in history}
        pool: dict[str, Candidate] = {}
        for _ in range(int(self.options.get("mutants", 200))):  # no candidate succeeded yet: random ones instead of mutants
            child, operator = bred(self.space, parents, rng, 3, 0.3) if parents else (self.space.sample(rng), "random")
            fingerprint = candidate_fingerprint(child)
            if fingerprint not in seen and fingerprint not in pool:
                pool[fingerprint] = child
                self._operators[fingerprint] = operator
        return list(pool.values())

    def _new_stage(self, history, rng, state, stage: int) -> tuple[int, list[Candidate]]:
        """Rank many offspring with the predictor (and the gate), queue the chosen ones."""
        started = time.perf_counter()
        candidates = self._offspring(history, rng)
        scores = self._predict(completed(history), candidates, state, stage)
        if self.policy is None:
            queue, tags, gate = self._ungated_top(candidates, scores, rng)
        else:
            queue, tags, gate = self._gate(history, candidates, scores, rng, state, stage)
        tags = [{**tag, "operator": self._operators.get(candidate_fingerprint(c), "")} for c, tag in zip(queue, tags)]
        self._save_stage(state, stage, queue, tags, gate, {"predicted": len(candidates), "predictor_s": time.perf_counter() - started})
        return stage, queue

    def _ungated_top(self, candidates, scores, rng):
        """Gating off: the predictor's top k and one random explorer (the original S³ loop)."""
        top_k = int(self.options.get("top_k", 4))
        order = [int(i) for i in np.argsort(scores[0], kind="stable")]
        chosen = order[:top_k] + ([order[top_k:][int(rng.integers(len(order) - top_k))]] if len(order) > top_k else [])
        return [candidates[i] for i in chosen], [{"predicted": float(scores[0][i])} for i in chosen], {"mode": "predictor"}

    def _gate(self, history, candidates, scores, rng, state, stage: int):
        """The cascade: predictor -> proxy -> expensive; ungated (random offspring) while the online tau is low."""
        from diffsearch.predictors.gating import online_tau, order_by_value, split_top_and_random

        policy, (mu, sigma) = self.policy, scores
        tau, labels = online_tau(history, policy.tau_window, policy.tau_min_labels)
        gate = {"online_tau": tau, "tau_labels": labels, "offspring": len(candidates), "predictor": self.predictor}
        if tau is not None and tau < policy.tau_threshold and (self._get(state, f"s3:gate:{stage - 1}") or {}).get("mode") != "ungated":
            picks = [int(i) for i in rng.choice(len(candidates), size=min(policy.top_k + policy.explore, len(candidates)), replace=False)]
            return ([candidates[i] for i in picks], [{"gate": "ungated", "predicted": float(mu[i])} for i in picks],
                    {**gate, "mode": "ungated", "proxied": 0, "promoted": len(picks), "explorers": 0})
        count = max(policy.top_k + policy.explore, int(np.ceil(policy.proxy_fraction * len(candidates))))
        top, random_picks = split_top_and_random(mu - policy.kappa * sigma, count, policy.proxy_explore, rng)
        proxied = top + random_picks
        values = self._proxy_scores(state, f"s3:proxy_values:{stage}:0", [candidates[i] for i in proxied])
        self._save_proxies(state, stage, [candidates[i] for i in proxied], values)
        promoted = order_by_value(values, proxied)[: min(policy.top_k, sum(v is not None for v in values))]
        rest = [i for i in range(len(candidates)) if i not in promoted and candidate_fingerprint(candidates[i]) not in self._killed]
        explorers = [rest[int(j)] for j in rng.choice(len(rest), size=min(policy.explore, len(rest)), replace=False)] if rest else []
        chosen = promoted + explorers
        tags = [{"gate": "promoted" if i in promoted else "explorer", "predicted": float(mu[i])} for i in chosen]
        return [candidates[i] for i in chosen], tags, {**gate, "mode": "gated", "proxied": len(proxied), "promoted": len(promoted),
                                                       "explorers": len(explorers)}

    def _initial_stage(self, history, rng, state) -> None:
        """Stage 0: successive halving of the presets on the proxy; the best ``initial_promote`` and one random preset get the expensive metric."""
        started = time.perf_counter()
        seen = {record.fingerprint for record in history}
        pending = [(label, c) for label, c in self._initial if candidate_fingerprint(c) not in seen]
        order, refined = self._halve([c for _, c in pending], state)
        order = [i for i in order if candidate_fingerprint(pending[i][1]) not in self._killed]  # never re-run a process killer
        promoted = order[: self.policy.initial_promote]
        rest = order[self.policy.initial_promote :]
        chosen = promoted + ([rest[int(rng.integers(len(rest)))]] if rest else [])
        tags = [{"origin": "initial", "label": pending[i][0], "gate": "promoted" if i in promoted else "explorer"} for i in chosen]
        gate = {"mode": "initial", "offspring": len(pending), "proxied": len(pending), "refined": refined,
                "promoted": len(promoted), "explorers": len(chosen) - len(promoted)}
        self._save_stage(state, 0, [pending[i][1] for i in chosen], tags, gate, {"predicted": 0, "predictor_s": time.perf_counter() - started})

    def _halve(self, candidates: list[Candidate], state) -> tuple[list[int], int]:
        """Indices best first: all by the proxy, then the best ``initial_shortlist`` re-ranked on twice the samples."""
        from diffsearch.predictors.gating import order_by_value

        policy = self.policy
        _log.info(f"s3 stage 0: proxy of {len(candidates)} presets on {policy.proxy_samples} samples")
        values = self._proxy_scores(state, "s3:proxy_values:0:0", candidates)
        self._save_proxies(state, 0, candidates, values)  # one fidelity in the pretraining pool: the first round only
        order = order_by_value(values, range(len(values)))
        shortlist = [i for i in order[: policy.initial_shortlist] if values[i] is not None]
        if len(shortlist) <= policy.initial_promote:
            return order, 0
        _log.info(f"s3 stage 0: best {len(shortlist)} presets again on {2 * policy.proxy_samples} samples")
        refined = self._proxy_scores(state, "s3:proxy_values:0:1", [candidates[i] for i in shortlist], samples=2 * policy.proxy_samples)
        best = order_by_value(refined, shortlist)
        return best + [i for i in order if i not in best], len(shortlist)

    def _save_stage(self, state, stage: int, queue, tags, gate, stats) -> None:
        self._set(state, f"s3:queue:{stage}", queue)
        self._set(state, f"s3:tags:{stage}", tags)
        self._set(state, f"s3:gate:{stage}", {"stage": stage, **gate})
        self._set(state, f"s3:stats:{stage}", stats)
        self._set(state, "s3:stage", stage)

    def _save_proxies(self, state, stage: int, candidates, values) -> None:
        """The stage's proxy labels as ``s3:proxy:<stage>`` (the pretraining set; idempotent on resume)."""
        new = [{"candidate": c, "value": v, "stage": stage} for c, v in zip(candidates, values) if v is not None]
        self._set(state, f"s3:proxy:{stage}", new)

    def _proxy_pool(self, state, stage: int) -> list[dict[str, Any]]:
        """Every stage's proxy labels before ``stage`` (and a study's pre-resume-exact ``s3:proxy`` list)."""
        return (self._get(state, "s3:proxy") or []) + [p for k in range(stage) for p in self._get(state, f"s3:proxy:{k}") or []]

    def _predict(self, done: list[Record], candidates: list[Candidate], state, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of the registered predictor, pretrained on every proxy label so far, fine-tuned on ``done``."""
        from diffsearch.predictors.pretrain import train_predictor

        proxies = self._proxy_pool(state, stage)
        if not done and not proxies:  # nothing succeeded yet: no labels to learn from, every candidate ranks alike
            return np.zeros(len(candidates)), np.zeros(len(candidates))
        labelled = (self._encode([r.candidate for r in done]), np.asarray([r.value for r in done]), np.full(len(done), self._nfe()))
        pool = (self._encode([p["candidate"] for p in proxies]), np.asarray([p["value"] for p in proxies]), np.full(len(proxies), self._nfe())) if proxies else None
        predictor = train_predictor(self.predictor, labelled, pool, seed=self.seed)
        features = self._encode(candidates)
        std = predictor.predict_std(features)
        return predictor.predict(features), np.zeros(len(candidates)) if std is None else std

    def _nfe(self) -> int:
        return int(self.space.budget.value) if self.space.budget.unit == "nfe" else 0


class OptunaStrategy(Strategy):
    """One of Optuna's samplers through ask/tell over the space's fixed parameter names (each keeps a
    Pareto front itself in a multi-objective study)."""

    several_objectives = True

    def distributions(self, history):
        return None if self.pending_initial(history) is not None else self.space.distributions()

    def next_candidate(self, history, params, rng, state):
        return self.space.from_params(params), {"origin": type(self).__name__}


@STRATEGIES.register("tpe")
class TPEStrategy(OptunaStrategy):
    """Optuna's multivariate TPE."""

    Options = StartupOptions

    def optuna_sampler(self):
        import optuna

        return optuna.samplers.TPESampler(seed=self.seed, multivariate=True, n_startup_trials=int(self.options.get("startup", 10)))


@STRATEGIES.register("gp")
class GPStrategy(OptunaStrategy):
    """Optuna's Gaussian-process Bayesian optimisation (slow in many dimensions)."""

    Options = StartupOptions

    def optuna_sampler(self):
        import optuna

        return optuna.samplers.GPSampler(seed=self.seed, n_startup_trials=int(self.options.get("startup", 10)))


@STRATEGIES.register("nsga2")
class NSGA2Strategy(OptunaStrategy):
    """Optuna's NSGA-II genetic algorithm: non-dominated sorting over every objective (one: the metric)."""

    Options = PopulationOptions

    def optuna_sampler(self):
        import optuna

        return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=int(self.options.get("population", 20)))
