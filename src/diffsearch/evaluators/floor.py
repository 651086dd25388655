"""The noise floor of a metric at a sample count, and its seed spread (issue 18).

The floor is the metric of a perfect sampler at the same sample count: the teacher on separate
noise sets (``FLOOR_SEED + k``) for the teacher metrics, real data for real-data metrics (bootstrap
draws of the model's held-out images), exact samples for ``frechet_exact``. Over ``seeds`` such sets
its mean is the floor and its standard deviation the seed spread at that count: a difference
between two candidates below twice that spread is a tie. Measured once per (model, metric,
features, count) and cached on disk beside the evaluation cache.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch

from diffsearch.evaluators.evaluate import OBJECTIVE_VERSION, REAL_METRICS, default_features, metric_values
from diffsearch.evaluators.reference import teacher_schedule
from diffsearch.errors import DiffsearchError
from diffsearch.files import atomic_write_text
from diffsearch.evaluators.teacher import FLOOR_SEED, MEMORY, cache_file, cache_key, converged_steps, teacher_set
from diffsearch.models.denoiser import Denoiser

FLOOR_SEEDS = 5
#: floor sets measured by `search run`, `search eval` and `search baselines` (benchmarks use FLOOR_SEEDS)
RUN_FLOOR_SEEDS = 3


def _floor_samples(model: Denoiser, metric: str, n: int, k: int, guidance: float | None, progress=None):
    """(samples, sampler description) of the k-th perfect-sampler set for ``metric``."""
    ns = model.noise_schedule
    if metric in REAL_METRICS:
        source = model.floor_data or model.reference_data
        if source is None:
            raise DiffsearchError(f"the noise floor of {metric} bootstraps the model's real images; model {model.name!r} declares no "
                                  "reference_data or floor_data (use --metric teacher_error or fd_teacher)")
        data = source()
        images = data[0] if isinstance(data, (tuple, list)) else data
        rows = torch.from_numpy(np.random.default_rng(FLOOR_SEED + k).integers(0, len(images), n))
        return images[rows], f"bootstrap draws of {len(images)} real images"
    if metric == "frechet_exact":
        t = float(ns.default_t_end)
        generator = torch.Generator().manual_seed(FLOOR_SEED + k)
        x0 = model.truth.sample(n, generator)
        return float(ns.alpha(t)) * x0 + float(ns.sigma(t)) * torch.randn(x0.shape, dtype=x0.dtype, generator=generator), "exact samples"
    teacher = teacher_set(model, FLOOR_SEED + k, n, guidance, progress=progress)
    return teacher.states[-1], f"teacher ({teacher.info['steps']} steps)"


def noise_floor(model: Denoiser, metric: str, samples: int, *, features: str | None = None, guidance: float | None = None,
                reference: str | None = None, seeds: int = FLOOR_SEEDS, progress=None) -> dict[str, Any]:
    """``{"floor", "std", "samples", "seeds", "noise", "sampler"}`` of ``metric`` at ``samples``, cached on disk."""
    if metric == "teacher_error":  # paired with the teacher on the candidate's own noise: zero by construction
        return {"metric": metric, "features": None, "floor": 0.0, "std": 0.0, "samples": samples, "seeds": 0,
                "noise": "the candidate's own noise (paired)", "sampler": "teacher"}
    features = features or default_features(model, metric)
    teacher_steps = converged_steps(model, guidance).steps if metric not in (*REAL_METRICS, "frechet_exact") else None
    key = cache_key("floor", OBJECTIVE_VERSION, model.fingerprint, metric, features, samples, guidance, reference, seeds, teacher_steps)
    if key in MEMORY:
        return MEMORY[key]
    path = cache_file(model, key, ".json")
    if path is not None and path.is_file():
        MEMORY[key] = json.loads(path.read_text())
        return MEMORY[key]
    values, sampler = [], ""
    schedule = teacher_schedule(model, float(model.noise_schedule.t_max), float(model.noise_schedule.default_t_end), 1)
    for k in range(seeds):
        output, sampler = _floor_samples(model, metric, samples, k, guidance, progress)
        settings = {"seed": FLOOR_SEED + k, "guidance": guidance, "reference": reference, "features": features}
        values.append(metric_values(model, schedule, output, None, None, settings, [metric])[0][metric])
    result = {"metric": metric, "features": features, "floor": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if seeds > 1 else 0.0,
              "samples": samples, "seeds": seeds, "noise": f"floor noise seeds {FLOOR_SEED}..{FLOOR_SEED + seeds - 1}", "sampler": sampler}
    if path is not None:
        atomic_write_text(path, json.dumps(result))
    MEMORY[key] = result
    return result
