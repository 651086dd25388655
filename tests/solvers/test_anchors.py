"""Optimised spacings (gits, dmn, ld3, ays), the differentiable sampler path, refinement and the anchor cache."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.noise import HELDOUT_SEED, SEARCH_SEED, noise_set
from diffsearch.models.noise_schedules import noise_schedule_from
from diffsearch.solvers.anchors import AnchorRequest, anchor_record
from diffsearch.solvers.anchors.differentiable import differentiable_sample
from diffsearch.solvers.anchors.dmn import error_bound, lagrange_integrals
from diffsearch.solvers.anchors.gits import best_path
from diffsearch.solvers.anchors.ld3 import refine
from diffsearch.solvers.anchors.teacher import anchor_noise, teacher_final
from diffsearch.solvers.timesteps import make_timesteps

SMALL = {"gits": {"grid_points": 21, "warmup": 32}, "dmn": {},
         "ld3": {"samples": 20, "epochs": 2, "teacher_steps": 100}}


def _request(model, solver: str = "dpmpp_2m", nfe: int = 5) -> AnchorRequest:
    ns = model.noise_schedule
    return AnchorRequest(ns, solver, nfe, float(ns.t_max), float(ns.default_t_end), model)


@pytest.mark.parametrize("name", ["gits", "dmn", "ld3"])
@pytest.mark.parametrize("nfe", [2, 5])
def test_spacing_gives_decreasing_times_in_range(gmm, name, nfe):
    record = anchor_record(name, _request(gmm, "unipc_bh2", nfe), use_cache=False, **SMALL[name])
    times = np.asarray(record.timesteps)
    ns = gmm.noise_schedule
    assert len(times) == nfe + 1
    assert np.all(np.diff(times) < 0)
    assert times[0] == pytest.approx(ns.t_max) and times[-1] == pytest.approx(ns.default_t_end)
    assert record.seconds > 0 and record.method == name


def test_spacings_resolve_through_load_schedule_and_cache(gmm, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFSEARCH_CACHE", str(tmp_path))
    first = diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=gmm, spacing="dmn")
    files = list((tmp_path / "anchors").glob("dmn-*.json"))
    assert len(files) == 1 and first.provenance["spacing"] == "dmn"
    again = diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=gmm, spacing="dmn")
    assert again.timesteps == first.timesteps and again.provenance["spacing_seconds"] == first.provenance["spacing_seconds"]
    other = diffsearch.load_schedule("preset:dpmpp_3m", nfe=4, model=gmm, spacing="dmn")  # another solver: another entry
    assert len(list((tmp_path / "anchors").glob("dmn-*.json"))) == 2 and other.nfe == 4


def test_model_spacings_need_a_model_and_unknown_names_list_all(gmm):
    with pytest.raises(DiffsearchError, match="needs the model"):
        diffsearch.load_schedule("preset:ddim", nfe=4, model=gmm.noise_schedule, spacing="gits")
    with pytest.raises(DiffsearchError, match="gits.*ld3|ays.*gits"):
        make_timesteps(gmm.noise_schedule, 4, "nonsense")
    with pytest.raises(DiffsearchError, match="preset_schedule"):
        make_timesteps(gmm.noise_schedule, 4, "dmn")


def test_ays_is_the_published_schedule_and_refuses_other_noise_schedules(gmm):
    sd = noise_schedule_from({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=10, model=sd, spacing="ays")
    train_steps = [999, 845, 730, 587, 443, 310, 193, 116, 53, 13]  # diffusers AysSchedules["StableDiffusionXLTimesteps"]
    assert schedule.timesteps == pytest.approx([(k + 1) / 1000 for k in train_steps] + [0.0])
    with pytest.raises(DiffsearchError, match="published for: stable_diffusion .*scaled_linear"):
        diffsearch.load_schedule("preset:dpmpp_2m", nfe=10, model=gmm, spacing="ays")
    with pytest.raises(DiffsearchError, match="10 NFE only"):
        diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=sd, spacing="ays")


def test_ays_matches_diffusers_published_constants():
    from diffusers.schedulers.scheduling_utils import AysSchedules

    from diffsearch.solvers.anchors.ays import PUBLISHED

    assert list(PUBLISHED["stable_diffusion"][1]) == AysSchedules["StableDiffusionTimesteps"]
    assert list(PUBLISHED["stable_diffusion_xl"][1]) == AysSchedules["StableDiffusionXLTimesteps"]


def test_ld3_never_sees_search_or_heldout_noise():
    model = diffsearch.load_model("gmm")
    seen: list[torch.Tensor] = []
    network, t_top = model.fn, float(model.noise_schedule.model_time(model.noise_schedule.t_max))

    def spy(x, t_in, cond=None):
        if float(t_in[0]) == t_top:
            seen.append(x.detach().clone())
        return network(x, t_in, cond)

    model.fn = spy
    anchor_record("ld3", _request(model, nfe=3), use_cache=False, **SMALL["ld3"])
    inputs = torch.cat(seen).double()
    assert len(inputs) >= 20
    for seed in (SEARCH_SEED, HELDOUT_SEED):
        forbidden = noise_set(model, 4000, seed)[0].double()
        assert torch.cdist(inputs, forbidden).min() > 1e-2


@pytest.mark.parametrize("preset", ["ddim", "dpmpp_2m", "dpmpp_3m", "unipc_bh2", "dpm_solver_2", "deis_3"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_differentiable_path_equals_sample(gmm, preset, dtype):
    schedule = diffsearch.load_schedule(f"preset:{preset}", nfe=6, model=gmm, spacing="quadratic")
    x_T = torch.randn(64, 8, generator=torch.Generator().manual_seed(2), dtype=dtype)
    lambdas = torch.tensor(gmm.noise_schedule.lambda_(np.asarray(schedule.timesteps)), dtype=torch.float64)
    reference = diffsearch.sample(gmm, schedule, x_T)
    out = differentiable_sample(gmm, schedule, lambdas, x_T)
    assert float((out - reference).abs().max() / reference.abs().max()) < 1e-5


def test_differentiable_path_equals_sample_on_searched_schedules(gmm):
    from diffsearch.budget import parse_budget
    from diffsearch.spaces.solver_schedule import SolverScheduleSpace

    space = SolverScheduleSpace(gmm, parse_budget("5nfe"))
    rng = np.random.default_rng(0)
    x_T = torch.randn(32, 8, generator=torch.Generator().manual_seed(4))
    for _ in range(12):
        schedule = space.decode(space.sample(rng))
        lambdas = torch.tensor(gmm.noise_schedule.lambda_(np.asarray(schedule.timesteps)), dtype=torch.float64)
        reference = diffsearch.sample(gmm, schedule, x_T)
        assert float((differentiable_sample(gmm, schedule, lambdas, x_T) - reference).abs().max() / reference.abs().max()) < 1e-5


def test_gradient_in_lambda_matches_finite_differences(gmm):
    """The autograd gradient (solver weights + the network's time derivative) against central differences of sample."""
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=gmm)
    x_T = torch.randn(16, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    target = torch.zeros_like(x_T)
    lambdas = torch.tensor(gmm.noise_schedule.lambda_(np.asarray(schedule.timesteps)), dtype=torch.float64, requires_grad=True)
    ((differentiable_sample(gmm, schedule, lambdas, x_T) - target) ** 2).sum().backward()
    for i in (1, 2):
        values = []
        for sign in (1, -1):
            shifted = lambdas.detach().clone()
            shifted[i] += sign * 1e-3
            times = gmm.noise_schedule.inverse_lambda(shifted.numpy())
            moved = schedule.model_copy(update={"timesteps": tuple(float(t) for t in times)})
            values.append(float(((diffsearch.sample(gmm, moved, x_T) - target) ** 2).sum()))
        numeric = (values[0] - values[1]) / 2e-3
        assert float(lambdas.grad[i]) == pytest.approx(numeric, rel=0.03, abs=1e-3)


def test_refine_keeps_the_nfe_and_does_not_worsen_the_validation_loss(gmm):
    schedule = diffsearch.load_schedule("preset:unipc_bh2", nfe=4, model=gmm)
    x_T, _ = anchor_noise(gmm, 40, seed=11)
    target = teacher_final(gmm, x_T, None, None, schedule.timesteps[0], schedule.timesteps[-1], steps=200)
    refined = refine(gmm, schedule, target, x_T, epochs=3, t_end_range=(1e-3, 3e-3))
    assert refined.nfe == schedule.nfe and [s.order for s in refined.steps] == [s.order for s in schedule.steps]
    assert np.all(np.diff(refined.timesteps) < 0) and 1e-3 - 1e-12 <= refined.timesteps[-1] <= 3e-3 + 1e-12
    validation = slice(20, None)

    def error(candidate):
        return float(((diffsearch.sample(gmm, candidate, x_T[validation]) - target[validation]) ** 2).mean())

    assert error(refined) <= error(schedule)
    if refined is not schedule:
        assert error(refined) < error(schedule) and refined.provenance["refined"] == "ld3"


def test_gits_dp_is_the_brute_force_optimum():
    rng = np.random.default_rng(0)
    cost = np.triu(rng.uniform(0.1, 2.0, size=(8, 8)), 1)
    cost[cost == 0] = np.inf
    for jumps, coefficient in itertools.product((2, 3, 4), (1.0, 1.15)):
        def total(path):
            return sum(cost[a, b] * coefficient**k for k, (a, b) in enumerate(zip(path[:-1], path[1:])))

        best = min(([0, *inner, 7] for inner in itertools.combinations(range(1, 7), jumps - 1)), key=total)
        assert best_path(cost, jumps, coefficient) == best


def test_dmn_lagrange_integrals_match_quadrature_and_lower_the_bound(gmm):
    points = np.array([-2.0, -1.2, -0.5])
    for j in range(3):
        def basis(x, j=j):
            return math.exp(x) * np.prod([(x - points[m]) / (points[j] - points[m]) for m in range(3) if m != j])

        assert lagrange_integrals(points, -0.5, 0.4)[j] == pytest.approx(quad(basis, -0.5, 0.4)[0], rel=1e-10)
    record = anchor_record("dmn", _request(gmm, "unipc_bh2", 6), use_cache=False)
    assert record.details["bound"] < record.details["initial_bound"]


def test_spaces_take_anchor_spacings_as_initial_candidates(gmm):
    from diffsearch.budget import parse_budget
    from diffsearch.spaces.timesteps import TimestepsSpace

    space = TimestepsSpace(gmm, parse_budget("4nfe"), solver="unipc_bh2", anchor_spacings=["dmn"])
    labels = [label for label, _ in space.initial()]
    assert "preset:unipc_bh2@dmn" in labels and "preset:unipc_bh2@logsnr" in labels
    with pytest.raises(DiffsearchError, match="unknown optimised spacing"):
        TimestepsSpace(gmm, parse_budget("4nfe"), anchor_spacings=["nope"]).initial()


def test_refine_refuses_a_network_without_gradients():
    model = diffsearch.load_model("gmm")
    network = model.fn

    def frozen(x, t_in, cond=None):
        with torch.no_grad():
            return network(x, t_in, cond)

    model.fn = frozen
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=3, model=model)
    x_T, _ = anchor_noise(model, 8, seed=3)
    with pytest.raises(DiffsearchError, match="no gradient"):
        refine(model, schedule, torch.zeros_like(x_T), x_T, epochs=1)
