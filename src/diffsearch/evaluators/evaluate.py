"""Evaluate one sampling plan (or schedule) on one model: sample held-out noise, then every requested metric.

A metric is a function ``(EvalContext) -> float`` registered in ``METRICS`` under the name
users pass to ``--metric``. Non-finite samples make a failed evaluation, never a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.frechet import frechet_distance, gaussian_moments
from diffsearch.evaluators.noise import HELDOUT_SEED, noise_set
from diffsearch.evaluators.reference import sample_batched
from diffsearch.models.denoiser import Denoiser
from diffsearch.registry import Registry
from diffsearch.solvers.plan import Plan, as_plan
from diffsearch.solvers.schedule import Schedule

METRICS: Registry[Callable[["EvalContext"], float]] = Registry("metric")
#: bumped when a metric's definition changes, so cached evaluations of the old definition are not reused.
OBJECTIVE_VERSION = 2


TEACHER_REFERENCE_SAMPLES = 4000
#: samples beyond the data range by more than this share of its width count as out of range (|x| > 1.5 on [-1, 1]).
OUT_OF_RANGE_MARGIN = 0.25
#: a candidate with more than this fraction of out-of-range samples is a failed evaluation.
MAX_OUT_OF_RANGE = 0.01
TEACHER_METRICS = ("fd_teacher", "kid_teacher")
REAL_METRICS = ("fid", "kid")


@dataclass
class EvalContext:
    """What a metric may read: the samples, the noise they came from, and lazily the teacher and references.

    ``schedule`` is the candidate's solver schedule and ``plan`` its whole plan; the teacher always runs the full
    base network (``teacher_set`` samples a schedule), never the candidate's network configuration."""

    model: Denoiser
    schedule: Schedule
    samples: torch.Tensor
    noise: torch.Tensor
    labels: torch.Tensor | None
    guidance: float | None
    seed: int
    reference: str | None = None
    features: str | None = None
    teacher_samples: int = TEACHER_REFERENCE_SAMPLES
    info: dict[str, Any] = field(default_factory=dict)
    plan: Plan | None = None

    def teacher(self) -> torch.Tensor:
        """The teacher from the same noise, at the candidate's end time (dense output)."""
        from diffsearch.evaluators.teacher import teacher_set

        teacher = teacher_set(self.model, self.seed, len(self.samples), self.guidance, dense=True)
        return teacher.at(self.model, self.schedule.timesteps[-1])

    def features_for(self, metric: str) -> str:
        return self.features or default_features(self.model, metric)


@METRICS.register("teacher_error")
def teacher_error(context: EvalContext) -> float:
    """RMSE to the converged teacher from the same noise at the same end time (trajectory error)."""
    difference = context.samples.double() - context.teacher().double()
    return float(difference.pow(2).mean().sqrt())


@METRICS.register("frechet_exact")
def frechet_exact(context: EvalContext) -> float:
    """Frechet distance of the samples to the exact marginal at the final time (models with ``truth``)."""
    truth = context.model.truth
    if truth is None:
        raise DiffsearchError(f"metric frechet_exact needs a model with exact moments (gmm); {context.model.name!r} has none")
    t_final = context.schedule.timesteps[-1]
    ns = context.model.noise_schedule
    mean, covariance = truth.moments(float(ns.alpha(t_final)), float(ns.sigma(t_final)))
    sample_mean, sample_covariance = gaussian_moments(context.samples.reshape(len(context.samples), -1).double().numpy())
    context.info["frechet_exact"] = {"reference": "exact moments of the noised mixture", "features": "raw"}
    return frechet_distance(sample_mean, sample_covariance, mean.numpy(), covariance.numpy())


def _real_reference(context: EvalContext, metric: str):
    """Real-data statistics (``--reference``, else the model's reference data) in the metric's feature space."""
    from diffsearch.evaluators import image_metrics

    features = context.features_for(metric)
    if context.reference:
        stats = image_metrics.load_reference(context.reference, features)
    else:
        stats = image_metrics.reference_stats(context.model, features)
    context.info[metric] = {"features": features, "reference": stats.source}
    return stats, features


def _images(context: EvalContext) -> torch.Tensor:
    """Samples in data space (latent models decode first); never clamped: broken samples must count."""
    decode = context.model.decode
    return decode(context.samples) if decode is not None else context.samples


@METRICS.register("fid")
def fid(context: EvalContext) -> float:
    """FID against real reference data in the chosen feature space (digits: the classifier, train split)."""
    from diffsearch.evaluators import image_metrics

    reference, features = _real_reference(context, "fid")
    return image_metrics.fid(_images(context), reference, features)


@METRICS.register("kid")
def kid(context: EvalContext) -> float:
    """KID (unbiased polynomial-kernel MMD^2, mean over subsets) against real reference data."""
    from diffsearch.evaluators import image_metrics

    reference, features = _real_reference(context, "kid")
    return image_metrics.kid(_images(context), reference, features)[0]


def teacher_reference(model: Denoiser, features: str, samples: int, guidance: float | None, progress=None):
    """Statistics of the teacher reference set (noise seed ``TEACHER_SEED``) in ``features``, computed once."""
    from diffsearch.evaluators import image_metrics
    from diffsearch.evaluators.teacher import TEACHER_SEED, teacher_set

    key = (model.fingerprint, features, samples, guidance)
    if key not in _TEACHER_STATS:
        teacher = teacher_set(model, TEACHER_SEED, samples, guidance, progress=progress)
        images = teacher.states[-1]
        images = model.decode(images) if model.decode is not None else images
        extracted = image_metrics.extract_features(_extractor(features), images)
        source = f"teacher ({teacher.info['steps']} steps) on noise seed {TEACHER_SEED}, {samples} samples"
        _TEACHER_STATS[key] = image_metrics.ReferenceStats.from_features(extracted, source=source)
    return _TEACHER_STATS[key]


_TEACHER_STATS: dict[tuple, Any] = {}


def _extractor(features: str):
    from diffsearch.evaluators.features import load_feature_extractor

    return load_feature_extractor(features)


def _teacher_features(context: EvalContext, metric: str):
    from diffsearch.evaluators import image_metrics

    features = context.features_for(metric)
    reference = teacher_reference(context.model, features, context.teacher_samples, context.guidance)
    context.info[metric] = {"features": features, "reference": reference.source}
    return image_metrics.extract_features(_extractor(features), _images(context)), reference


@METRICS.register("fd_teacher")
def fd_teacher(context: EvalContext) -> float:
    """Frechet distance to the model's own converged samples (teacher, separate noise) in the chosen features."""
    from diffsearch.evaluators import image_metrics

    features, reference = _teacher_features(context, "fd_teacher")
    return image_metrics.fid_from_features(features, reference)


@METRICS.register("kid_teacher")
def kid_teacher(context: EvalContext) -> float:
    """KID to the model's own converged samples (teacher, separate noise) in the chosen features."""
    from diffsearch.evaluators import image_metrics

    features, reference = _teacher_features(context, "kid_teacher")
    return image_metrics.kid_from_features(features, reference)[0]


def default_features(model: Denoiser, metric: str) -> str:
    """Real-data metrics: the model's feature extractor; teacher metrics: the model's teacher features (raw by default)."""
    if metric in REAL_METRICS:
        return model.feature_extractor or "raw"
    return model.teacher_features or "raw"


def default_metrics(model: Denoiser, reference: str | None = None) -> list[str]:
    """The model's declared objective first (chosen by benchmarks/discrimination.py), then its other metrics.

    gmm: exact Frechet; other models: Frechet distance to the teacher (raw features), with real-data FID
    and KID beside it when there is reference data; teacher error for models too large for raw features.
    """
    declared = model.objective
    if model.truth is not None:
        metrics = ["frechet_exact", "fd_teacher"]
    elif model.data_shape is not None and int(np.prod(model.data_shape)) > 4096 and not model.teacher_features:
        metrics = ["teacher_error"]
    else:
        metrics = ["fd_teacher"]
    if reference or model.reference_data is not None:
        metrics += ["fid", "kid"]
    if declared:
        metrics = [declared] + [m for m in metrics if m != declared]
    return metrics


def excursions(model: Denoiser, samples: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Per sample, the largest distance beyond the model's data range (0 inside it), and the margin past which it counts."""
    low, high = model.data_range
    flat = samples.reshape(len(samples), -1)
    return torch.maximum(flat - high, low - flat).clamp_min(0.0).amax(dim=1), OUT_OF_RANGE_MARGIN * (high - low)


def out_of_range(model: Denoiser, samples: torch.Tensor) -> dict[str, float] | None:
    """Share of samples with any value beyond the data range by more than the margin, and the largest excursion."""
    if model.data_range is None:
        return None
    excess, margin = excursions(model, samples)
    return {"out_of_range": float((excess > margin).double().mean()), "max_excursion": float(excess.max()) if len(excess) else 0.0,
            "out_of_range_margin": margin}


def evaluate(
    model: Denoiser,
    schedule: Plan | Schedule,
    *,
    samples: int = 2000,
    seed: int = HELDOUT_SEED,
    guidance: float | None = None,
    metrics: list[str] | None = None,
    batch_size: int = 2048,
    reference: str | None = None,
    features: str | None = None,
    cache: Any = None,
    on_batch: Any = None,
    max_out_of_range: float = MAX_OUT_OF_RANGE,
) -> dict[str, Any]:
    """Sample ``samples`` held-out noises with ``schedule`` (a Plan, or a Schedule: the full network) and
    compute ``metrics`` (defaults per model).

    Returns a flat dict: ``status`` ("ok" or "failed"), ``nfe``, ``samples``, ``seed``, ``wall_time_s``
    (sampling only), ``seconds_per_sample``, the cost ``macs`` / ``macs_ratio`` / ``seconds`` (``evaluation_cost``), ``out_of_range`` / ``max_excursion`` (models with a data
    range; more than ``max_out_of_range`` fails the evaluation), one value per metric, and ``metric_info``
    (each metric's feature space and reference). With an ``EvaluationCache``,
    a schedule already evaluated with the same model and settings is not evaluated again
    (the result then has ``cached: True``); the key is the plan's (a full-network plan keeps its schedule's).
    """
    plan = as_plan(schedule)
    metrics = metrics or default_metrics(model, reference)
    functions = {name: METRICS.get(name) for name in metrics}
    key = None
    if cache is not None:
        from diffsearch.evaluators.cache import cache_key

        spec = {"metrics": metrics, "samples": samples, "seed": seed, "guidance": guidance, "reference": reference,
                "features": features, "max_out_of_range": max_out_of_range, "objective": OBJECTIVE_VERSION}
        key = cache_key(plan, model.fingerprint, spec)
        hit = cache.get(key)
        if hit is not None:
            return _with_cost(model, plan, guidance, {**hit, "cached": True})
    settings = {"seed": seed, "guidance": guidance, "reference": reference, "features": features, "max_out_of_range": max_out_of_range}
    result = _evaluate(model, plan, functions, samples, settings, batch_size, on_batch)
    if cache is not None:
        cache.put(key, result)
    return _with_cost(model, plan, guidance, result)


def _with_cost(model: Denoiser, plan: Plan, guidance: float | None, result: dict[str, Any]) -> dict[str, Any]:
    """The record with the plan's cost (counted MACs are deterministic, so cached records get them too)."""
    from diffsearch.evaluators.cost import evaluation_cost

    seconds = result.get("seconds_per_sample")
    return {**result, **evaluation_cost(model, plan, guidance, seconds)} if seconds is not None else result


def _evaluate(model, plan: Plan, functions, samples, settings, batch_size, on_batch=None) -> dict[str, Any]:
    """Sample the noise set with the plan, check the data range, and compute every metric (no caching)."""
    seed, guidance = settings["seed"], settings["guidance"]
    x_T, labels = noise_set(model, samples, seed)
    cond = labels if guidance is not None or model.num_classes else None
    start = time.perf_counter()
    output = sample_batched(model, plan, x_T, cond, guidance, batch_size, on_batch)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {
        "status": "ok", "nfe": plan.nfe, "samples": samples, "seed": seed,
        "wall_time_s": wall, "seconds_per_sample": wall / samples,
    }
    if not torch.isfinite(output).all():
        return {**result, "status": "failed", "error": "non-finite samples (the schedule diverged)"}
    excursions = out_of_range(model, output)
    if excursions is not None:
        result.update(excursions)
        if excursions["out_of_range"] > settings["max_out_of_range"]:
            share = f"{100 * excursions['out_of_range']:.2g}%"
            return {**result, "status": "failed", "error": f"{share} of samples lie outside the data range {model.data_range} by more than "
                    f"{excursions['out_of_range_margin']:g} (at most {100 * settings['max_out_of_range']:g}% allowed)"}
    values, info = metric_values(model, plan, output, x_T, cond, settings, list(functions))
    return {**result, **values, "metric_info": info}


def metric_values(model: Denoiser, schedule: Plan | Schedule, output: torch.Tensor, x_T: torch.Tensor, cond: Any,
                  settings: dict[str, Any], metrics: list[str]) -> tuple[dict[str, float], dict[str, Any]]:
    """Each metric of samples already drawn (``settings``: seed, guidance, reference, features), and what each compared against."""
    plan = as_plan(schedule)
    context = EvalContext(model, plan.schedule, output, x_T, cond, settings["guidance"], settings["seed"],
                          reference=settings.get("reference"), features=settings.get("features"), plan=plan)
    values = {name: METRICS.get(name)(context) for name in metrics}
    return values, context.info
