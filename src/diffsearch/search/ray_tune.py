"""Ray Tune adapter: diffsearch spaces and strategies inside ``tune.Tuner``.

- ``DiffsearchSearcher``: a Tune ``Searcher`` that proposes candidates with a diffsearch strategy
  (evolution, s3, tpe, ...) over a diffsearch space, keeping its history in an in-memory Optuna study.
- ``tune_search_space``: a space's fixed-name Optuna distributions as a Tune ``param_space``
  (for Tune's own searchers; ``space.from_params(config)`` turns a sampled config into a candidate).
- ``make_trainable``: a function trainable that evaluates ``config["candidate"]`` (or the params)
  with a model loaded once per Tune worker process, and reports the objective.
- ``from_run_config``: all three from a ``search run`` config.

Import this module only when Ray is wanted: it imports ``ray.tune`` (``pip install 'diffsearch[ray]'``).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

try:
    from ray import tune
    from ray.tune.search import Searcher
except ImportError as error:  # pragma: no cover - depends on the extra
    raise ImportError("diffsearch.search.ray_tune needs Ray Tune: pip install 'diffsearch[ray]'") from error

from diffsearch.search import storage
from diffsearch.search.strategies import STRATEGIES
from diffsearch.spaces.base import candidate_fingerprint

if TYPE_CHECKING:
    from diffsearch.search.config import RunConfig
    from diffsearch.spaces.base import SearchSpace

_EVALUATORS: dict[str, Any] = {}


class DiffsearchSearcher(Searcher):
    """Propose candidates with a diffsearch strategy; Tune trials get ``{"candidate", "tags"}``.

    Example:
        >>> searcher = DiffsearchSearcher(space, "evolution", metric="frechet_exact")  # doctest: +SKIP
        >>> tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=20)).fit()  # doctest: +SKIP
    """

    def __init__(self, space: SearchSpace, strategy: str = "evolution", metric: str | None = None, mode: str = "min",
                 seed: int = 0, strategy_options: dict[str, Any] | None = None) -> None:
        import optuna

        super().__init__(metric=metric, mode=mode)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.seed = seed
        self.strategy = STRATEGIES.get(strategy)(space, seed=seed, **(strategy_options or {}))
        self.study = optuna.create_study(sampler=self.strategy.optuna_sampler(), direction="minimize")
        self.live: dict[str, Any] = {}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec) -> bool:
        """Accept ``metric``/``mode`` from ``tune.TuneConfig``."""
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any]:
        """Ask the study for a trial and the strategy for its candidate (as ``next_trial`` does)."""
        history = storage.history(self.study)
        distributions = self.strategy.distributions(history)
        trial = self.study.ask(distributions) if distributions else self.study.ask()
        rng = np.random.default_rng([self.seed, trial.number])
        candidate, tags = self.strategy.propose(history, trial.params if distributions else None, rng, storage.state_of(self.study))
        for key, value in (("candidate", candidate), ("fingerprint", candidate_fingerprint(candidate)), ("tags", tags)):
            trial.set_user_attr(key, storage.json_safe(value))
        self.live[trial_id] = trial
        return {"candidate": candidate, "tags": tags}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Tell the objective (negated for ``mode="max"``); errors and non-finite values fail the trial."""
        import optuna

        trial = self.live.pop(trial_id, None)
        if trial is None:
            return
        value = (result or {}).get(self.metric)
        if error or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        self.study.tell(trial, float(value) if self.mode != "max" else -float(value))


def tune_search_space(space: SearchSpace) -> dict[str, Any]:
    """The space's Optuna distributions (fixed names) as Tune sampling domains."""
    return {name: _tune_domain(distribution) for name, distribution in space.distributions().items()}


def _tune_domain(distribution) -> Any:
    """One Optuna distribution as a Tune domain (the inverse of Ray's OptunaSearch conversion)."""
    import optuna.distributions as d

    if isinstance(distribution, d.CategoricalDistribution):
        return tune.choice(list(distribution.choices))
    if isinstance(distribution, d.IntDistribution):
        if distribution.log:
            return tune.lograndint(distribution.low, distribution.high + 1)
        if distribution.step != 1:
            return tune.qrandint(distribution.low, distribution.high, distribution.step)
        return tune.randint(distribution.low, distribution.high + 1)
    if isinstance(distribution, d.FloatDistribution):
        if distribution.log:
            return tune.loguniform(distribution.low, distribution.high)
        if distribution.step is not None:
            return tune.quniform(distribution.low, distribution.high, distribution.step)
        return tune.uniform(distribution.low, distribution.high)
    raise TypeError(f"no Tune domain for {type(distribution).__name__}")


def make_trainable(settings: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A function trainable: evaluate one candidate and ``tune.report`` the objective (NaN if it failed).

    ``settings`` is ``executors.evaluation_settings``'s dict (model, space, budget, metric, samples, ...).
    """
    settings = json.loads(json.dumps(settings))
    metric = settings["metric"]

    def trainable(config: dict[str, Any]) -> None:
        evaluator = _evaluator(settings)
        candidate = config.get("candidate") or evaluator.space.from_params(config)
        result = evaluator.evaluate(candidate)
        value = result.get(metric)
        ok = result["status"] == "ok" and isinstance(value, (int, float)) and math.isfinite(value)
        tune.report({metric: float(value) if ok else math.nan, "status": result["status"],
                     "error": result.get("error", ""), "candidate": json.dumps(candidate, sort_keys=True)})

    return trainable


def _evaluator(settings: dict[str, Any]):
    """One Evaluator (model loaded once) per Tune worker process and settings."""
    from diffsearch.search.executors import Evaluator

    key = json.dumps(settings, sort_keys=True)
    if key not in _EVALUATORS:
        _EVALUATORS[key] = Evaluator(settings)
    return _EVALUATORS[key]


def from_run_config(config: RunConfig | dict[str, Any]) -> tuple[DiffsearchSearcher, Callable[[dict[str, Any]], None], str]:
    """(searcher, trainable, metric) for the search a ``search run`` config describes (no study is opened)."""
    from diffsearch.search.config import RunConfig
    from diffsearch.search.executors import evaluation_settings
    from diffsearch.search.runner import resolve, sample_counts

    config = config if isinstance(config, RunConfig) else RunConfig.model_validate(config)
    model, space, metric = resolve(config)
    settings = evaluation_settings(config, space, metric, sample_counts(model, config)[0])
    searcher = DiffsearchSearcher(space, config.strategy, metric=metric, mode="min", seed=config.seed,
                                  strategy_options=config.strategy_options)
    return searcher, make_trainable(settings), metric
