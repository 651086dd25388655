"""A torch path of the USF sampler that is differentiable in the logSNR points and scale coefficients.

``solvers.coefficients`` computes every weight once in float64 numpy; here the same exponential-
integrator weights (s3_spec.md 2.2-2.4) are built from torch scalars so that a loss on the final
sample back-propagates to lambda_i (LD3, Tong et al. 2025) and to the ``linear``/``exp``/``constant``
derivative coefficients. The solver's weights, the states and the network (in x by autograd, in its
time input by a forward difference) all carry gradients.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from diffsearch.errors import DiffsearchError
from diffsearch.solvers.schedule import Derivative, Schedule, Step

_TERMS = 24


def phi(k: int, z: torch.Tensor) -> torch.Tensor:
    """phi_k(z) = sum_j z^j / (j + k)!: series for |z| < 1, else the recurrence from e^z."""
    if abs(float(z.detach())) < 1.0:
        value = torch.zeros_like(z)
        for j in range(_TERMS - 1, -1, -1):
            value = value * z + 1.0 / math.factorial(j + k)
        return value
    value = torch.exp(z)
    for j in range(1, k + 1):
        value = (value - 1.0 / math.factorial(j - 1)) / z
    return value


def scale_factor(derivative: Derivative, z: torch.Tensor, h: torch.Tensor, coefficient: torch.Tensor) -> torch.Tensor:
    """R multiplying a derivative estimate: bh1, bh2, 1 + c h, 1 + c (e^z - 1), c (as in coefficients.py)."""
    if derivative.scale == "none":
        return torch.ones_like(z)
    if derivative.scale == "bh1":
        return 1.0 / (2.0 * phi(2, z))
    if derivative.scale == "bh2":
        return phi(1, z) / (2.0 * phi(2, z))
    if derivative.scale == "linear":
        return 1.0 + coefficient * h
    if derivative.scale == "exp":
        return 1.0 + coefficient * torch.expm1(z)
    return coefficient


def difference_rows(deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of the Taylor system F_j - F_s = sum_m delta_j^m / m! F^(m) (rows: derivative orders)."""
    powers = torch.arange(1, len(deltas) + 1, dtype=deltas.dtype)
    factorials = torch.tensor([math.factorial(int(m)) for m in powers], dtype=deltas.dtype)
    return torch.linalg.inv(deltas[:, None] ** powers[None, :] / factorials[None, :])


def integrator_weights(lambdas: torch.Tensor, s: int, t: int, prediction: str,
                       derivatives: list[tuple[Derivative, tuple[int, ...], torch.Tensor]]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """(a, {j: w_j}) of x_t = a x_s + sum_j w_j F_j for the order-p exponential integrator from s to t."""
    alphas, sigmas = torch.sigmoid(2.0 * lambdas).sqrt(), torch.sigmoid(-2.0 * lambdas).sqrt()
    h = lambdas[t] - lambdas[s]
    if prediction == "noise":
        z, c_t, a = h, -sigmas[t], alphas[t] / alphas[s]
        base = c_t * torch.expm1(h)
    else:
        z, c_t, a = -h, alphas[t], sigmas[t] / sigmas[s]
        base = -c_t * torch.expm1(-h)
    weights = {s: base}
    for k, (derivative, points, coefficient) in enumerate(derivatives, start=1):
        factor = c_t * h ** (k + 1) * phi(k + 1, z) * scale_factor(derivative, z, h, coefficient)
        row = difference_rows(lambdas[list(points)] - lambdas[s])[k - 1]
        for j, w in zip(points, row):
            weights[j] = weights.get(j, 0.0) + factor * w
            weights[s] = weights[s] - factor * w
    return a, weights


def _combine(x_s: torch.Tensor, a: torch.Tensor, outputs: dict[int, torch.Tensor], weights: dict[int, torch.Tensor]) -> torch.Tensor:
    x = x_s * float(a) + (a - a.detach()).to(x_s.dtype) * x_s
    for j, w in sorted(weights.items()):  # the sampler's order and float64 scalars, so float32 results match it
        x = x.add(outputs[j], alpha=float(w)) + (w - w.detach()).to(x_s.dtype) * outputs[j]
    return x


def _update(step: Step, start: int, target: int, lambdas: torch.Tensor, coefficients: dict[tuple, torch.Tensor],
            index: int, corrector: bool) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    spec = step.corrector.derivatives if corrector else step.derivatives
    newest = target if corrector else target - 1
    derivatives = [(d, tuple(newest + 1 + p for p in d.points), coefficients[(index, corrector, k)])
                   for k, d in enumerate(spec)]
    return integrator_weights(lambdas, start, target, step.prediction, derivatives)


TIME_STEP = 1e-3  # lambda step of the forward difference of the network in its time input


def differentiable_predict(model: Any, x: torch.Tensor, lambda_: torch.Tensor, cond: Any, guidance: float | None):
    """(eps, x0) at t(lambda), differentiable in x and lambda.

    The network takes its time as a float, so its derivative in lambda is a forward difference
    (one more network call) added as ``(lambda - stop_gradient(lambda)) * d out / d lambda``; it is
    only taken when lambda requires a gradient.
    """
    ns = model.noise_schedule
    value = float(lambda_.detach())
    out = model.network(x, float(ns.inverse_lambda(value)), cond, guidance)
    if x.requires_grad and not out.requires_grad:
        raise DiffsearchError(f"model {model.name!r}: its network returns no gradient (it runs under torch.no_grad); "
                              "LD3 and refine need a network differentiable in x")
    if lambda_.requires_grad and torch.is_grad_enabled():
        with torch.no_grad():
            slope = (model.network(x.detach(), float(ns.inverse_lambda(value + TIME_STEP)), cond, guidance) - out) / TIME_STEP
        out = out + (lambda_ - lambda_.detach()).to(x.dtype) * slope
    alpha, sigma = torch.sigmoid(2.0 * lambda_).sqrt().to(x.dtype), torch.sigmoid(-2.0 * lambda_).sqrt().to(x.dtype)
    if model.prediction_type == "epsilon":
        return out, (x - sigma * out) / alpha
    if model.prediction_type == "sample":
        return (x - alpha * out) / sigma, out
    return alpha * out + sigma * x, alpha * x - sigma * out


def initial_coefficients(schedule: Schedule, dtype: torch.dtype = torch.float64) -> dict[tuple, torch.Tensor]:
    """{(step, is_corrector, derivative): coefficient tensor} for every derivative of the schedule."""
    result = {}
    for i, step in enumerate(schedule.steps):
        for corrector, spec in ((False, step.derivatives), (True, step.corrector.derivatives if step.corrector else ())):
            for k, derivative in enumerate(spec):
                result[(i, corrector, k)] = torch.tensor(derivative.coefficient, dtype=dtype)
    return result


def differentiable_sample(model: Any, schedule: Schedule, lambdas: torch.Tensor, x_T: torch.Tensor, cond: Any = None,
                          guidance: float | None = None, coefficients: dict[tuple, torch.Tensor] | None = None,
                          trajectory: list | None = None) -> torch.Tensor:
    """``diffsearch.sample(model, schedule, x_T)`` with the schedule's times replaced by t(``lambdas``), differentiably.

    ``trajectory``, when given, receives (x_i, eps_i) at every evaluated point before the last.
    """
    coefficients = initial_coefficients(schedule) if coefficients is None else coefficients
    if schedule.first_step == "model":
        eps, x0 = differentiable_predict(model, x_T, lambdas[0], cond, guidance)
    else:
        from diffsearch.solvers.sampler import first_evaluation

        eps, x0 = first_evaluation(model, schedule.first_step, x_T, float(model.noise_schedule.inverse_lambda(float(lambdas[0].detach()))), cond, guidance)
    xs, outputs = {0: x_T}, {"noise": {0: eps}, "data": {0: x0}}
    last = len(schedule.steps) - 1
    for i, step in enumerate(schedule.steps):
        if trajectory is not None:
            trajectory.append((xs[i], outputs["noise"][i]))
        start = i + 1 + step.start
        a, weights = _update(step, start, i + 1, lambdas, coefficients, i, False)
        x = _combine(xs[start], a, outputs[step.prediction], weights)
        if i == last:
            return x
        outputs["noise"][i + 1], outputs["data"][i + 1] = differentiable_predict(model, x, lambdas[i + 1], cond, guidance)
        if step.corrector is not None:
            a, weights = _update(step, start, i + 1, lambdas, coefficients, i, True)
            x = _combine(xs[start], a, outputs[step.prediction], weights)
            if step.corrector.kind == "implicit":
                outputs["noise"][i + 1], outputs["data"][i + 1] = differentiable_predict(model, x, lambdas[i + 1], cond, guidance)
        xs[i + 1] = x
    raise AssertionError("unreachable: a schedule has at least one step")
