"""Timestep families: n steps <-> n + 1 decreasing continuous times (s3_spec.md 1.6).

Continuous families run from ``t_start`` (default T) to ``t_end`` (default 1/N for discrete
schedules, 1e-3 for continuous ones). diffusers' integer spacings (``linspace``, ``leading``,
``trailing``, as DPMSolverMultistep / UniPC / DEIS compute them) give n integer timesteps k, mapped
to t = (k + 1) / N, followed by the terminal: ``t_end`` if given, else 0 (diffusers'
``final_sigmas_type="zero"``; use ``t_end=1/N`` for ``"sigma_min"``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from diffsearch.errors import DiffsearchError
from diffsearch.models.noise_schedules import DiscreteVP, NoiseSchedule
from diffsearch.registry import Registry

TIMESTEP_FAMILIES: Registry[Callable[..., np.ndarray]] = Registry("spacing")
# Spacings optimised for a model and solver (diffsearch.solvers.anchors), resolved by preset_schedule.
OPTIMISED_SPACINGS: Registry = Registry("optimised spacing")
OPTIMISED_SPACINGS.register("gits", "diffsearch.solvers.anchors.gits:GITS")
OPTIMISED_SPACINGS.register("dmn", "diffsearch.solvers.anchors.dmn:DMN")
OPTIMISED_SPACINGS.register("ld3", "diffsearch.solvers.anchors.ld3:LD3")
OPTIMISED_SPACINGS.register("ays", "diffsearch.solvers.anchors.ays:AYS")


@TIMESTEP_FAMILIES.register("time_uniform")
def time_uniform(ns: NoiseSchedule, n: int, t_start: float, t_end: float) -> np.ndarray:
    """Uniform in t."""
    return np.linspace(t_start, t_end, n + 1)


@TIMESTEP_FAMILIES.register("logsnr")
def logsnr(ns: NoiseSchedule, n: int, t_start: float, t_end: float) -> np.ndarray:
    """Uniform in lambda = log(alpha / sigma), mapped back by inverse_lambda."""
    lambdas = np.linspace(float(ns.lambda_(t_start)), float(ns.lambda_(t_end)), n + 1)
    t = ns.inverse_lambda(lambdas)
    t[0], t[-1] = t_start, t_end
    return t


@TIMESTEP_FAMILIES.register("quadratic")
def quadratic(ns: NoiseSchedule, n: int, t_start: float, t_end: float) -> np.ndarray:
    """DPM-Solver's time_quadratic: (linspace(sqrt t_start, sqrt t_end))^2."""
    t = np.linspace(np.sqrt(t_start), np.sqrt(t_end), n + 1) ** 2
    t[0], t[-1] = t_start, t_end
    return t


@TIMESTEP_FAMILIES.register("karras")
def karras(ns: NoiseSchedule, n: int, t_start: float, t_end: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (EDM) rho-spaced VE sigmas = e^{-lambda}, mapped back to t."""
    sigma_max, sigma_min = np.exp(-float(ns.lambda_(t_start))), np.exp(-float(ns.lambda_(t_end)))
    ramp = np.linspace(0.0, 1.0, n + 1)
    sigmas = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    t = ns.inverse_lambda(-np.log(sigmas))
    t[0], t[-1] = t_start, t_end
    return t


def _diffusers_integer(ns: NoiseSchedule, n: int, spacing: str) -> np.ndarray:
    """diffusers' integer timesteps (DPMSolverMultistep/UniPC set_timesteps, linear schedules)."""
    if not isinstance(ns, DiscreteVP):
        raise DiffsearchError(f"spacing {spacing!r} needs a discrete noise schedule; use time_uniform, logsnr, quadratic or karras")
    total = ns.num_train_timesteps
    if spacing == "linspace":
        return np.linspace(0, total - 1, n + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "leading":
        return (np.arange(0, n + 1) * (total // (n + 1))).round()[::-1][:-1].astype(np.int64)
    return np.arange(total, 0, -total / n).round().astype(np.int64) - 1


def _diffusers_family(spacing: str) -> Callable[..., np.ndarray]:
    def family(ns: NoiseSchedule, n: int, t_start: float | None, t_end: float | None) -> np.ndarray:
        integers = _diffusers_integer(ns, n, spacing)
        return np.append(ns.t_from_timestep(integers), 0.0 if t_end is None else t_end)

    family.__doc__ = f"diffusers' {spacing!r} integer spacing, then the terminal time."
    return family


for _name in ("linspace", "leading", "trailing"):
    TIMESTEP_FAMILIES.register(_name, _diffusers_family(_name))
DIFFUSERS_SPACINGS = ("linspace", "leading", "trailing")


def check_spacing(spacing: str) -> str:
    """``spacing`` if it names a timestep family or an optimised spacing; else one error listing them all."""
    if spacing not in TIMESTEP_FAMILIES and spacing not in OPTIMISED_SPACINGS:
        valid = ", ".join(sorted(TIMESTEP_FAMILIES.names() + OPTIMISED_SPACINGS.names()))
        raise DiffsearchError(f"unknown spacing {spacing!r}; valid spacings: {valid}")
    return spacing


def make_timesteps(
    ns: NoiseSchedule, n_steps: int, spacing: str = "logsnr", t_start: float | None = None, t_end: float | None = None
) -> np.ndarray:
    """n_steps + 1 strictly decreasing times of the named family.

    Example:
        >>> from diffsearch.models import noise_schedule_from
        >>> ns = noise_schedule_from({"beta_schedule": "linear"})
        >>> make_timesteps(ns, 2, "time_uniform").round(4).tolist()
        [1.0, 0.5005, 0.001]
    """
    if n_steps < 1:
        raise DiffsearchError(f"number of steps must be >= 1, got {n_steps}")
    if spacing in OPTIMISED_SPACINGS:
        raise DiffsearchError(f"spacing {spacing!r} is optimised for a solver (and model): use preset_schedule(..., model=)")
    family = TIMESTEP_FAMILIES.get(check_spacing(spacing))
    if spacing in DIFFUSERS_SPACINGS:
        return family(ns, n_steps, t_start, t_end)
    t_start = ns.t_max if t_start is None else t_start
    t_end = ns.default_t_end if t_end is None else t_end
    if not 0.0 < t_end < t_start:
        raise DiffsearchError(
            f"spacing {spacing!r} needs 0 < t_end < t_start, got t_end={t_end}, t_start={t_start}; "
            "to end at t = 0 use linspace, leading or trailing"
        )
    return family(ns, n_steps, t_start, t_end)
