"""Property tests of the ``Schedule`` value: JSON round-trip, sampling, NFE, and validation errors.

The strategy draws random *valid* schedules over the whole decision space of s3_spec.md section 3
(timesteps, prediction type, start point, order, derivative points and scales, correctors, first
step). Timesteps lie on a 40-point grid uniform in lambda between t = 1 and t = 1e-3, so that no
two points are closer than 1/40 of the lambda range: finite differences through almost coincident
points are ill-conditioned by construction, not a property of the sampler.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffsearch.errors import DiffsearchError
from diffsearch.export.artifact import load_schedule, parse_schedule, save_schedule
from diffsearch.models import noise_schedule_from
from diffsearch.models.gmm import DEFAULT_NOISE_SCHEDULE
from diffsearch.solvers.sampler import sample
from diffsearch.solvers.schedule import Corrector, Derivative, NoiseScheduleRef, Schedule, Step

NOISE_SCHEDULE = noise_schedule_from(DEFAULT_NOISE_SCHEDULE)
GRID_SIZE = 40
GRID = NOISE_SCHEDULE.inverse_lambda(
    np.linspace(float(NOISE_SCHEDULE.lambda_(1.0)), float(NOISE_SCHEDULE.lambda_(1e-3)), GRID_SIZE + 1)
)
GRID[0], GRID[-1] = 1.0, 1e-3
REFERENCE = NoiseScheduleRef(spec=NOISE_SCHEDULE.describe(), fingerprint=NOISE_SCHEDULE.fingerprint)
SETTINGS = settings(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def derivative_specs(draw, count: int, candidates: list[int]) -> tuple[Derivative, ...]:
    """``count`` derivative estimates; the k-th uses k..min(3, len(candidates)) distinct points."""
    specs = []
    for k in range(1, count + 1):
        size = draw(st.integers(k, max(k, min(3, len(candidates)))))
        points = draw(st.permutations(candidates))[:size]
        scale = draw(st.sampled_from(["none", "bh1", "bh2", "linear", "exp", "constant"]))
        low, high = (0.5, 1.5) if scale == "constant" else (-0.5, 0.5)
        coefficient = draw(st.floats(low, high)) if scale in ("linear", "exp", "constant") else 0.0
        specs.append(Derivative(points=tuple(points), scale=scale, coefficient=coefficient))
    return tuple(specs)


@st.composite
def steps(draw, index: int, final: bool, to_zero: bool) -> Step:
    """Step ``index``: ``index + 1`` evaluated points exist (-1 .. -(index + 1))."""
    available = index + 1
    start = draw(st.integers(-available, -1))
    others = [p for p in range(-1, -available - 1, -1) if p != start]
    order = 1 if to_zero else draw(st.integers(1, min(4, available)))
    derivatives = draw(derivative_specs(order - 1, others))
    corrector = None
    if not final and draw(st.booleans()):
        corrector_others = [p for p in range(-1, -available - 2, -1) if p != start - 1]
        corrector_order = draw(st.integers(1, min(4, available + 1)))
        corrector = Corrector(
            kind=draw(st.sampled_from(["pseudo", "implicit"])),
            order=corrector_order,
            derivatives=draw(derivative_specs(corrector_order - 1, corrector_others)),
        )
    prediction = draw(st.sampled_from(["noise", "data"]))
    return Step(prediction=prediction, order=order, start=start, derivatives=derivatives, corrector=corrector)


@st.composite
def schedules(draw) -> Schedule:
    n = draw(st.integers(1, 8))
    indices = sorted(draw(st.sets(st.integers(0, GRID_SIZE), min_size=n + 1, max_size=n + 1)))
    timesteps = [float(GRID[i]) for i in indices]
    to_zero = draw(st.booleans())
    if to_zero:
        timesteps[-1] = 0.0
    steps_ = tuple(draw(steps(i, i == n - 1, to_zero and i == n - 1)) for i in range(n))
    return Schedule(
        name=draw(st.none() | st.sampled_from(["a", "searched"])),
        noise_schedule=draw(st.sampled_from([None, REFERENCE])),
        timesteps=tuple(timesteps),
        steps=steps_,
        first_step=draw(st.sampled_from(["model", "zero_x0", "mean_x0"])),
    )


@SETTINGS
@given(schedules())
def test_json_round_trip(schedule):
    assert Schedule.model_validate_json(schedule.model_dump_json()) == schedule
    if schedule.noise_schedule is None:  # an artifact must name its noise schedule
        with pytest.raises(DiffsearchError, match="noise_schedule: required"):
            parse_schedule(schedule.model_dump_json())
        return
    assert parse_schedule(schedule.model_dump_json()) == schedule
    with tempfile.TemporaryDirectory() as directory:
        path = save_schedule(schedule, Path(directory) / "nested" / "schedule.json")
        assert load_schedule(path) == schedule
        assert load_schedule(str(path), nfe=schedule.nfe) == schedule


@settings(SETTINGS, max_examples=150)
@given(schedule=schedules())
def test_every_valid_schedule_samples_finitely_with_the_stated_nfe(gmm, schedule):
    x_T = torch.randn(16, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gmm.reset_nfe()
    x = sample(gmm, schedule, x_T)
    assert gmm.nfe == schedule.nfe
    assert x.shape == x_T.shape
    assert torch.isfinite(x).all()


# --- invalid schedules: each mutation breaks exactly one rule of a valid base -----------------

def base_schedule() -> dict:
    """A valid 4-step schedule touching every rule (5 NFE: one implicit corrector)."""
    return {
        "schema_version": "diffsearch.schedule/v1",
        "noise_schedule": REFERENCE.model_dump(),
        "timesteps": [1.0, 0.6, 0.3, 0.1, 0.001],
        "steps": [
            {"prediction": "data", "order": 1, "start": -1, "derivatives": [],
             "corrector": {"kind": "pseudo", "order": 2, "derivatives": [{"points": [-1]}]}},
            {"prediction": "noise", "order": 2, "start": -1, "derivatives": [{"points": [-2], "scale": "bh2"}],
             "corrector": {"kind": "implicit", "order": 3,
                           "derivatives": [{"points": [-1, -3]}, {"points": [-1, -3]}]}},
            {"prediction": "data", "order": 3, "start": -1,
             "derivatives": [{"points": [-2, -3]}, {"points": [-2, -3], "scale": "constant", "coefficient": 0.5}]},
            {"prediction": "data", "order": 2, "start": -2,
             "derivatives": [{"points": [-1], "scale": "linear", "coefficient": 0.1}]},
        ],
        "first_step": "model",
        "nfe": 5,
    }


def mutate(path: tuple, value=None, delete: bool = False):
    def apply(data: dict) -> None:
        target = data
        for key in path[:-1]:
            target = target[key]
        if delete:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


def set_timesteps(values: list[float]):
    return mutate(("timesteps",), values)


MUTATIONS = {
    "timesteps_not_decreasing": (set_timesteps([1.0, 0.6, 0.6, 0.1, 0.001]), "timesteps[2]"),
    "timesteps_increasing": (set_timesteps([1.0, 0.6, 0.3, 0.4, 0.001]), "timesteps[3]"),
    "too_few_timesteps": (set_timesteps([1.0, 0.6, 0.3, 0.001]), "timesteps"),
    "too_many_timesteps": (set_timesteps([1.0, 0.8, 0.6, 0.3, 0.1, 0.001]), "timesteps"),
    "nan_timestep": (set_timesteps([1.0, math.nan, 0.3, 0.1, 0.001]), "timesteps[1]"),
    "inf_timestep": (set_timesteps([math.inf, 0.6, 0.3, 0.1, 0.001]), "timesteps[0]"),
    "negative_timestep": (set_timesteps([1.0, 0.6, 0.3, 0.1, -0.001]), "timesteps[4]"),
    # strictly decreasing and >= 0 already force 0 to be last; the ordering error names the field
    "zero_not_last": (set_timesteps([1.0, 0.6, 0.3, 0.0, 0.001]), "timesteps[4]"),
    "no_steps": (lambda d: d.update(steps=[], timesteps=[1.0], nfe=0), "steps"),
    "order_above_history": (mutate(("steps", 0), {"order": 2, "derivatives": [{"points": [-2]}]}), "steps[0].order"),
    "order_above_max": (mutate(("steps", 2, "order"), 5), "steps[2].order"),
    "too_few_derivative_specs": (mutate(("steps", 2, "derivatives"), [{"points": [-2, -3]}]), "steps[2].derivatives"),
    "derivative_with_too_few_points": (mutate(("steps", 2, "derivatives", 1, "points"), [-2]), "steps[2].derivatives[1].points"),
    "point_out_of_range": (mutate(("steps", 2, "derivatives", 0, "points"), [-2, -4]), "steps[2].derivatives[0].points"),
    "point_positive": (mutate(("steps", 1, "derivatives", 0, "points"), [1]), "steps[1].derivatives[0].points"),
    "point_equal_to_start": (mutate(("steps", 3, "derivatives", 0, "points"), [-2]), "steps[3].derivatives[0].points"),
    "duplicate_points": (mutate(("steps", 2, "derivatives", 1, "points"), [-2, -2]), "steps[2].derivatives[1].points"),
    "start_before_first_evaluation": (mutate(("steps", 1, "start"), -3), "steps[1].start"),
    "start_not_negative": (mutate(("steps", 1, "start"), 0), "steps[1].start"),
    "corrector_on_final_step": (
        mutate(("steps", 3, "corrector"), {"kind": "pseudo", "order": 1, "derivatives": []}), "steps[3].corrector"),
    "corrector_wrong_derivative_count": (
        mutate(("steps", 1, "corrector", "derivatives"), [{"points": [-1, -3]}]), "steps[1].corrector.derivatives"),
    "corrector_point_equal_to_its_start": (
        mutate(("steps", 0, "corrector", "derivatives"), [{"points": [-2]}]), "steps[0].corrector.derivatives[0].points"),
    "unknown_corrector_kind": (mutate(("steps", 0, "corrector", "kind"), "explicit"), "steps[0].corrector.kind"),
    "nfe_mismatch": (mutate(("nfe",), 4), "nfe"),
    "unknown_top_level_key": (mutate(("solver",), "unipc"), "solver"),
    "unknown_step_key": (mutate(("steps", 1, "skip"), 0.5), "steps[1].skip"),
    "unknown_derivative_key": (mutate(("steps", 1, "derivatives", 0, "relaxation"), "bh2"), "steps[1].derivatives[0].relaxation"),
    "wrong_schema_version": (mutate(("schema_version",), "diffsearch.schedule/v2"), "schema_version"),
    "unknown_scale": (mutate(("steps", 1, "derivatives", 0, "scale"), "bh3"), "steps[1].derivatives[0].scale"),
    "unknown_prediction": (mutate(("steps", 1, "prediction"), "v"), "steps[1].prediction"),
    "unknown_first_step": (mutate(("first_step",), "average_x0"), "first_step"),
    "higher_order_step_to_zero": (set_timesteps([1.0, 0.6, 0.3, 0.1, 0.0]), "steps[3]"),
    "non_finite_coefficient": (mutate(("steps", 3, "derivatives", 0, "coefficient"), math.inf), "steps[3].derivatives[0].coefficient"),
    "nan_coefficient": (mutate(("steps", 2, "derivatives", 1, "coefficient"), math.nan), "steps[2].derivatives[1].coefficient"),
    "missing_noise_schedule": (mutate(("noise_schedule",), delete=True), "noise_schedule"),
}


def test_base_schedule_is_valid():
    schedule = parse_schedule(base_schedule())
    assert schedule.nfe == 5
    assert parse_schedule(json.dumps(base_schedule())) == schedule


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_invalid_schedule_is_rejected_naming_the_field(name):
    apply, field = MUTATIONS[name]
    data = copy.deepcopy(base_schedule())
    apply(data)
    with pytest.raises(DiffsearchError) as error:
        parse_schedule(data)
    assert field in str(error.value), str(error.value)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_json_tokens_are_rejected(token):
    text = json.dumps(base_schedule()).replace("0.1,", f"{token},", 1)
    with pytest.raises(DiffsearchError, match=token):
        parse_schedule(text)


def test_invalid_json_text_is_a_diffsearch_error():
    with pytest.raises(DiffsearchError, match="not valid JSON"):
        parse_schedule("{not json")
