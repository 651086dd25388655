"""Single-step exactness against closed forms and scipy quadrature (s3_spec.md 2.2, 4.1, 4.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from diffsearch.models import noise_schedule_from
from diffsearch.solvers.coefficients import difference_weights, exponential_integrator, phi
from diffsearch.solvers.schedule import Derivative


@pytest.mark.parametrize("z", [-8.0, -1.5, -0.3, -1e-4, 0.0, 1e-4, 0.7, 3.0])
def test_phi_matches_closed_forms(z):
    if z == 0.0:
        assert phi(1, z) == pytest.approx(1.0) and phi(3, z) == pytest.approx(1 / 6)
        return
    assert phi(1, z) == pytest.approx(math.expm1(z) / z, rel=1e-12)
    assert phi(2, z) == pytest.approx((math.expm1(z) - z) / z**2, rel=1e-9)
    assert phi(3, z) == pytest.approx((math.expm1(z) - z - z**2 / 2) / z**3, rel=1e-6)


def test_difference_weights_differentiate_polynomials_exactly():
    rng = np.random.default_rng(0)
    deltas = rng.uniform(-1.5, -0.1, size=3)
    coefficients = rng.normal(size=4)  # F(d) = c0 + c1 d + c2 d^2 / 2 + c3 d^3 / 6
    values = sum(coefficients[m] * deltas**m / math.factorial(m) for m in range(1, 4))
    np.testing.assert_allclose(difference_weights(deltas) @ values, coefficients[1:], rtol=1e-9)


def exact_step(ns, t_s, t_t, x_s, F, prediction):
    """The variation-of-constants solution (s3_spec.md 2.1) by scipy quadrature in lambda."""
    lam_s, lam_t = float(ns.lambda_(t_s)), float(ns.lambda_(t_t))
    alpha_s, alpha_t = float(ns.alpha(t_s)), float(ns.alpha(t_t))
    sigma_s, sigma_t = float(ns.sigma(t_s)), float(ns.sigma(t_t))
    if prediction == "data":
        integral = integrate.quad(lambda lam: math.exp(lam) * F(lam), lam_s, lam_t, epsabs=1e-13, epsrel=1e-13)[0]
        return sigma_t / sigma_s * x_s + sigma_t * integral
    integral = integrate.quad(lambda lam: math.exp(-lam) * F(lam), lam_s, lam_t, epsabs=1e-13, epsrel=1e-13)[0]
    return alpha_t / alpha_s * x_s - alpha_t * integral


def taylor_update(ns, times, order, prediction, F, x_s, derivatives=None):
    t = np.asarray(times)
    lambdas, alphas, sigmas = ns.lambda_(t), ns.alpha(t), ns.sigma(t)
    s, target = order - 1, order  # history points 0..s, step from s to s + 1
    points = tuple(range(s - 1, -1, -1))
    derivatives = derivatives or tuple(Derivative(points=()) for _ in range(order - 1))
    specs = tuple((d, points) for d in derivatives)
    update = exponential_integrator(lambdas, alphas, sigmas, s, target, prediction, order, specs)
    return update.x_coefficient * x_s + sum(w * F(lambdas[j]) for j, w in update.weights)


@pytest.mark.parametrize("prediction", ["noise", "data"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_order_p_is_exact_for_polynomials_of_degree_p_minus_1(prediction, order):
    ns = noise_schedule_from({"kind": "vp_linear"})
    rng = np.random.default_rng(order)
    c = rng.normal(size=order)
    F = lambda lam: sum(c[k] * lam**k for k in range(order))  # noqa: E731
    times = np.linspace(0.9, 0.3, order + 1)
    expected = exact_step(ns, times[-2], times[-1], 0.7, F, prediction)
    assert taylor_update(ns, times, order, prediction, F, 0.7) == pytest.approx(expected, rel=1e-9, abs=1e-11)


def test_reference_third_order_halves_the_second_derivative():
    """Quirk s3_spec.md 4.1: DPM-Solver++(3M) as diffusers implements it (k=2 scaled by 1/2) is not
    exact for a quadratic x0(lambda); the Taylor order-3 update is."""
    ns = noise_schedule_from({"kind": "vp_linear"})
    F = lambda lam: 0.3 - 0.8 * lam + 0.5 * lam**2  # noqa: E731
    times = np.linspace(0.9, 0.3, 4)
    expected = exact_step(ns, times[-2], times[-1], 0.7, F, "data")
    taylor = taylor_update(ns, times, 3, "data", F, 0.7)
    reference = taylor_update(ns, times, 3, "data", F, 0.7, (Derivative(points=()), Derivative(points=(), scale="constant", coefficient=0.5)))
    assert taylor == pytest.approx(expected, rel=1e-9)
    assert abs(reference - expected) > 1e-3
