"""Noise schedules: diffusers' alphas_cumprod, lambda inverses, closed forms, fingerprints, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

from diffsearch.errors import DiffsearchError
from diffsearch.models import noise_schedule_from

diffusers = pytest.importorskip("diffusers")

DISCRETE_CONFIGS = {
    "linear": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000},
    "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "num_train_timesteps": 1000},
    "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2", "num_train_timesteps": 1000},
    "short_linear": {"beta_schedule": "linear", "beta_start": 1e-3, "beta_end": 0.05, "num_train_timesteps": 50},
}
KINDS = {
    **{name: config for name, config in DISCRETE_CONFIGS.items()},
    "vp_linear": {"kind": "vp_linear"},
    "vp_cosine": {"kind": "vp_cosine"},
}


@pytest.mark.parametrize("name", list(DISCRETE_CONFIGS))
def test_discrete_alphas_cumprod_equal_diffusers(name):
    config = DISCRETE_CONFIGS[name]
    reference = diffusers.DDPMScheduler(**config).alphas_cumprod
    ns = noise_schedule_from(config)
    assert torch.equal(ns.alphas_cumprod.float(), reference)
    np.testing.assert_allclose(ns.alpha(ns.t_array) ** 2, ns.alphas_cumprod.numpy(), rtol=1e-14)


@pytest.mark.parametrize("name", list(KINDS))
def test_lambda_and_inverse_lambda_round_trip(name):
    ns = noise_schedule_from(KINDS[name])
    t = np.linspace(max(ns.t_min, 1e-3), ns.t_max, 257)
    lambdas = ns.lambda_(t)
    assert np.all(np.diff(lambdas) < 0)
    np.testing.assert_allclose(ns.inverse_lambda(lambdas), t, rtol=1e-9, atol=1e-12)
    grid = np.linspace(lambdas[-1], lambdas[0], 101)
    np.testing.assert_allclose(ns.lambda_(ns.inverse_lambda(grid)), grid, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ns.alpha(t) ** 2 + ns.sigma(t) ** 2, 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", list(KINDS))
def test_clean_terminal(name):
    ns = noise_schedule_from(KINDS[name])
    assert ns.lambda_(0.0) == math.inf and float(ns.alpha(0.0)) == 1.0
    assert float(ns.inverse_lambda(math.inf)) == 0.0


@pytest.mark.parametrize("beta_min, beta_max", [(0.1, 20.0), (0.5, 10.0)])
def test_vp_linear_log_alpha_integrates_beta(beta_min, beta_max):
    ns = noise_schedule_from({"kind": "vp_linear", "beta_min": beta_min, "beta_max": beta_max})
    for t in (1e-3, 0.1, 0.37, 0.8, 1.0):
        integral, _ = quad(lambda s: beta_min + s * (beta_max - beta_min), 0.0, t)
        assert float(ns.log_alpha(t)) == pytest.approx(-0.5 * integral, rel=1e-12)


def test_vp_cosine_matches_the_improved_ddpm_closed_form():
    s = 0.008
    ns = noise_schedule_from({"kind": "vp_cosine", "s": s})

    def f(t):
        return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2

    for t in (1e-4, 0.05, 0.5, 0.9, 0.9946):
        assert float(ns.alpha(t)) ** 2 == pytest.approx(f(t) / f(0.0), rel=1e-12)


def test_vp_cosine_agrees_with_the_discrete_squaredcos_schedule():
    """prod(1 - beta_i) telescopes to alpha_bar((n+1)/N) / alpha_bar(0) until the 0.999 beta cap."""
    continuous = noise_schedule_from({"kind": "vp_cosine"})
    discrete = noise_schedule_from(DISCRETE_CONFIGS["squaredcos_cap_v2"])
    t = discrete.t_array[:900]
    np.testing.assert_allclose(discrete.alpha(t), continuous.alpha(t), rtol=1e-4)


def test_fingerprint_depends_on_the_spec_only():
    linear = DISCRETE_CONFIGS["linear"]
    ours = noise_schedule_from({"kind": "discrete", **linear})
    diffusers_style = noise_schedule_from(linear)
    full_config = noise_schedule_from(dict(diffusers.DDPMScheduler(**linear).config))
    defaults = noise_schedule_from({"kind": "discrete"})
    assert ours.fingerprint == diffusers_style.fingerprint == full_config.fingerprint == defaults.fingerprint
    assert noise_schedule_from(ours) is ours
    assert noise_schedule_from(ours.spec).fingerprint == ours.fingerprint
    assert noise_schedule_from(ours.describe()).fingerprint == ours.fingerprint
    different = [
        {**linear, "beta_end": 0.021},
        {**linear, "num_train_timesteps": 999},
        DISCRETE_CONFIGS["scaled_linear"],
        {"kind": "vp_linear"},
        {"kind": "vp_linear", "beta_max": 19.0},
        {"kind": "vp_cosine"},
    ]
    fingerprints = {noise_schedule_from(config).fingerprint for config in different}
    assert len(fingerprints) == len(different) and ours.fingerprint not in fingerprints


@pytest.mark.parametrize(
    "config, key",
    [
        ({"kind": "discrete", "beta_schedul": "linear"}, "beta_schedul"),
        ({"beta_schedule": "cosine"}, "beta_schedule"),
        ({"kind": "discrete", "num_train_timesteps": 1}, "num_train_timesteps"),
        ({"kind": "vp_linear", "beta_max": "high"}, "beta_max"),
        ({"kind": "vp_cosine", "s": 0.008, "T": 1.0}, "T"),
        ({"kind": "edm"}, "edm"),
        ({"beta_schedule": "linear", "trained_betas": [0.1, 0.2]}, "trained_betas"),
    ],
)
def test_bad_specs_name_the_key(config, key):
    with pytest.raises(DiffsearchError) as error:
        noise_schedule_from(config)
    assert key in str(error.value)


def test_non_dict_spec_is_an_error():
    with pytest.raises(DiffsearchError, match="dict"):
        noise_schedule_from("linear")
