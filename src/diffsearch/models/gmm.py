"""The built-in ``gmm`` model: a Gaussian mixture whose noise prediction is exact at every t.

Data ``x0 ~ sum_k pi_k N(mu_k, S_k)``. Under the VP forward process the marginal at t is the mixture
``sum_k pi_k N(alpha_t mu_k, alpha_t^2 S_k + sigma_t^2 I)``, so the score, the exact epsilon
``eps = -sigma_t grad log p_t``, the moments at any t and an exact sampler are all closed forms.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from diffsearch.models.denoiser import Denoiser
from diffsearch.models.noise_schedules import NoiseSchedule, noise_schedule_from

DEFAULT_NOISE_SCHEDULE = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}


class GaussianMixture:
    """Mixture parameters (float64) with exact marginal moments, score and sampler."""

    def __init__(self, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covariances = torch.as_tensor(covariances, dtype=torch.float64)
        self.dim = self.means.shape[1]

    @classmethod
    def random(cls, dim: int = 8, components: int = 6, seed: int = 0) -> GaussianMixture:
        """A seeded mixture with well-separated means and narrow, anisotropic components."""
        rng = np.random.default_rng(seed)
        weights = rng.dirichlet(np.full(components, 4.0))
        means = rng.normal(0.0, 1.0, size=(components, dim))
        rotations = np.linalg.qr(rng.normal(size=(components, dim, dim)))[0]
        scales = rng.uniform(0.05, 0.4, size=(components, dim)) ** 2
        covariances = np.einsum("kij,kj,klj->kil", rotations, scales, rotations)
        return cls(weights, means, covariances)

    def moments(self, alpha: float = 1.0, sigma: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact mean and covariance of alpha x0 + sigma eps."""
        mean = self.weights @ self.means
        second = torch.einsum("k,kij->ij", self.weights, self.covariances + torch.einsum("ki,kj->kij", self.means, self.means))
        covariance = alpha**2 * (second - torch.outer(mean, mean)) + sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        return alpha * mean, covariance

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact samples of the data distribution (float64)."""
        components = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, dtype=torch.float64, generator=generator)
        factors = torch.linalg.cholesky(self.covariances)[components]
        return self.means[components] + torch.einsum("nij,nj->ni", factors, noise)

    def epsilon(self, x: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
        """Exact eps(x_t) = -sigma grad log p_t(x_t) of the noised mixture."""
        covariances = alpha**2 * self.covariances + sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        precisions = torch.linalg.inv(covariances)
        centred = x[:, None, :] - alpha * self.means[None]  # (n, k, d)
        solved = torch.einsum("kij,nkj->nki", precisions, centred)
        log_det = torch.logdet(covariances)
        log_prob = torch.log(self.weights) - 0.5 * (log_det + (centred * solved).sum(-1))
        responsibilities = torch.softmax(log_prob, dim=1)
        score = -(responsibilities[..., None] * solved).sum(1)
        return -sigma * score

    def fingerprint(self) -> str:
        payload = b"".join(t.numpy().tobytes() for t in (self.weights, self.means, self.covariances))
        return hashlib.sha256(payload).hexdigest()[:16]


def gmm_network(mixture: GaussianMixture, noise_schedule: NoiseSchedule):
    """``fn(x, t_in, cond)``: the exact epsilon, evaluated in float64 on the CPU, at each row's model time."""

    def fn(x: torch.Tensor, t_in: torch.Tensor, cond: Any = None) -> torch.Tensor:
        out = torch.empty_like(x)
        for value in torch.unique(t_in):
            rows = t_in == value
            t = _time_from_model_time(noise_schedule, float(value))
            alpha, sigma = float(noise_schedule.alpha(t)), float(noise_schedule.sigma(t))
            out[rows] = mixture.epsilon(x[rows].to("cpu", torch.float64), alpha, sigma).to(x.device, x.dtype)
        return out

    return fn


def _time_from_model_time(noise_schedule: NoiseSchedule, t_in: float) -> float:
    if hasattr(noise_schedule, "t_from_timestep"):
        return float(noise_schedule.t_from_timestep(t_in))
    return t_in


def build_gmm(
    dim: int = 8, components: int = 6, seed: int = 0, noise_schedule: dict[str, Any] | None = None
) -> Denoiser:
    """The ``gmm`` model: an exact-epsilon Denoiser with ``.truth`` holding the mixture."""
    schedule = noise_schedule_from(noise_schedule or DEFAULT_NOISE_SCHEDULE)
    mixture = GaussianMixture.random(dim, components, seed)
    model = Denoiser(
        gmm_network(mixture, schedule),
        schedule,
        "epsilon",
        data_shape=(dim,),
        data_mean=mixture.moments()[0].float(),
        name="gmm",
        fingerprint=f"gmm-{mixture.fingerprint()}-{schedule.fingerprint}",
        truth=mixture,
    )
    return model
