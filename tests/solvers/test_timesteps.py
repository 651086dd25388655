"""Timestep families: diffusers' integer spacings, monotone endpoints, Karras sigmas, registry errors."""

from __future__ import annotations

import numpy as np
import pytest

from diffsearch.errors import DiffsearchError
from diffsearch.models import noise_schedule_from
from diffsearch.solvers.timesteps import TIMESTEP_FAMILIES, make_timesteps

diffusers = pytest.importorskip("diffusers")

DISCRETE = noise_schedule_from({"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000})
SCHEDULES = {
    "discrete": DISCRETE,
    "scaled_linear": noise_schedule_from({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}),
    "vp_linear": noise_schedule_from({"kind": "vp_linear"}),
    "vp_cosine": noise_schedule_from({"kind": "vp_cosine"}),
}
CONTINUOUS_FAMILIES = ("time_uniform", "logsnr", "quadratic", "karras")
ENDPOINT_FAMILIES = list(CONTINUOUS_FAMILIES)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_diffusers_spacings_reproduce_dpmsolver_multistep(spacing):
    scheduler = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="linear", beta_start=1e-4, beta_end=0.02, num_train_timesteps=1000, timestep_spacing=spacing
    )
    for n in range(3, 21):
        scheduler.set_timesteps(n)
        times = make_timesteps(DISCRETE, n, spacing)
        assert len(times) == n + 1 and times[-1] == 0.0
        integers = 1000 * times[:-1] - 1
        np.testing.assert_allclose(integers, np.round(integers), atol=1e-9)
        assert np.round(integers).astype(int).tolist() == scheduler.timesteps.tolist(), (spacing, n)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
def test_diffusers_spacings_take_an_explicit_terminal(spacing):
    times = make_timesteps(DISCRETE, 6, spacing, t_end=1e-3)
    assert times[-1] == 1e-3 and np.all(np.diff(times) < 0)


@pytest.mark.parametrize("spacing", ["linspace", "trailing"])
def test_diffusers_spacings_need_a_discrete_schedule(spacing):
    with pytest.raises(DiffsearchError, match="discrete"):
        make_timesteps(SCHEDULES["vp_linear"], 5, spacing)


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("spacing", ENDPOINT_FAMILIES)
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_families_are_strictly_decreasing_between_the_requested_endpoints(kind, spacing, n):
    ns = SCHEDULES[kind]
    t_start, t_end = 0.9 * ns.t_max, 2e-3
    times = make_timesteps(ns, n, spacing, t_start, t_end)
    assert len(times) == n + 1
    assert times[0] == t_start and times[-1] == t_end
    assert np.all(np.diff(times) < 0)
    default = make_timesteps(ns, n, spacing)
    assert default[0] == ns.t_max and default[-1] == ns.default_t_end
    assert np.all(np.diff(default) < 0)


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("n", [1, 2, 7, 40])
def test_quadratic_is_strictly_decreasing_with_endpoints_within_an_ulp(kind, n):
    ns = SCHEDULES[kind]
    times = make_timesteps(ns, n, "quadratic", 0.9 * ns.t_max, 2e-3)
    assert times[0] == pytest.approx(0.9 * ns.t_max, rel=1e-15) and times[-1] == pytest.approx(2e-3, rel=1e-15)
    assert np.all(np.diff(times) < 0)


def test_default_end_times():
    assert SCHEDULES["discrete"].default_t_end == pytest.approx(1e-3)
    assert SCHEDULES["vp_linear"].default_t_end == 1e-3


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_logsnr_is_uniform_in_lambda_and_quadratic_in_sqrt_t(kind):
    ns = SCHEDULES[kind]
    lambdas = ns.lambda_(make_timesteps(ns, 9, "logsnr", ns.t_max, 1e-3))
    np.testing.assert_allclose(np.diff(lambdas), np.full(9, (lambdas[-1] - lambdas[0]) / 9), rtol=1e-8)
    roots = np.sqrt(make_timesteps(ns, 9, "quadratic", ns.t_max, 1e-3))
    np.testing.assert_allclose(np.diff(roots), np.full(9, (roots[-1] - roots[0]) / 9), rtol=1e-12)


@pytest.mark.parametrize("kind", list(SCHEDULES))
@pytest.mark.parametrize("rho", [7.0, 3.0])
def test_karras_matches_the_formula_in_ve_sigma(kind, rho):
    ns = SCHEDULES[kind]
    t_start, t_end, n = ns.t_max, 1e-3, 12
    times = TIMESTEP_FAMILIES.get("karras")(ns, n, t_start, t_end, rho=rho)
    sigma_max, sigma_min = np.exp(-ns.lambda_(t_start)), np.exp(-ns.lambda_(t_end))
    i = np.arange(n + 1)
    expected = (sigma_max ** (1 / rho) + i / n * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    # VE sigma = sigma_t / alpha_t = e^{-lambda}
    np.testing.assert_allclose(ns.sigma(times) / ns.alpha(times), expected, rtol=1e-8)
    np.testing.assert_allclose(np.exp(-ns.lambda_(times)), expected, rtol=1e-8)


def test_unknown_family_lists_the_valid_ones():
    with pytest.raises(DiffsearchError) as error:
        make_timesteps(DISCRETE, 5, "cosine_spacing")
    message = str(error.value)
    assert "cosine_spacing" in message
    for name in (*CONTINUOUS_FAMILIES, "linspace", "leading", "trailing"):
        assert name in message


def test_zero_steps_is_an_error():
    with pytest.raises(DiffsearchError, match="steps"):
        make_timesteps(DISCRETE, 0, "logsnr")
