"""VP noise schedules: alpha_t, sigma_t, lambda_t and its inverse (s3_spec.md section 1).

Time is the continuous ``t`` of DPM-Solver: ``t in (0, T]`` sampled from ``T`` down. ``t = 0`` is the
clean-data terminal (``alpha = 1``, ``sigma = 0``, ``lambda = +inf``). Discrete DDPM schedules embed
their N train steps at ``t_n = (n + 1) / N`` and interpolate ``log alpha`` piecewise-linearly in t,
as the official DPM-Solver does; their betas are computed exactly as diffusers computes them.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cached_property
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from diffsearch.errors import DiffsearchError

ArrayLike = Union[float, np.ndarray]


class DiscreteSpec(BaseModel):
    """A diffusers-style discrete DDPM schedule (``DDPMScheduler`` config keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["discrete"] = "discrete"
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    num_train_timesteps: int = Field(1000, ge=2)


class VPLinearSpec(BaseModel):
    """Continuous VP-SDE with linear beta(t) (ScoreSDE): log alpha_t = -t^2 (b1 - b0) / 4 - t b0 / 2."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["vp_linear"] = "vp_linear"
    beta_min: float = 0.1
    beta_max: float = 20.0


class VPCosineSpec(BaseModel):
    """Continuous cosine VP schedule (improved DDPM), usable up to T = 0.9946."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: Literal["vp_cosine"] = "vp_cosine"
    s: float = 0.008


NoiseScheduleSpec = Annotated[Union[DiscreteSpec, VPLinearSpec, VPCosineSpec], Field(discriminator="kind")]
_SPEC_ADAPTER: TypeAdapter = TypeAdapter(NoiseScheduleSpec)
_DIFFUSERS_KEYS = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")


class NoiseSchedule:
    """Shared VP algebra on top of ``log_alpha(t)``; subclasses give log_alpha and its inverse."""

    spec: DiscreteSpec | VPLinearSpec | VPCosineSpec
    t_min: float
    t_max: float

    def log_alpha(self, t: ArrayLike) -> np.ndarray:
        raise NotImplementedError

    def _t_from_log_alpha(self, log_alpha: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def model_time(self, t: ArrayLike) -> np.ndarray:
        """The time value the network receives (continuous t by default)."""
        return np.asarray(t, dtype=np.float64)

    def alpha(self, t: ArrayLike) -> np.ndarray:
        return np.exp(self.log_alpha(t))

    def sigma(self, t: ArrayLike) -> np.ndarray:
        return np.sqrt(-np.expm1(2.0 * self.log_alpha(t)))

    def lambda_(self, t: ArrayLike) -> np.ndarray:
        """Half log-SNR lambda_t = log alpha_t - log sigma_t (+inf at t = 0)."""
        log_alpha = self.log_alpha(t)
        with np.errstate(divide="ignore"):
            return log_alpha - 0.5 * np.log(-np.expm1(2.0 * log_alpha))

    def inverse_lambda(self, lambda_: ArrayLike) -> np.ndarray:
        """t(lambda): log alpha = -log(1 + e^{-2 lambda}) / 2, then the schedule's inverse."""
        lambda_ = np.asarray(lambda_, dtype=np.float64)
        log_alpha = -0.5 * np.logaddexp(0.0, -2.0 * lambda_)
        t = self._t_from_log_alpha(log_alpha)
        return np.where(np.isposinf(lambda_), 0.0, t)

    @property
    def default_t_end(self) -> float:
        """DPM-Solver's default final time: 1/N for discrete schedules, 1e-3 for continuous ones."""
        return self.t_min if isinstance(self.spec, DiscreteSpec) else 1e-3

    @cached_property
    def fingerprint(self) -> str:
        """A short content hash of the spec; artifacts are only valid for a matching fingerprint."""
        canonical = json.dumps(self.spec.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        return self.spec.model_dump(mode="json")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"


def diffusers_betas(spec: DiscreteSpec):
    """Betas exactly as diffusers builds them (float32 torch), for bit-compatible alphas_cumprod."""
    import torch

    n = spec.num_train_timesteps
    if spec.beta_schedule == "linear":
        return torch.linspace(spec.beta_start, spec.beta_end, n, dtype=torch.float32)
    if spec.beta_schedule == "scaled_linear":
        return torch.linspace(spec.beta_start**0.5, spec.beta_end**0.5, n, dtype=torch.float32) ** 2

    def alpha_bar(time: float) -> float:
        return math.cos((time + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
    return torch.tensor(betas, dtype=torch.float32)


class DiscreteVP(NoiseSchedule):
    """Discrete DDPM schedule embedded in continuous time, t_n = (n + 1) / N."""

    def __init__(self, spec: DiscreteSpec) -> None:
        import torch

        self.spec = spec
        n = spec.num_train_timesteps
        self.alphas_cumprod = torch.cumprod(1.0 - diffusers_betas(spec), dim=0).double()
        self.t_array = np.arange(1, n + 1, dtype=np.float64) / n
        self.log_alpha_array = 0.5 * np.log(self.alphas_cumprod.numpy())
        self.t_min, self.t_max = 1.0 / n, 1.0

    @property
    def num_train_timesteps(self) -> int:
        return self.spec.num_train_timesteps

    def log_alpha(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        value = np.interp(t, self.t_array, self.log_alpha_array)
        return np.where(t == 0.0, 0.0, value)

    def _t_from_log_alpha(self, log_alpha: np.ndarray) -> np.ndarray:
        return np.interp(log_alpha, self.log_alpha_array[::-1], self.t_array[::-1])

    def model_time(self, t: ArrayLike) -> np.ndarray:
        """diffusers' timestep value: t_in = N t - 1, a float in [0, N - 1]."""
        return self.spec.num_train_timesteps * np.asarray(t, dtype=np.float64) - 1.0

    def t_from_timestep(self, timestep: ArrayLike) -> np.ndarray:
        """Continuous t of a diffusers integer timestep k: (k + 1) / N."""
        return (np.asarray(timestep, dtype=np.float64) + 1.0) / self.spec.num_train_timesteps


class ContinuousVPLinear(NoiseSchedule):
    """Linear VP-SDE (beta_min, beta_max), T = 1, with the closed-form inverse of s3_spec.md 1.3."""

    def __init__(self, spec: VPLinearSpec) -> None:
        self.spec = spec
        self.t_min, self.t_max = 1e-5, 1.0

    def log_alpha(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        b0, b1 = self.spec.beta_min, self.spec.beta_max
        return -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0

    def _t_from_log_alpha(self, log_alpha: np.ndarray) -> np.ndarray:
        b0, b1 = self.spec.beta_min, self.spec.beta_max
        u = -2.0 * log_alpha  # = log(1 + e^{-2 lambda})
        return 2.0 * u / (np.sqrt(b0**2 + 2.0 * (b1 - b0) * u) + b0)


class ContinuousVPCosine(NoiseSchedule):
    """Cosine VP schedule: log alpha_t = log cos((t+s)/(1+s) pi/2) - log cos(s/(1+s) pi/2)."""

    def __init__(self, spec: VPCosineSpec) -> None:
        self.spec = spec
        self.t_min, self.t_max = 1e-5, 0.9946
        self._log_alpha_0 = math.log(math.cos(spec.s / (1.0 + spec.s) * math.pi / 2.0))

    def log_alpha(self, t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        s = self.spec.s
        return np.log(np.cos((t + s) / (1.0 + s) * math.pi / 2.0)) - self._log_alpha_0

    def _t_from_log_alpha(self, log_alpha: np.ndarray) -> np.ndarray:
        s = self.spec.s
        return 2.0 * (1.0 + s) / math.pi * np.arccos(np.exp(log_alpha + self._log_alpha_0)) - s


_CLASSES = {"discrete": DiscreteVP, "vp_linear": ContinuousVPLinear, "vp_cosine": ContinuousVPCosine}


def parse_noise_schedule_spec(value: Any):
    """A validated spec from our dict (with ``kind``) or a diffusers scheduler config dict."""
    if isinstance(value, BaseModel):
        value = value.model_dump()
    if not isinstance(value, dict):
        raise DiffsearchError(f"noise_schedule must be a dict or a NoiseSchedule, got {type(value).__name__}")
    if "kind" not in value:
        _check_diffusers_keys(value)
        value = {"kind": "discrete", **{key: value[key] for key in _DIFFUSERS_KEYS if key in value}}
    try:
        return _SPEC_ADAPTER.validate_python(value)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "kind"
        raise DiffsearchError(f"noise_schedule.{where}: {first['msg']}") from None


def _check_diffusers_keys(value: dict[str, Any]) -> None:
    """Refuse what would silently change the schedule: misspelt keys, trained or rescaled betas."""
    import difflib

    if value.get("trained_betas") is not None:
        raise DiffsearchError("noise_schedule: trained_betas is not supported; use beta_schedule")
    if value.get("rescale_betas_zero_snr"):
        raise DiffsearchError("noise_schedule: rescale_betas_zero_snr=True is not supported")
    for key in value:
        close = difflib.get_close_matches(key, _DIFFUSERS_KEYS, n=1, cutoff=0.8)
        if key not in _DIFFUSERS_KEYS and close:
            raise DiffsearchError(f"noise_schedule: unknown key {key!r}; did you mean {close[0]!r}?")


def noise_schedule_from(value: Any) -> NoiseSchedule:
    """A NoiseSchedule from a schedule object, our spec dict, or a diffusers-style config dict.

    Example:
        >>> ns = noise_schedule_from({"beta_schedule": "linear", "beta_start": 1e-4,
        ...                           "beta_end": 0.02, "num_train_timesteps": 1000})
        >>> float(ns.model_time(ns.t_max))
        999.0
    """
    if isinstance(value, NoiseSchedule):
        return value
    spec = parse_noise_schedule_spec(value)
    return _CLASSES[spec.kind](spec)
