"""The solver schedule: a validated value holding every per-step USF decision (s3_spec.md section 3).

Indices of evaluated points are negative and relative to the newest one: at step ``i`` the model has
been evaluated at ``t_0 .. t_i`` (``i + 1`` points), ``-1`` is ``t_i``, ``-2`` is ``t_{i-1}``. A step's
``start`` is the point whose ``x`` it integrates from (``-1``: multistep; ``-2``/``-3``: sub-steps of a
singlestep solver). A corrector runs after the evaluation at ``t_{i+1}``, so its indices count that
new point as ``-1`` and its start is ``start - 1``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = "diffsearch.schedule/v1"
MAX_ORDER = 4
MAX_STEPS = 4096  # bound on steps per schedule (teachers and references use up to 2000; 200,000 ran for minutes)
MAX_COEFFICIENT = 1e6  # bound on |coefficient| of a derivative scale
Scale = Literal["none", "bh1", "bh2", "linear", "exp", "constant"]
Prediction = Literal["noise", "data"]
FirstStep = Literal["model", "zero_x0", "mean_x0"]


class _Value(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Derivative(_Value):
    """How one Taylor derivative F^(k) is estimated: finite differences through ``points``, then scaled.

    ``scale`` multiplies the estimate by R(z) (z = h for noise, -h for data prediction): ``bh1``
    z^2/(2(e^z-1-z)); ``bh2`` (= DPM-Solver's midpoint) z(e^z-1)/(2(e^z-1-z)); ``linear`` 1 + c h;
    ``exp`` 1 + c (e^z - 1); ``constant`` c; ``none`` 1.
    """

    points: tuple[int, ...] = Field(max_length=2 * MAX_ORDER)
    scale: Scale = "none"
    coefficient: float = 0.0

    @field_validator("coefficient")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value) or abs(value) > MAX_COEFFICIENT:
            raise ValueError(f"must be a finite number within +-{MAX_COEFFICIENT:g}")
        return value


class Corrector(_Value):
    """A UniC-style corrector after the step: ``pseudo`` reuses the next evaluation (no NFE),
    ``implicit`` re-evaluates the model at the corrected point (+1 NFE)."""

    kind: Literal["pseudo", "implicit"] = "pseudo"
    order: int = Field(2, ge=1, le=MAX_ORDER)
    derivatives: tuple[Derivative, ...] = Field((), max_length=MAX_ORDER)


class Step(_Value):
    """One exponential-integrator step from ``start`` to the next timestep.

    Omitted ``derivatives`` default to full-order multistep estimates (the points just before
    ``start``); an omitted corrector's derivatives default to UniC's (the new point plus those).
    """

    prediction: Prediction = "data"
    order: int = Field(1, ge=1, le=MAX_ORDER)
    start: int = Field(-1, le=-1, ge=-MAX_STEPS)
    derivatives: tuple[Derivative, ...] = Field((), max_length=MAX_ORDER)
    corrector: Corrector | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_derivatives(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        order, start = data.get("order", 1), data.get("start", -1)
        if "derivatives" not in data and isinstance(order, int) and isinstance(start, int):
            data = {**data, "derivatives": [d.model_dump() for d in multistep_derivatives(order, start)]}
        corrector = data.get("corrector")
        if isinstance(corrector, dict) and "derivatives" not in corrector and isinstance(start, int):
            corrector_order = corrector.get("order", 2)
            if isinstance(corrector_order, int):
                points = (-1, *default_points(corrector_order - 2, start - 1))
                derivatives = [{"points": points} for _ in range(corrector_order - 1)]
                data = {**data, "corrector": {**corrector, "derivatives": derivatives}}
        return data


def default_points(count: int, start: int) -> tuple[int, ...]:
    """The ``count`` points just before ``start`` (multistep finite differences)."""
    return tuple(start - j for j in range(1, count + 1))


def multistep_derivatives(order: int, start: int = -1) -> tuple[Derivative, ...]:
    """Full-order estimates: every derivative through the order-1 points before ``start``."""
    points = default_points(order - 1, start)
    return tuple(Derivative(points=points) for _ in range(order - 1))


def compute_nfe(steps: tuple[Step, ...] | list[Step], first_step: str) -> int:
    """NFE = steps - [analytical first step] + implicit correctors (s3_spec.md 3.4)."""
    implicit = sum(1 for step in steps if step.corrector is not None and step.corrector.kind == "implicit")
    return len(steps) - (first_step != "model") + implicit


class NoiseScheduleRef(_Value):
    """The noise schedule a schedule belongs to: its spec and fingerprint."""

    spec: dict[str, Any]
    fingerprint: str


class Schedule(_Value):
    """A ``diffsearch.schedule/v1`` solver schedule: timesteps plus per-step decisions.

    Example:
        >>> s = Schedule(noise_schedule=None, timesteps=(1.0, 0.5, 0.001),
        ...              steps=(Step(), Step(order=2, derivatives=multistep_derivatives(2))))
        >>> s.nfe
        2
    """

    schema_version: Literal["diffsearch.schedule/v1"] = SCHEMA_VERSION
    name: str | None = Field(None, max_length=256)
    noise_schedule: NoiseScheduleRef | None
    timesteps: tuple[float, ...] = Field(max_length=MAX_STEPS + 1)
    steps: tuple[Step, ...] = Field(max_length=MAX_STEPS)
    first_step: FirstStep = "model"
    nfe: int | None = None
    metrics: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        _check_timesteps(self.timesteps, len(self.steps))
        for index, step in enumerate(self.steps):
            _check_step(index, step, len(self.steps), self.timesteps[index + 1])
        computed = compute_nfe(self.steps, self.first_step)
        if self.nfe is None:
            object.__setattr__(self, "nfe", computed)
        elif self.nfe != computed:
            raise ValueError(f"nfe: stored {self.nfe} but the steps cost {computed} evaluations")
        return self


def _check_timesteps(timesteps: tuple[float, ...], n_steps: int) -> None:
    if n_steps < 1:
        raise ValueError("steps: a schedule needs at least one step")
    if len(timesteps) != n_steps + 1:
        raise ValueError(f"timesteps: {n_steps} steps need {n_steps + 1} timesteps, got {len(timesteps)}")
    for index, value in enumerate(timesteps):
        if not math.isfinite(value) or not 0 <= value <= 1:
            raise ValueError(f"timesteps[{index}]: {value} is not a time in [0, 1] (t = 1 is pure noise, 0 clean data)")
    for index in range(n_steps):
        if not timesteps[index] > timesteps[index + 1]:
            raise ValueError(
                f"timesteps[{index + 1}]: {timesteps[index + 1]} must be strictly below timesteps[{index}] = {timesteps[index]}"
            )


def _check_points(where: str, derivatives: tuple[Derivative, ...], start: int, available: int) -> None:
    for k, derivative in enumerate(derivatives, start=1):
        field = f"{where}.derivatives[{k - 1}].points"
        if len(derivative.points) < k:
            raise ValueError(f"{field}: derivative order {k} needs at least {k} points, got {len(derivative.points)}")
        if len(set(derivative.points)) != len(derivative.points):
            raise ValueError(f"{field}: points must be distinct, got {list(derivative.points)}")
        for point in derivative.points:
            if not -available <= point <= -1 or point == start:
                raise ValueError(
                    f"{field}: point {point} is not an evaluated point other than the start {start} "
                    f"(allowed -1..-{available})"
                )


def _check_step(index: int, step: Step, n_steps: int, t_next: float) -> None:
    where = f"steps[{index}]"
    available = index + 1
    if step.start < -available:
        raise ValueError(f"{where}.start: {step.start} is before the first evaluation (allowed -1..-{available})")
    if step.order - 1 > available - 1:
        raise ValueError(
            f"{where}.order: order {step.order} needs {step.order - 1} earlier evaluations; only {available - 1} exist"
        )
    if len(step.derivatives) != step.order - 1:
        raise ValueError(f"{where}.derivatives: order {step.order} needs {step.order - 1} derivative specs, got {len(step.derivatives)}")
    _check_points(where, step.derivatives, step.start, available)
    if t_next == 0.0 and (step.order != 1 or step.corrector is not None):
        raise ValueError(f"{where}: a step to t = 0 must be order 1 without corrector (higher orders diverge there)")
    if step.corrector is None:
        return
    if index == n_steps - 1:
        raise ValueError(f"{where}.corrector: a corrector needs a following evaluation; the final step cannot have one")
    corrector = step.corrector
    if len(corrector.derivatives) != corrector.order - 1:
        raise ValueError(
            f"{where}.corrector.derivatives: order {corrector.order} needs {corrector.order - 1} derivative specs, got {len(corrector.derivatives)}"
        )
    _check_points(f"{where}.corrector", corrector.derivatives, step.start - 1, available + 1)
