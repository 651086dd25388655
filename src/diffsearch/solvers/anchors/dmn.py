"""DM-NonUniform (Xue et al., CVPR 2024): data-free logSNR points minimising a multistep error bound.

A data-prediction multistep step from lambda_s to lambda_{s+1} of order k replaces x0(lambda) by its
Lagrange interpolant through the k newest points; the bound weighs each interpolation weight
J_j = int e^lambda l_j(lambda) d lambda by the data-error scale sigma_j^2 / alpha_j. Steps before
``exact_steps`` add the norm of their weights, later ones accumulate signed weights per point
(errors of one point cancel across steps), as in the authors' ``StepOptim``. The interior lambdas
are found by scipy's ``trust-constr`` under monotonicity constraints, from uniform logSNR.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from scipy.optimize import LinearConstraint, minimize

from diffsearch.solvers.anchors import AnchorMethod, AnchorRequest

_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(12)


def lagrange_integrals(lambdas: np.ndarray, start: float, end: float) -> np.ndarray:
    """int_start^end e^lambda l_j(lambda) d lambda for the Lagrange basis l_j through ``lambdas`` (Gauss-Legendre)."""
    half = 0.5 * (end - start)
    nodes = start + half * (_NODES + 1.0)
    basis = np.ones((len(lambdas), len(nodes)))
    for j, lambda_j in enumerate(lambdas):
        for m, lambda_m in enumerate(lambdas):
            if m != j:
                basis[j] *= (nodes - lambda_m) / (lambda_j - lambda_m)
    return half * (basis * (np.exp(nodes) * _WEIGHTS)).sum(axis=1)


def error_bound(interior: np.ndarray, lambda_start: float, lambda_end: float, orders: list[int], exact_steps: int) -> float:
    """The DM-NonUniform truncation-error bound of a multistep data-prediction solver with ``orders``."""
    lambdas = np.concatenate([[lambda_start], interior, [lambda_end]])
    alphas, sigmas = np.sqrt(1.0 / (1.0 + np.exp(-2.0 * lambdas))), np.sqrt(1.0 / (1.0 + np.exp(2.0 * lambdas)))
    scale = sigmas**2 / alphas
    total, signed = 0.0, np.zeros(len(lambdas))
    for s, order in enumerate(orders):
        points = np.arange(s - order + 1, s + 1)
        terms = lagrange_integrals(lambdas[points], lambdas[s], lambdas[s + 1]) * scale[points]
        if order == 1 or s < exact_steps:
            total += float(np.sqrt(np.sum(terms**2)))
        else:
            signed[points] += terms
    return total + float(np.abs(signed).sum())


def multistep_orders(request: AnchorRequest, max_order: int) -> list[int]:
    """The solver preset's per-step orders on this NFE, capped at ``max_order`` and by the history."""
    steps = request.base_schedule(np.linspace(request.t_start, request.t_end, request.nfe + 1)).steps
    return [max(1, min(step.order, max_order, i + 1)) for i, step in enumerate(steps)]


def dmn_timesteps(request: AnchorRequest, max_order: int = 3, initial: str = "logsnr") -> tuple[np.ndarray, dict[str, Any]]:
    """Minimise ``error_bound`` over the interior lambdas (scipy trust-constr, lambdas increasing)."""
    from diffsearch.solvers.timesteps import make_timesteps

    ns, n = request.noise_schedule, request.nfe
    lambda_start, lambda_end = float(ns.lambda_(request.t_start)), float(ns.lambda_(request.t_end))
    orders = multistep_orders(request, max_order)
    exact_steps = 3 if n <= 7 else 0  # the authors' truncation switch for few steps
    start = ns.lambda_(make_timesteps(ns, n, initial, request.t_start, request.t_end))[1:-1]
    if n == 1:
        return np.array([request.t_start, request.t_end]), {"bound": None, "orders": orders}
    differences = np.zeros((n, n - 1))
    differences[np.arange(n - 1), np.arange(n - 1)] = 1.0
    differences[np.arange(1, n), np.arange(n - 1)] -= 1.0
    lower = np.zeros(n)
    lower[0], lower[-1] = lambda_start, -lambda_end
    constraint = LinearConstraint(differences, lower, np.full(n, np.inf))
    args = (lambda_start, lambda_end, orders, exact_steps)
    with warnings.catch_warnings():  # trust-constr's quasi-Newton update warns on flat steps near the optimum
        warnings.simplefilter("ignore", UserWarning)
        result = minimize(error_bound, start, args=args, method="trust-constr", constraints=[constraint])
    interior = np.sort(np.clip(result.x, lambda_start, lambda_end))
    times = ns.inverse_lambda(np.concatenate([[lambda_start], interior, [lambda_end]]))
    times[0], times[-1] = request.t_start, request.t_end
    details = {"bound": float(result.fun), "initial_bound": float(error_bound(start, *args)), "orders": orders,
               "iterations": int(result.nit)}
    return times, details


DMN = AnchorMethod(dmn_timesteps, needs_model=False, settings={"max_order": 3, "initial": "logsnr"})
