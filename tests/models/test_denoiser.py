"""The Denoiser wrapper: parameterisation conversions, batched guidance, NFE counting, errors."""

from __future__ import annotations

import pytest
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.models import Denoiser, noise_schedule_from
from diffsearch.models.gmm import GaussianMixture

SCHEDULES = {
    "discrete": {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000},
    "vp_linear": {"kind": "vp_linear"},
    "vp_cosine": {"kind": "vp_cosine"},
}


def exact_networks(schedule: dict) -> dict:
    """The exact gmm network in each parameterisation: fn(x, t_in, cond) -> eps / x0 / v."""
    ns = noise_schedule_from(schedule)
    mixture = GaussianMixture.random(dim=4, components=3, seed=1)

    def coefficients(t_in: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        value = float(t_in[0])
        t = float(ns.t_from_timestep(value)) if hasattr(ns, "t_from_timestep") else value
        return float(ns.alpha(t)), float(ns.sigma(t)), mixture.epsilon

    def epsilon(x, t_in, cond=None):
        alpha, sigma, eps = coefficients(t_in)
        return eps(x, alpha, sigma)

    def sample(x, t_in, cond=None):
        alpha, sigma, eps = coefficients(t_in)
        return (x - sigma * eps(x, alpha, sigma)) / alpha

    def v_prediction(x, t_in, cond=None):
        alpha, sigma, eps = coefficients(t_in)
        e = eps(x, alpha, sigma)
        return alpha * e - sigma * (x - sigma * e) / alpha

    return {"epsilon": epsilon, "sample": sample, "v_prediction": v_prediction}


@pytest.mark.parametrize("kind", list(SCHEDULES))
def test_parameterisations_give_the_same_predictions(kind):
    networks = exact_networks(SCHEDULES[kind])
    denoisers = {name: Denoiser(fn, SCHEDULES[kind], name, data_shape=(4,)) for name, fn in networks.items()}
    x = torch.randn(32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for t in (1e-3, 0.02, 0.3, 0.7, 0.99):
        eps, x0 = denoisers["epsilon"].predict(x, t)
        alpha, sigma = (float(f(t)) for f in (denoisers["epsilon"].noise_schedule.alpha, denoisers["epsilon"].noise_schedule.sigma))
        torch.testing.assert_close(alpha * x0 + sigma * eps, x, rtol=0, atol=1e-12)
        for name in ("sample", "v_prediction"):
            other_eps, other_x0 = denoisers[name].predict(x, t)
            torch.testing.assert_close(other_eps, eps, rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(other_x0, x0, rtol=1e-9, atol=1e-9)


class CountingNetwork:
    """A conditional network that records each call; output depends on x, t and cond."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []

    def __call__(self, x, t_in, cond=None):
        self.calls.append((x.clone(), t_in.clone(), None if cond is None else cond.clone()))
        scale = 1.0 if cond is None else 1.0 + 0.1 * cond.reshape(cond.shape[0], -1)[:, :1]
        return torch.sin(x) * scale + 1e-3 * t_in[:, None]


def make_conditional(null_cond=10) -> tuple[Denoiser, CountingNetwork]:
    network = CountingNetwork()
    return Denoiser(network, SCHEDULES["discrete"], data_shape=(3,), num_classes=10, null_cond=null_cond), network


def test_guidance_batches_cond_and_uncond_into_one_call():
    denoiser, network = make_conditional()
    x = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    cond = torch.tensor([0, 3, 9, 1, 2], dtype=torch.float64)
    guided = denoiser.network(x, 0.4, cond, guidance=7.5)
    assert len(network.calls) == 1 and denoiser.nfe == 1
    batch_x, batch_t, batch_cond = network.calls[0]
    assert batch_x.shape == (10, 3) and torch.equal(batch_x, torch.cat([x, x]))
    assert torch.equal(batch_t, torch.full((10,), 399.0, dtype=torch.float64))  # N t - 1
    assert torch.equal(batch_cond, torch.cat([cond, torch.full_like(cond, 10)]))
    out_c, out_u = network(x, batch_t[:5], cond), network(x, batch_t[:5], torch.full_like(cond, 10))
    torch.testing.assert_close(guided, out_u + 7.5 * (out_c - out_u), rtol=0, atol=1e-14)


def test_guidance_with_a_tensor_null_condition():
    null = torch.zeros(1, 2, dtype=torch.float64)
    denoiser, network = make_conditional(null_cond=null)
    x = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cond = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    eps, _ = denoiser.predict(x, 0.5, cond, guidance=2.0)
    assert len(network.calls) == 1 and torch.equal(network.calls[0][2], torch.cat([cond, null.expand(4, 2)]))
    t_in = network.calls[0][1][:4]
    out_c, out_u = network(x, t_in, cond), network(x, t_in, null.expand(4, 2))
    torch.testing.assert_close(eps, out_u + 2.0 * (out_c - out_u), rtol=0, atol=1e-14)


def test_guidance_one_is_the_conditional_output():
    denoiser, network = make_conditional()
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    cond = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    guided = denoiser.network(x, 0.2, cond, guidance=1.0)
    torch.testing.assert_close(guided, network(x, network.calls[0][1][:3], cond), rtol=0, atol=1e-14)


def test_nfe_counts_every_network_call_and_resets():
    denoiser, network = make_conditional()
    x = torch.zeros(2, 3, dtype=torch.float64)
    cond = torch.tensor([1.0, 2.0], dtype=torch.float64)
    denoiser.predict(x, 0.5)
    denoiser.predict(x, 0.4, cond)
    denoiser.predict(x, 0.3, cond, guidance=3.0)
    assert denoiser.nfe == 3 == len(network.calls)
    denoiser.reset_nfe()
    assert denoiser.nfe == 0
    denoiser.network(x, 0.1)
    assert denoiser.nfe == 1


def test_guidance_without_cond_is_a_clear_error():
    denoiser, network = make_conditional()
    with pytest.raises(DiffsearchError, match="guidance needs a condition"):
        denoiser.predict(torch.zeros(2, 3), 0.5, guidance=7.5)
    assert network.calls == []


def test_guidance_without_a_null_condition_is_a_clear_error():
    denoiser, network = make_conditional(null_cond=None)
    with pytest.raises(DiffsearchError, match="no unconditional input"):
        denoiser.predict(torch.zeros(2, 3), 0.5, torch.tensor([1.0, 2.0]), guidance=2.0)
    assert network.calls == []


def test_unknown_prediction_type_lists_the_valid_ones():
    with pytest.raises(DiffsearchError) as error:
        Denoiser(lambda x, t, c: x, SCHEDULES["discrete"], "score")
    assert all(name in str(error.value) for name in ("score", "epsilon", "sample", "v_prediction"))


def test_model_time_is_diffusers_timestep_for_discrete_and_t_for_continuous():
    seen = []
    for kind, t, expected in (("discrete", 1.0, 999.0), ("discrete", 1e-3, 0.0), ("vp_linear", 0.25, 0.25)):
        denoiser = Denoiser(lambda x, t_in, c: seen.append(t_in) or x, SCHEDULES[kind])
        denoiser.predict(torch.ones(2, 1, dtype=torch.float64), t)
        assert seen[-1].tolist() == pytest.approx([expected, expected], abs=1e-9)
