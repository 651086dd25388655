"""Evaluate one schedule on one model: sample held-out noise, then every requested metric.

A metric is a function ``(EvalContext) -> float`` registered in ``METRICS`` under the name
users pass to ``--metric``. Non-finite samples make a failed evaluation, never a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.frechet import frechet_distance, gaussian_moments
from diffsearch.evaluators.noise import HELDOUT_SEED, noise_set
from diffsearch.evaluators.reference import sample_batched, teacher_samples
from diffsearch.models.denoiser import Denoiser
from diffsearch.registry import Registry
from diffsearch.solvers.schedule import Schedule

METRICS: Registry[Callable[["EvalContext"], float]] = Registry("metric")


@dataclass
class EvalContext:
    """What a metric may read: the samples, the noise they came from, and a lazy teacher."""

    model: Denoiser
    schedule: Schedule
    samples: torch.Tensor
    noise: torch.Tensor
    labels: torch.Tensor | None
    guidance: float | None
    noise_key: Any
    reference: str | None = None
    _teacher: torch.Tensor | None = field(default=None, repr=False)

    def teacher(self) -> torch.Tensor:
        if self._teacher is None:
            self._teacher = teacher_samples(self.model, self.schedule, self.noise, self.labels, self.guidance, self.noise_key)
        return self._teacher


@METRICS.register("teacher_error")
def teacher_error(context: EvalContext) -> float:
    """RMSE to the 1000-step teacher from the same noise (trajectory error)."""
    difference = context.samples.double() - context.teacher().double()
    return float(difference.pow(2).mean().sqrt())


@METRICS.register("frechet_exact")
def frechet_exact(context: EvalContext) -> float:
    """Frechet distance of the samples to the exact marginal at the final time (models with ``truth``)."""
    truth = getattr(context.model, "truth", None)
    if truth is None:
        raise DiffsearchError(f"metric frechet_exact needs a model with exact moments (gmm); {context.model.name!r} has none")
    t_final = context.schedule.timesteps[-1]
    ns = context.model.noise_schedule
    mean, covariance = truth.moments(float(ns.alpha(t_final)), float(ns.sigma(t_final)))
    sample_mean, sample_covariance = gaussian_moments(context.samples.reshape(len(context.samples), -1).double().numpy())
    return frechet_distance(sample_mean, sample_covariance, mean.numpy(), covariance.numpy())


def _image_reference(context: EvalContext):
    """Reference statistics (from --reference, else the model's held-out data) and the extractor name."""
    from diffsearch.evaluators import image_metrics

    extractor = getattr(context.model, "feature_extractor", "raw")
    if context.reference:
        return image_metrics.load_reference(context.reference, extractor), extractor
    return image_metrics.reference_stats(context.model, extractor), extractor


def _images(context: EvalContext) -> torch.Tensor:
    """Samples in data space (latent models decode first), clamped to the model's ``data_range``."""
    decode = getattr(context.model, "decode", None)
    images = decode(context.samples) if decode is not None else context.samples
    data_range = getattr(context.model, "data_range", None)
    return images.clamp(*data_range) if data_range is not None else images


@METRICS.register("fid")
def fid(context: EvalContext) -> float:
    """FID against the reference data in the model's feature space (digits: our classifier)."""
    from diffsearch.evaluators import image_metrics

    reference, extractor = _image_reference(context)
    return image_metrics.fid(_images(context), reference, extractor)


@METRICS.register("kid")
def kid(context: EvalContext) -> float:
    """KID (unbiased polynomial-kernel MMD^2, mean over subsets) against the reference data."""
    from diffsearch.evaluators import image_metrics

    reference, extractor = _image_reference(context)
    return image_metrics.kid(_images(context), reference, extractor)[0]


def default_metrics(model: Denoiser, reference: str | None = None) -> list[str]:
    """gmm: exact Frechet + teacher error; models with reference data: FID, KID; otherwise teacher error."""
    if getattr(model, "truth", None) is not None:
        return ["frechet_exact", "teacher_error"]
    if reference or getattr(model, "reference_data", None) is not None:
        return ["fid", "kid"]
    return ["teacher_error"]


def evaluate(
    model: Denoiser,
    schedule: Schedule,
    *,
    samples: int = 2000,
    seed: int = HELDOUT_SEED,
    guidance: float | None = None,
    metrics: list[str] | None = None,
    batch_size: int = 2048,
    reference: str | None = None,
    cache: Any = None,
    on_batch: Any = None,
) -> dict[str, Any]:
    """Sample ``samples`` held-out noises with ``schedule`` and compute ``metrics`` (defaults per model).

    Returns a flat dict: ``status`` ("ok" or "failed"), ``nfe``, ``samples``, ``seed``, ``wall_time_s``
    (sampling only), ``seconds_per_sample``, and one value per metric. With an ``EvaluationCache``,
    a schedule already evaluated with the same model and settings is not evaluated again
    (the result then has ``cached: True``).
    """
    metrics = metrics or default_metrics(model, reference)
    functions = {name: METRICS.get(name) for name in metrics}
    key = None
    if cache is not None:
        from diffsearch.evaluators.cache import cache_key

        spec = {"metrics": metrics, "samples": samples, "seed": seed, "guidance": guidance, "reference": reference}
        key = cache_key(schedule, model.fingerprint, spec)
        hit = cache.get(key)
        if hit is not None:
            return {**hit, "cached": True}
    result = _evaluate(model, schedule, functions, samples, seed, guidance, batch_size, reference, on_batch)
    if cache is not None:
        cache.put(key, result)
    return result


def _evaluate(model, schedule, functions, samples, seed, guidance, batch_size, reference, on_batch=None) -> dict[str, Any]:
    """Sample the noise set and compute every metric (no caching)."""
    metrics = list(functions)
    x_T, labels = noise_set(model, samples, seed)
    cond = labels if guidance is not None or model.num_classes else None
    start = time.perf_counter()
    output = sample_batched(model, schedule, x_T, cond, guidance, batch_size, on_batch)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {
        "status": "ok", "nfe": schedule.nfe, "samples": samples, "seed": seed,
        "wall_time_s": wall, "seconds_per_sample": wall / samples,
    }
    if not torch.isfinite(output).all():
        return {**result, "status": "failed", "error": "non-finite samples (the schedule diverged)"}
    if metrics == ["teacher_error"] and reference is None and getattr(model, "truth", None) is None:
        result["note"] = "no reference data: judged by teacher_error"
    context = EvalContext(model, schedule, output, x_T, cond, guidance, noise_key=("noise", seed, samples), reference=reference)
    for name, function in functions.items():
        result[name] = function(context)
    return result
