"""Float64 coefficients of the USF exponential-integrator update (s3_spec.md sections 2.2-2.5).

Every step is linear in the stored quantities: ``x_t = a x_s + sum_j w_j F_j``, where ``F`` is the
noise or data prediction at evaluated points ``j``. This module computes ``a`` and ``w`` once per
schedule from lambda, alpha and sigma alone; the kernels then only combine tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from diffsearch.solvers.schedule import Derivative, Schedule, Step

_SERIES_TERMS = 24
_INVERSE_FACTORIALS = tuple(1.0 / math.factorial(n) for n in range(_SERIES_TERMS + 8))


def phi(k: int, z: float) -> float:
    """phi_k(z) = sum_j z^j / (j + k)!, by series (Horner) for |z| < 1 and by recurrence otherwise."""
    if abs(z) < 1.0:
        value = 0.0
        for j in range(_SERIES_TERMS - 1, -1, -1):
            value = value * z + _INVERSE_FACTORIALS[j + k]
        return value
    value = math.exp(z)
    for j in range(1, k + 1):
        value = (value - 1.0 / math.factorial(j - 1)) / z
    return value


def scale_factor(derivative: Derivative, z: float, h: float) -> float:
    """R multiplying a derivative estimate (s3_spec.md 3.2.6): bh1, bh2, 1 + c h, 1 + c (e^z - 1), c."""
    if derivative.scale == "none":
        return 1.0
    if derivative.scale == "bh1":
        return 1.0 / (2.0 * phi(2, z))
    if derivative.scale == "bh2":
        return phi(1, z) / (2.0 * phi(2, z))
    if derivative.scale == "linear":
        return 1.0 + derivative.coefficient * h
    if derivative.scale == "exp":
        return 1.0 + derivative.coefficient * math.expm1(z)
    return derivative.coefficient


def difference_weights(deltas: np.ndarray) -> np.ndarray:
    """Rows m-1: weights on (F_j - F_s) estimating F^(m)(lambda_s) from the Taylor system
    F_j - F_s = sum_m delta_j^m / m! F^(m) (s3_spec.md 2.3)."""
    powers = np.arange(1, len(deltas) + 1)
    factorials = np.array([math.factorial(m) for m in powers], dtype=np.float64)
    system = deltas[:, None] ** powers[None, :] / factorials[None, :]
    return np.linalg.inv(system)


@dataclass(frozen=True)
class Update:
    """x_next = x_coefficient * x[start] + sum(weight * F[prediction][index]) over absolute indices."""

    start: int
    x_coefficient: float
    prediction: str
    weights: tuple[tuple[int, float], ...]


def exponential_integrator(
    lambdas: np.ndarray, alphas: np.ndarray, sigmas: np.ndarray, s: int, t: int,
    prediction: str, order: int, derivatives: tuple[tuple[Derivative, tuple[int, ...]], ...],
) -> Update:
    """Order-p Taylor update from point s to time index t in lambda (s3_spec.md 2.2).

    noise: x_t = a_t/a_s x_s - sigma_t sum_k h^{k+1} phi_{k+1}(h) R_k F^(k)
    data:  x_t = s_t/s_s x_s + alpha_t sum_k h^{k+1} phi_{k+1}(-h) R_k F^(k)
    """
    h = lambdas[t] - lambdas[s]
    if prediction == "noise":
        z, c_t = h, -sigmas[t]
        a = alphas[t] / alphas[s]
        base = sigmas[t] - alphas[t] * sigmas[s] / alphas[s] if math.isinf(h) else c_t * math.expm1(h)
    else:
        z, c_t = -h, alphas[t]
        a = sigmas[t] / sigmas[s]
        base = alphas[t] if math.isinf(h) else -c_t * math.expm1(-h)
    weights = {s: base}
    for k, (derivative, points) in enumerate(derivatives, start=1):
        coefficient = c_t * h ** (k + 1) * phi(k + 1, z) * scale_factor(derivative, z, h)
        row = difference_weights(lambdas[list(points)] - lambdas[s])[k - 1]
        for j, w in zip(points, row):
            weights[j] = weights.get(j, 0.0) + coefficient * w
            weights[s] -= coefficient * w
    return Update(s, float(a), prediction, tuple((j, float(w)) for j, w in sorted(weights.items())))


@dataclass(frozen=True)
class StepPlan:
    """A compiled step: the predictor, an optional corrector, and whether it re-evaluates."""

    predictor: Update
    corrector: Update | None
    implicit: bool


def _absolute(points: tuple[int, ...], newest: int) -> tuple[int, ...]:
    return tuple(newest + 1 + p for p in points)


def compile_step(index: int, step: Step, lambdas: np.ndarray, alphas: np.ndarray, sigmas: np.ndarray) -> StepPlan:
    """Coefficients of step ``index`` (relative indices resolved against the evaluated points)."""
    newest, target = index, index + 1
    derivatives = tuple((d, _absolute(d.points, newest)) for d in step.derivatives)
    start = newest + 1 + step.start
    predictor = exponential_integrator(lambdas, alphas, sigmas, start, target, step.prediction, step.order, derivatives)
    if step.corrector is None:
        return StepPlan(predictor, None, False)
    corrector_derivatives = tuple((d, _absolute(d.points, target)) for d in step.corrector.derivatives)
    corrector = exponential_integrator(
        lambdas, alphas, sigmas, start, target, step.prediction, step.corrector.order, corrector_derivatives
    )
    return StepPlan(predictor, corrector, step.corrector.kind == "implicit")


def compile_schedule(schedule: Schedule, noise_schedule) -> tuple[StepPlan, ...]:
    """Every step's float64 coefficients, computed once per (timesteps, steps, noise schedule)."""
    return _compile(schedule.timesteps, schedule.steps, noise_schedule)


@lru_cache(maxsize=512)
def _compile(timesteps: tuple[float, ...], steps: tuple[Step, ...], noise_schedule) -> tuple[StepPlan, ...]:
    t = np.asarray(timesteps, dtype=np.float64)
    lambdas, alphas, sigmas = noise_schedule.lambda_(t), noise_schedule.alpha(t), noise_schedule.sigma(t)
    return tuple(compile_step(i, step, lambdas, alphas, sigmas) for i, step in enumerate(steps))
