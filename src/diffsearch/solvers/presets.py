"""Known solvers as USF schedules (s3_spec.md section 4), each equal to its diffusers scheduler.

Orders per step (warm-up, lower-order final) follow the matching diffusers scheduler's default
config, so ``preset:NAME`` on a given timestep grid reproduces that scheduler step for step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from diffsearch.errors import DiffsearchError
from diffsearch.models.noise_schedules import NoiseSchedule
from diffsearch.registry import Registry
from diffsearch.solvers.schedule import Corrector, Derivative, NoiseScheduleRef, Schedule, Step, default_points
from diffsearch.solvers.timesteps import OPTIMISED_SPACINGS, make_timesteps

PRESETS: Registry[Callable[..., tuple[Step, ...]]] = Registry("preset")


def dpmsolver_multistep_orders(n: int, solver_order: int, terminal_zero: bool) -> list[int]:
    """DPMSolverMultistep / DEISMultistep: warm-up 1, 2, ...; lower order at the end below 15 steps
    (and first order into t = 0)."""
    orders = []
    for i in range(n):
        lower_final = i == n - 1 and (n < 15 or terminal_zero)
        lower_second = i == n - 2 and n < 15
        order = min(solver_order, i + 1)
        orders.append(1 if lower_final else min(order, 2) if lower_second else order)
    return orders


def unipc_orders(n: int, solver_order: int) -> list[int]:
    """UniPCMultistepScheduler: this_order = min(order, steps left, warm-up)."""
    return [min(solver_order, n - i, i + 1) for i in range(n)]


def singlestep_orders(n: int, solver_order: int, terminal_zero: bool, lower_order_final: bool = False) -> list[int]:
    """DPMSolverSinglestepScheduler.get_order_list (lower_order_final forced for uneven n or t = 0)."""
    lower_order_final = lower_order_final or n % solver_order != 0 or terminal_zero
    group = list(range(1, solver_order + 1))
    if not lower_order_final:
        return group * (n // solver_order)
    if solver_order == 3:
        tails = {0: [1, 2, 1], 1: [1], 2: [1, 2]}
        full = n // 3 - (1 if n % 3 == 0 else 0)
        orders = group * full + tails[n % 3]
    elif solver_order == 2:
        orders = group * (n // 2 - 1) + [1, 1] if n % 2 == 0 else group * (n // 2) + [1]
    else:
        orders = [1] * n
    if terminal_zero:
        orders[-1] = 1
    return orders


def _multistep(prediction: str, order: int, first: Derivative | None = None, higher: Sequence[Derivative] = ()) -> Step:
    if order == 1:
        return Step(prediction=prediction, order=1)
    if order == 2 and first is not None:
        return Step(prediction=prediction, order=2, derivatives=(first,))
    points = default_points(order - 1, -1)
    derivatives = tuple(
        higher[k] if k < len(higher) else Derivative(points=points) for k in range(order - 1)
    )
    return Step(prediction=prediction, order=order, derivatives=derivatives)


@PRESETS.register("ddim")
def ddim(n: int, terminal_zero: bool) -> tuple[Step, ...]:
    """DDIM: first-order exponential integrator (noise and data forms coincide)."""
    return tuple(Step(prediction="data", order=1) for _ in range(n))


def _dpmpp_multistep(n: int, terminal_zero: bool, solver_order: int, solver_type: str, third_order: str) -> tuple[Step, ...]:
    midpoint = Derivative(points=(-2,), scale="bh2") if solver_type == "midpoint" else Derivative(points=(-2,))
    second = 0.5 if third_order == "diffusers" else 1.0
    higher = (Derivative(points=(-2, -3)), Derivative(points=(-2, -3), scale="constant", coefficient=second))
    orders = dpmsolver_multistep_orders(n, solver_order, terminal_zero)
    return tuple(_multistep("data", order, midpoint, higher) for order in orders)


@PRESETS.register("dpmpp_2m")
def dpmpp_2m(n: int, terminal_zero: bool, solver_type: str = "midpoint") -> tuple[Step, ...]:
    """DPM-Solver++(2M), diffusers' DPMSolverMultistepScheduler(solver_order=2)."""
    return _dpmpp_multistep(n, terminal_zero, 2, solver_type, "diffusers")


@PRESETS.register("dpmpp_3m")
def dpmpp_3m(n: int, terminal_zero: bool, third_order: str = "diffusers") -> tuple[Step, ...]:
    """DPM-Solver++(3M). ``third_order="diffusers"`` reproduces the reference, whose second-derivative
    term is half the Taylor one (s3_spec.md 4.1); ``"taylor"`` is the exact order-3 update."""
    return _dpmpp_multistep(n, terminal_zero, 3, "midpoint", third_order)


def _singlestep(prediction: str, n: int, solver_order: int, terminal_zero: bool, lower_order_final: bool) -> tuple[Step, ...]:
    steps = []
    for order in singlestep_orders(n, solver_order, terminal_zero, lower_order_final):
        if order == 1:
            steps.append(Step(prediction=prediction, order=1))
        else:
            scale = "bh2" if order == 2 else "none"
            steps.append(Step(prediction=prediction, order=2, start=-order, derivatives=(Derivative(points=(-1,), scale=scale),)))
    return tuple(steps)


@PRESETS.register("dpm_solver_2")
def dpm_solver_2(n: int, terminal_zero: bool, lower_order_final: bool = False) -> tuple[Step, ...]:
    """Singlestep DPM-Solver-2 (noise prediction, midpoint), DPMSolverSinglestep(algorithm_type="dpmsolver")."""
    return _singlestep("noise", n, 2, terminal_zero, lower_order_final)


@PRESETS.register("dpm_solver_3")
def dpm_solver_3(n: int, terminal_zero: bool, lower_order_final: bool = False) -> tuple[Step, ...]:
    """Singlestep DPM-Solver-3 (noise prediction, midpoint): sub-steps of order 1, 2, 2 from one anchor."""
    return _singlestep("noise", n, 3, terminal_zero, lower_order_final)


@PRESETS.register("dpmpp_2s")
def dpmpp_2s(n: int, terminal_zero: bool, lower_order_final: bool = False) -> tuple[Step, ...]:
    """DPM-Solver++(2S), singlestep data prediction, midpoint."""
    return _singlestep("data", n, 2, terminal_zero, lower_order_final)


def _unipc(n: int, scale: str, solver_order: int) -> tuple[Step, ...]:
    """UniP-p predictor + UniC corrector on every step but the last (s3_spec.md 2.4, 4.2)."""
    steps = []
    for i, order in enumerate(unipc_orders(n, solver_order)):
        predictor = _multistep("data", order, Derivative(points=(-2,), scale=scale))
        if i == n - 1:
            steps.append(predictor)
            continue
        points = (-1, *default_points(order - 1, -2))
        derivatives = tuple(
            Derivative(points=points, scale=scale if order == 1 else "none") for _ in range(order)
        )
        corrector = Corrector(kind="pseudo", order=order + 1, derivatives=derivatives)
        steps.append(predictor.model_copy(update={"corrector": corrector}))
    return tuple(steps)


@PRESETS.register("unipc_bh1")
def unipc_bh1(n: int, terminal_zero: bool, order: int = 2) -> tuple[Step, ...]:
    """UniPC with B(h) = h (UniPCMultistepScheduler(solver_type="bh1"))."""
    return _unipc(n, "bh1", order)


@PRESETS.register("unipc_bh2")
def unipc_bh2(n: int, terminal_zero: bool, order: int = 2) -> tuple[Step, ...]:
    """UniPC with B(h) = e^h - 1 (diffusers' default UniPCMultistepScheduler)."""
    return _unipc(n, "bh2", order)


@PRESETS.register("deis_2")
def deis_2(n: int, terminal_zero: bool) -> tuple[Step, ...]:
    """DEIS log-rho multistep, order 2 (noise prediction, full-order differences)."""
    return tuple(_multistep("noise", o) for o in dpmsolver_multistep_orders(n, 2, terminal_zero))


@PRESETS.register("deis_3")
def deis_3(n: int, terminal_zero: bool) -> tuple[Step, ...]:
    """DEIS log-rho multistep, order 3."""
    return tuple(_multistep("noise", o) for o in dpmsolver_multistep_orders(n, 3, terminal_zero))


def preset_schedule(
    name: str,
    nfe: int,
    noise_schedule: NoiseSchedule,
    spacing: str = "logsnr",
    t_start: float | None = None,
    t_end: float | None = None,
    timesteps: Sequence[float] | None = None,
    model: Any = None,
    **options: Any,
) -> Schedule:
    """The schedule of preset ``name`` with ``nfe`` evaluations (one per step for every preset).

    ``timesteps`` (continuous t, nfe + 1 values) overrides the spacing family. Optimised spacings
    (``gits``, ``dmn``, ``ld3``, ``ays``) are computed for this preset, on ``model`` where they need one.
    """
    builder, extra = PRESETS.get(name), {}
    if nfe < 1:
        raise DiffsearchError(f"nfe must be >= 1, got {nfe}")
    if timesteps is None and spacing in OPTIMISED_SPACINGS:
        from diffsearch.solvers.anchors import anchor_timesteps

        record = anchor_timesteps(spacing, noise_schedule if model is None else model, name, nfe, t_start, t_end, options)
        times, extra = np.asarray(record.timesteps), {"spacing_seconds": record.seconds}
    elif timesteps is None:
        times = make_timesteps(noise_schedule, nfe, spacing, t_start, t_end)
    else:
        times = np.asarray(timesteps, dtype=np.float64)
        if len(times) != nfe + 1:
            raise DiffsearchError(f"timesteps: {nfe} NFE need {nfe + 1} timesteps, got {len(times)}")
    try:
        steps = builder(nfe, bool(times[-1] == 0.0), **options)
    except TypeError as error:
        raise DiffsearchError(f"preset {name!r}: {error}") from None
    return Schedule(
        name=f"preset:{name}",
        noise_schedule=NoiseScheduleRef(spec=noise_schedule.describe(), fingerprint=noise_schedule.fingerprint),
        timesteps=tuple(float(t) for t in times),
        steps=steps,
        provenance={"preset": name, "spacing": "custom" if timesteps is not None else spacing, "options": options, **extra},
    )
