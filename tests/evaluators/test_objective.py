"""The objective (issue 18): the teacher, distribution-level teacher metrics, noise floors, broken samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.evaluators.floor import noise_floor
from diffsearch.evaluators.noise import SEARCH_SEED, heldout_seeds, noise_set
from diffsearch.evaluators.reference import sample_batched, teacher_schedule
from diffsearch.evaluators.teacher import FLOOR_SEED, TEACHER_SEED, converged_steps, teacher_set
from diffsearch.search.runner import paired_comparison


def test_teacher_noise_is_disjoint_from_search_and_heldout_noise(gmm):
    ours = {tuple(row.tolist()) for seed in (TEACHER_SEED, FLOOR_SEED, FLOOR_SEED + 1) for row in noise_set(gmm, 500, seed)[0]}
    for seed in [SEARCH_SEED, *heldout_seeds(3)]:
        theirs = {tuple(row.tolist()) for row in noise_set(gmm, 500, seed)[0]}
        assert not ours & theirs
    assert TEACHER_SEED not in heldout_seeds(100) and FLOOR_SEED not in heldout_seeds(100)


def test_teacher_resolution_is_the_coarsest_that_agrees_with_twice_as_many_steps(gmm):
    convergence = converged_steps(gmm)
    assert convergence.converged and convergence.rmse <= convergence.tolerance and convergence.steps >= 50


def test_dense_output_equals_a_teacher_that_ends_there(gmm):
    teacher = teacher_set(gmm, SEARCH_SEED, 200, dense=True)
    x_T, _ = noise_set(gmm, 200, SEARCH_SEED)
    steps = teacher.info["steps"]
    for t_end in (gmm.noise_schedule.default_t_end, 0.0023, teacher.times[1]):
        direct = sample_batched(gmm, teacher_schedule(gmm, 1.0, float(t_end), steps), x_T)
        dense = teacher.at(gmm, float(t_end))
        assert float((dense - direct).pow(2).mean().sqrt() / direct.pow(2).mean().sqrt()) < 5e-3
    assert torch.equal(teacher.at(gmm, 0.0), teacher.denoised[-1])


def test_teacher_is_computed_once_per_noise_set(gmm):
    first = teacher_set(gmm, SEARCH_SEED, 128, dense=True)
    nfe = gmm.nfe
    assert teacher_set(gmm, SEARCH_SEED, 128, dense=True) is first and gmm.nfe == nfe


def test_fd_teacher_orders_presets_like_the_exact_frechet_distance(gmm):
    names = [("ddim", "logsnr"), ("dpmpp_2m", "logsnr"), ("unipc_bh2", "quadratic")]
    exact, teacher = [], []
    for name, spacing in names:
        schedule = diffsearch.load_schedule(f"preset:{name}", nfe=5, model=gmm, spacing=spacing)
        result = evaluate(gmm, schedule, samples=2000, metrics=["frechet_exact", "fd_teacher"])
        exact.append(result["frechet_exact"])
        teacher.append(result["fd_teacher"])
        assert result["metric_info"]["fd_teacher"]["reference"].startswith("teacher")
    assert np.argsort(exact).tolist() == np.argsort(teacher).tolist()


def test_floor_is_below_a_coarse_solver_and_has_a_spread(gmm):
    floor = noise_floor(gmm, "fd_teacher", 500, seeds=3)
    coarse = evaluate(gmm, diffsearch.load_schedule("preset:ddim", nfe=3, model=gmm), samples=500, metrics=["fd_teacher"])
    assert 0 < floor["floor"] < coarse["fd_teacher"] and floor["std"] > 0 and floor["samples"] == 500 and floor["seeds"] == 3
    assert noise_floor(gmm, "teacher_error", 500)["floor"] == 0.0


def test_samples_outside_the_data_range_fail_a_search_evaluation_and_are_reported(gmm):
    narrow = diffsearch.Denoiser(gmm.fn, gmm.noise_schedule, data_shape=(8,), name="narrow")
    narrow.data_range = (-0.5, 0.5)
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=narrow)
    failed = evaluate(narrow, schedule, samples=200, metrics=["fd_teacher"])
    assert failed["status"] == "failed" and "outside the data range" in failed["error"] and failed["out_of_range"] > 0.01
    reported = evaluate(narrow, schedule, samples=200, metrics=["fd_teacher"], max_out_of_range=1.0)
    assert reported["status"] == "ok" and reported["out_of_range"] == failed["out_of_range"] and reported["max_excursion"] > 0


def test_paired_comparison_interval_is_the_t_interval():
    best, baseline = [0.10, 0.12, 0.11], [0.15, 0.16, 0.14]
    result = paired_comparison(best, baseline, std=0.005)
    differences = np.subtract(best, baseline)
    low, high = stats.t.interval(0.95, 2, loc=differences.mean(), scale=stats.sem(differences))
    assert result["interval95"] == pytest.approx([low, high]) and result["beyond_two_std"]
    assert not paired_comparison(best, baseline, std=0.05)["beyond_two_std"]


def test_unknown_feature_space_lists_the_valid_ones(gmm):
    schedule = diffsearch.load_schedule("preset:ddim", nfe=3, model=gmm)
    with pytest.raises(DiffsearchError, match="valid feature extractors: digits, digits_multi, inception, raw"):
        evaluate(gmm, schedule, samples=50, metrics=["fd_teacher"], features="nope")
    with pytest.raises(DiffsearchError, match="unknown metric 'fd'; valid metrics: fd_teacher, fid, frechet_exact, kid, kid_teacher, teacher_error"):
        evaluate(gmm, schedule, samples=50, metrics=["fd"])
