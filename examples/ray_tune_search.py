"""Search with Ray Tune: a diffsearch strategy as a Tune ``Searcher``, and a diffsearch space as a Tune
``param_space`` for Tune's own searchers (runs offline on a local Ray cluster; needs ``diffsearch[ray]``).

    python examples/ray_tune_search.py
"""

from __future__ import annotations

import tempfile

import ray
from ray import tune

from diffsearch.search.ray_tune import from_run_config, tune_search_space

workdir = tempfile.mkdtemp()
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"DIFFSEARCH_THREADS": "1"}})

# 1. The same search `search run` would do (model, space, budget, strategy), proposed by a diffsearch
#    strategy inside Tune: the searcher hands each trial {"candidate": ..., "tags": ...}; the trainable
#    loads the model once per Tune worker and reports the objective (NaN for a failed candidate).
config = {"model": "gmm", "space": "timesteps", "solver": "dpmpp_2m", "budget": "5nfe", "strategy": "evolution",
          "search_samples": 2000, "cache": False}
searcher, trainable, metric = from_run_config(config)
tuner = tune.Tuner(trainable,
                   tune_config=tune.TuneConfig(search_alg=searcher, metric=metric, mode="min", num_samples=12,
                                               max_concurrent_trials=2),
                   run_config=tune.RunConfig(name="diffsearch-evolution", storage_path=f"{workdir}/tune", verbose=0))
best = tuner.fit().get_best_result()
print(f"evolution via Tune: best {metric} = {best.metrics[metric]:.4g}; timesteps {best.config['candidate']['timesteps']}")

# 2. The space's fixed-name distributions as a Tune param_space, sampled by Tune's default searcher
#    (any Tune searcher works, e.g. OptunaSearch); the trainable turns params into a candidate.
space = searcher.strategy.space
tuner = tune.Tuner(trainable, param_space=tune_search_space(space),
                   tune_config=tune.TuneConfig(metric=metric, mode="min", num_samples=6, max_concurrent_trials=2),
                   run_config=tune.RunConfig(name="diffsearch-random", storage_path=f"{workdir}/tune", verbose=0))
best = tuner.fit().get_best_result()
print(f"random params via Tune: best {metric} = {best.metrics[metric]:.4g}; candidate {space.from_params(best.config)}")
ray.shutdown()
