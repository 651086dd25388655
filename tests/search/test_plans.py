"""Plans through the search engine: cache keys, the teacher's network, costs, the one space builder, one-line errors."""

from __future__ import annotations

import pytest
import torch

import diffsearch
from diffsearch.budget import parse_budget
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.cache import cache_key
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.models.blocks import BlockRunner, BlocksConfig
from diffsearch.solvers.plan import Plan
from diffsearch.spaces import SPACES


def blocked_gmm(gmm, name: str):
    """gmm's network behind one named block ``net`` (skip: a zero prediction), recording every configured mode."""
    runner, seen = BlockRunner(("net",)), []
    configure = runner.configure

    def record(modes):
        seen.append(None if modes is None else dict(modes))
        configure(modes)

    runner.configure = record

    def fn(x, t, cond):
        return runner.run("net", lambda: gmm.fn(x, t, cond), lambda: torch.zeros_like(x))

    model = diffsearch.Denoiser(fn, gmm.noise_schedule, data_shape=(8,), name=name, blocks=runner)
    return model, seen


def test_a_full_network_plan_keeps_its_schedules_cache_key_and_two_plans_on_one_schedule_differ(gmm):
    schedule = diffsearch.load_schedule("preset:ddim", nfe=3, model=gmm)
    spec = {"samples": 10}
    skip_first = Plan(schedule=schedule, network=(BlocksConfig(modes={"net": "skip"}), BlocksConfig(), BlocksConfig()))
    skip_last = Plan(schedule=schedule, network=(BlocksConfig(), BlocksConfig(), BlocksConfig(modes={"net": "skip"})))
    full = Plan(schedule=schedule, network=(BlocksConfig(modes={"net": "run"}),) * 3)
    assert cache_key(Plan(schedule=schedule), "m", spec) == cache_key(schedule, "m", spec) == cache_key(full, "m", spec)
    keys = {cache_key(plan, "m", spec) for plan in (schedule, skip_first, skip_last)}
    assert len(keys) == 3


def test_the_teacher_runs_the_full_base_network_never_the_candidates_configuration(gmm):
    model, seen = blocked_gmm(gmm, "blocked-teacher-test")
    plain = diffsearch.Denoiser(gmm.fn, gmm.noise_schedule, data_shape=(8,), name="plain-teacher-test")
    schedule = diffsearch.load_schedule("preset:ddim", nfe=4, model=gmm)
    plan = Plan(schedule=schedule, network=(BlocksConfig(),) * 3 + (BlocksConfig(modes={"net": "skip"}),))
    skipped = evaluate(model, plan, samples=64, metrics=["teacher_error"])
    teacher_calls = [modes for modes in seen if modes is None]
    assert {"net": "skip"} in seen and len(teacher_calls) > 100  # the candidate skipped; the teacher's calls ran it all
    assert skipped["teacher_error"] == pytest.approx(evaluate(plain, plan.schedule, samples=64, metrics=["teacher_error"])["teacher_error"], abs=0.5)
    full = evaluate(model, schedule, samples=64, metrics=["teacher_error"])
    reference = evaluate(plain, schedule, samples=64, metrics=["teacher_error"])
    assert full["teacher_error"] == pytest.approx(reference["teacher_error"], rel=1e-9)  # same teacher as a model without blocks
    assert skipped["teacher_error"] != full["teacher_error"]


def test_an_evaluation_records_the_plans_macs_ratio_and_seconds():
    layer = torch.nn.Linear(8, 8)
    runner = BlockRunner(("layer",))
    model = diffsearch.Denoiser(lambda x, t, c: runner.run("layer", lambda: layer(x), lambda: x), {"beta_schedule": "linear"},
                                data_shape=(8,), name="linear-plan", blocks=runner)
    model.module = layer
    schedule = diffsearch.load_schedule("preset:ddim", nfe=4, model=model)
    plan = Plan(schedule=schedule, network=(BlocksConfig(modes={"layer": "skip"}),) + (BlocksConfig(),) * 3)
    result = evaluate(model, plan, samples=16, metrics=["teacher_error"], max_out_of_range=1.0)
    assert result["macs"] == 3 * 64 and result["macs_ratio"] == pytest.approx(0.75) and result["seconds"] > 0
    assert evaluate(model, schedule, samples=16, metrics=["teacher_error"])["macs_ratio"] == 1.0


def test_space_cost_has_nfe_macs_and_macs_ratio(gmm):
    space = SPACES.get("timesteps")(gmm, parse_budget("4nfe"))
    cost = space.cost(space.initial()[0][1])
    assert set(cost) == {"nfe", "macs", "macs_ratio"} and cost["nfe"] == 4 and cost["macs_ratio"] == 1.0


def test_ray_actors_and_tune_trainables_build_the_timesteps_space_with_its_solver():
    """Seam: workers rebuilt ``timesteps`` from the space's options, which lack ``--solver``, so they ran dpmpp_2m."""
    from diffsearch.search.config import RunConfig
    from diffsearch.search.executors import Evaluator, evaluation_settings
    from diffsearch.search.runner import resolve

    config = RunConfig(model="gmm", space="timesteps", budget="4nfe", solver="unipc_bh2", strategy="random")
    model, space, metric = resolve(config)
    worker = Evaluator(evaluation_settings(config, space, metric, 100))
    assert space.solver == worker.space.solver == "unipc_bh2"
    candidate = space.initial()[0][1]
    assert worker.space.decode(candidate) == space.decode(candidate)


@pytest.mark.parametrize("candidate", [{}, {"timesteps": [1.0, 0.5, 0.1], "steps": [{"order": "x"}], "first_step": "model"},
                                       {"timesteps": "nope", "steps": [], "first_step": "model"}])
def test_validate_raises_one_line_diffsearch_errors(gmm, candidate):
    """Seam: ``SearchSpace.validate`` raised pydantic's ValidationError or a KeyError."""
    space = SPACES.get("solver_schedule")(gmm, parse_budget("2nfe"))
    with pytest.raises(DiffsearchError) as caught:
        space.validate(candidate)
    assert type(caught.value) is DiffsearchError and "\n" not in str(caught.value)


NARROW = """
import diffsearch
from diffsearch.models.gmm import build_gmm

def make():
    base = build_gmm()
    model = diffsearch.Denoiser(base.fn, base.noise_schedule, data_shape=(8,), name="narrow", data_range=(-0.01, 0.01))
    model.truth = base.truth
    return model
"""


@pytest.mark.parametrize("strategy", ["evolution", "s3"])
def test_a_search_whose_every_candidate_fails_stops_with_the_reason(tmp_path, strategy):
    """Seam: every candidate failing for one reason ran hundreds of failed trials (evolution) or crashed (s3)."""
    (tmp_path / "narrow.py").write_text(NARROW)
    config = {"model": f"{tmp_path / 'narrow.py'}:make", "space": "timesteps", "budget": "3nfe", "strategy": strategy, "evals": 60, "metric": "frechet_exact",
              "search_samples": 32, "final_samples": 32, "storage": f"sqlite:///{tmp_path}/study.db", "out": str(tmp_path / "best.json"),
              "progress": False, "strategy_options": {"proxy_samples": 16, "mutants": 30} if strategy == "s3" else {}}
    with pytest.raises(DiffsearchError, match="the first 20 evaluations all failed .*outside the data range") as caught:
        diffsearch.run_search(config)
    assert "\n" not in str(caught.value)
