"""Plans: validation, fingerprints, JSON round-trip, and which configuration reaches which evaluation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.models.blocks import BlockRunner, BlocksConfig
from diffsearch.solvers.plan import Plan, schedule_fingerprint
from diffsearch.solvers.schedule import Schedule


def recording_model(gmm):
    """gmm's exact network behind a real BlockRunner with two blocks; records the modes of every call."""
    runner, seen = BlockRunner(("a", "b")), []

    def fn(x, t_in, cond):
        seen.append(dict(runner.modes) if runner.modes is not None else None)
        out = gmm.fn(x, t_in, cond)
        return runner.run("a", lambda: out, lambda: out) + 0 * runner.run("b", lambda: out, lambda: out)

    model = diffsearch.Denoiser(fn, gmm.noise_schedule, data_shape=(8,), data_mean=gmm.data_mean, blocks=runner)
    return model, seen


def configs(n, *modes):
    return tuple(BlocksConfig(modes=modes[i] if i < len(modes) else {}) for i in range(n))


def test_configuration_k_reaches_evaluation_k_with_analytical_first_step_and_implicit_corrector(gmm):
    model, seen = recording_model(gmm)
    base = diffsearch.load_schedule("preset:unipc_bh2", nfe=4, model=gmm)
    steps = list(base.steps)
    steps[1] = steps[1].model_copy(update={"corrector": steps[1].corrector.model_copy(update={"kind": "implicit"})})
    schedule = Schedule.model_validate({**base.model_dump(), "steps": [s.model_dump() for s in steps], "first_step": "zero_x0", "nfe": None})
    assert schedule.nfe == 4  # 4 steps - analytical first + 1 implicit corrector
    modes = [{"a": "skip"}, {"b": "skip"}, {"a": "reuse"}, {"b": "reuse"}]
    plan = Plan(schedule=schedule, network=configs(4, *modes))
    diffsearch.sample(model, plan, torch.randn(3, 8))
    assert seen == modes and model.nfe == 4


def test_full_network_plan_is_bit_identical_to_the_schedule(gmm):
    digits = diffsearch.load_model("digits")
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=digits)
    x_T, labels = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(6)
    expected = diffsearch.sample(digits, schedule, x_T, labels, 1.5)
    assert torch.equal(diffsearch.sample(digits, Plan(schedule=schedule, network=configs(4)), x_T, labels, 1.5), expected)
    assert torch.equal(diffsearch.sample(digits, Plan(schedule=schedule), x_T, labels, 1.5), expected)


def test_fingerprints_separate_plans_on_one_schedule(gmm):
    schedule = diffsearch.load_schedule("preset:ddim", nfe=3, model=gmm)
    full = Plan(schedule=schedule)
    skip = Plan(schedule=schedule, network=configs(3, {}, {"mid": "skip"}))
    reuse = Plan(schedule=schedule, network=configs(3, {}, {"mid": "reuse"}))
    assert len({full.fingerprint, skip.fingerprint, reuse.fingerprint}) == 3
    assert full.fingerprint == schedule_fingerprint(schedule) == Plan(schedule=schedule, network=configs(3)).fingerprint
    explicit_run = Plan(schedule=schedule, network=configs(3, {"up0": "run"}, {"mid": "skip"}))
    assert explicit_run.fingerprint == skip.fingerprint  # run entries are the default


@pytest.mark.parametrize(("network", "message"), [
    (configs(2), "2 configurations for a schedule of 3 NFE"),
    (configs(3, {"mid": "reuse"}), r"network\[0\].modes.mid: reuse needs an earlier evaluation"),
    (configs(3, {"mid": "skip"}, {"mid": "reuse"}), r"network\[1\].modes.mid: reuse needs"),
])
def test_invalid_plans_name_the_field(gmm, network, message):
    with pytest.raises(ValidationError, match=message):
        Plan(schedule=diffsearch.load_schedule("preset:ddim", nfe=3, model=gmm), network=network)


def test_models_refuse_block_modes_they_cannot_run(gmm):
    schedule = diffsearch.load_schedule("preset:ddim", nfe=2, model=gmm)
    with pytest.raises(DiffsearchError, match="model 'gmm' declares no blocks"):
        diffsearch.sample(gmm, Plan(schedule=schedule, network=configs(2, {"mid": "skip"})), torch.randn(2, 8))
    model, _ = recording_model(gmm)
    with pytest.raises(DiffsearchError, match="block\\(s\\) mid that model 'model' lacks; it has a, b"):
        diffsearch.sample(model, Plan(schedule=schedule, network=configs(2, {"mid": "skip"})), torch.randn(2, 8))


MODES = st.dictionaries(st.sampled_from(("down0", "down1", "mid", "up1", "up0")), st.sampled_from(("run", "skip")), max_size=5)


@settings(max_examples=30, deadline=None)
@given(st.lists(MODES, min_size=4, max_size=4), st.sampled_from(("down1", "mid")))
def test_json_round_trip(modes, reused):
    gmm = diffsearch.load_model("gmm")
    modes[3] = {**modes[3], reused: "reuse"}
    modes[0] = {**modes[0], reused: "run"}
    plan = Plan(schedule=diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=gmm), network=configs(4, *modes))
    again = Plan.model_validate_json(plan.model_dump_json())
    assert again == plan and again.fingerprint == plan.fingerprint
