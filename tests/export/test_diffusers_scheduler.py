"""USFScheduler inside a diffusers loop equals diffsearch.sample; stock exports are validated."""

from __future__ import annotations

import json

import pytest
import torch

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.solvers.schedule import Schedule
from diffsearch.testing.diffusers_loop import diffusers_loop as shared_loop

diffusers = pytest.importorskip("diffusers")
from diffsearch.export.diffusers import (  # noqa: E402
    USFScheduler, stock_scheduler, to_diffusers_sigmas, to_diffusers_timesteps,
)

BETAS = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
PRESETS = ("dpmpp_2m", "unipc_bh2", "dpm_solver_3")


def save_unconditional(directory):
    """A tiny UNet2DModel + DDPMScheduler pipeline directory (epsilon prediction)."""
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, norm_num_groups=4,
    )
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(**BETAS)).save_pretrained(directory)
    return directory


def save_latent_conditional(directory):
    """A tiny latent text-style pipeline: UNet2DConditionModel (v_prediction) + AutoencoderKL."""
    torch.manual_seed(1)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4,
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=8,
    )
    scheduler = diffusers.DDIMScheduler(**{**BETAS, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, prediction_type="v_prediction")
    for name, part in (("unet", unet), ("vae", vae), ("scheduler", scheduler)):
        part.save_pretrained(directory / name)
    index = {"_class_name": "DiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDIMScheduler"]}
    (directory / "model_index.json").write_text(json.dumps(index))
    return directory


@pytest.fixture(scope="module")
def unconditional(tmp_path_factory):
    return diffsearch.load_model(f"diffusers:{save_unconditional(tmp_path_factory.mktemp('uncond'))}")


@pytest.fixture(scope="module")
def conditional(tmp_path_factory):
    return diffsearch.load_model(f"diffusers:{save_latent_conditional(tmp_path_factory.mktemp('cond'))}")


def scheduler_config(model):
    return {**model.noise_schedule.describe(), "prediction_type": model.prediction_type}


def diffusers_loop(model, scheduler, x_T, cond=None, guidance=None):
    """A plain diffusers denoising loop with batched classifier-free guidance."""
    return shared_loop(model.unet, scheduler, x_T, scheduler.schedule.nfe, cond, model.null_cond, guidance)


def relative_error(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def handmade(model) -> Schedule:
    """Mixed noise/data predictions, orders 1-3, a singlestep sub-step, pseudo and implicit correctors."""
    ns = model.noise_schedule
    steps = [
        {"prediction": "data", "order": 1, "corrector": {"kind": "pseudo", "order": 2}},
        {"prediction": "noise", "order": 2},
        {"prediction": "data", "order": 3, "corrector": {"kind": "implicit", "order": 2}},
        {"prediction": "noise", "order": 3},
        {"prediction": "data", "order": 2, "start": -2},
        {"prediction": "data", "order": 1},
    ]
    return Schedule.model_validate(dict(
        name="handmade", noise_schedule={"spec": ns.describe(), "fingerprint": ns.fingerprint},
        timesteps=(0.9905, 0.8012, 0.6321, 0.4503, 0.3, 0.1207, 0.0), steps=steps,
    ))


def schedules(model):
    yield from (diffsearch.load_schedule(f"preset:{name}", nfe=5, model=model) for name in PRESETS)
    yield handmade(model)


def test_unconditional_loop_equals_sample(unconditional):
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    for schedule in schedules(unconditional):
        scheduler = USFScheduler.from_artifact(schedule, scheduler_config=scheduler_config(unconditional))
        expected = diffsearch.sample(unconditional, schedule, x_T)
        assert relative_error(diffusers_loop(unconditional, scheduler, x_T), expected) < 1e-5, schedule.name


def test_conditional_guided_loop_equals_sample(conditional):
    generator = torch.Generator().manual_seed(1)
    x_T, cond = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 3, 8, generator=generator)
    for schedule in schedules(conditional):
        scheduler = USFScheduler.from_artifact(schedule, scheduler_config=scheduler_config(conditional))
        assert scheduler.config.prediction_type == "v_prediction"
        expected = diffsearch.sample(conditional, schedule, x_T, cond=cond, guidance=3.0)
        assert relative_error(diffusers_loop(conditional, scheduler, x_T, cond, 3.0), expected) < 1e-5, schedule.name


def test_timesteps_are_model_times(unconditional):
    schedule = handmade(unconditional)
    scheduler = USFScheduler.from_artifact(schedule)
    scheduler.set_timesteps(schedule.nfe)
    assert len(scheduler.timesteps) == schedule.nfe == 7
    assert scheduler.timesteps.dtype == torch.float32  # off the integer grid
    assert float(scheduler.timesteps[3]) == float(scheduler.timesteps[4]) == pytest.approx(1000 * 0.4503 - 1)
    grid = diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=unconditional, spacing="linspace")
    on_grid = USFScheduler.from_artifact(grid)
    on_grid.set_timesteps(5)
    assert on_grid.timesteps.tolist() == [999, 799, 599, 400, 200] and on_grid.timesteps.dtype == torch.int64


def test_save_pretrained_round_trip(unconditional, tmp_path):
    schedule = handmade(unconditional)
    scheduler = USFScheduler.from_artifact(schedule, scheduler_config=scheduler_config(unconditional))
    scheduler.save_pretrained(tmp_path)
    text = (tmp_path / "scheduler_config.json").read_text()
    json.loads(text, parse_constant=lambda token: pytest.fail(f"non-finite {token}"))
    loaded = USFScheduler.from_pretrained(tmp_path)
    assert loaded.schedule == schedule and loaded.config.prediction_type == "epsilon"
    x_T = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(diffusers_loop(unconditional, loaded, x_T), diffusers_loop(unconditional, scheduler, x_T))


def test_artifact_file_and_stock_export_match(unconditional, tmp_path):
    """A grid schedule exported to DPMSolverMultistep reproduces the preset through diffusers' own solver."""
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=unconditional, spacing="linspace")
    path = diffsearch.save_schedule(schedule, tmp_path / "best.json")
    export = to_diffusers_timesteps(path, "DPMSolverMultistepScheduler")
    assert export["timesteps"] == [999, 799, 599, 400, 200]
    assert export["config_overrides"]["final_sigmas_type"] == "zero"
    stock = stock_scheduler(export, scheduler_config(unconditional))
    assert stock.timesteps.tolist() == export["timesteps"]
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x = x_T
    for t in stock.timesteps:
        with torch.no_grad():
            x = stock.step(unconditional.unet(x, t).sample, t, x).prev_sample
    assert relative_error(x, diffsearch.sample(unconditional, schedule, x_T)) < 1e-4


def test_sigmas_export(unconditional):
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=unconditional, spacing="linspace")
    export = to_diffusers_sigmas(schedule, "EulerDiscreteScheduler")
    assert export["sigmas"][-1] == 0.0 and len(export["sigmas"]) == 6
    assert all(a > b for a, b in zip(export["sigmas"], export["sigmas"][1:]))
    stock = stock_scheduler(export, scheduler_config(unconditional))
    assert stock.sigmas.tolist() == pytest.approx(export["sigmas"], rel=1e-5)


def refuse(match, call, *args, **kwargs):
    with pytest.raises(DiffsearchError, match=match):
        call(*args, **kwargs)


def test_refusals(unconditional):
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=unconditional)
    scheduler = USFScheduler.from_artifact(schedule)
    refuse("call set_timesteps first", scheduler.step, torch.zeros(1), 999, torch.zeros(1))
    refuse(r"set_timesteps\(10\).*exactly 5 model evaluations", scheduler.set_timesteps, 10)
    refuse("do not pass timesteps", scheduler.set_timesteps, timesteps=[999, 500])
    other = {**BETAS, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
    refuse("noise schedule mismatch", USFScheduler.from_artifact, schedule, scheduler_config=other)
    refuse("noise schedule mismatch", scheduler.check_compatible, diffusers.DDIMScheduler(**other))
    refuse("prediction_type mismatch", scheduler.check_compatible, {**BETAS, "prediction_type": "v_prediction"})
    scheduler.check_compatible(diffusers.DDPMScheduler(**BETAS))
    refuse("first_step 'zero_x0' is not supported", USFScheduler.from_artifact, schedule.model_copy(update={"first_step": "zero_x0", "nfe": 4}))
    refuse("needs an artifact", USFScheduler.from_config, dict(diffusers.DDPMScheduler(**BETAS).config))
    refuse(r"timesteps\[1\].*not an integer", to_diffusers_timesteps, schedule, "DPMSolverMultistepScheduler")
    refuse("UniPCMultistepScheduler does not accept custom timesteps; schedulers that do: DDPMScheduler",
           to_diffusers_timesteps, schedule, "UniPCMultistepScheduler")
    refuse("DPMSolverMultistepScheduler does not accept custom sigmas; schedulers that do: EulerDiscreteScheduler",
           to_diffusers_sigmas, schedule, "DPMSolverMultistepScheduler")
    ending = diffsearch.load_schedule("preset:dpm_solver_3", nfe=6, model=unconditional, t_end=1e-3)
    refuse("ending at t = 0", to_diffusers_sigmas, ending)
    refuse("implicit correctors", to_diffusers_timesteps, handmade(unconditional), "EulerDiscreteScheduler")


def test_step_checks_the_loop(unconditional):
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=2, model=unconditional)
    scheduler = USFScheduler.from_artifact(schedule)
    scheduler.set_timesteps(2)
    x = torch.zeros(1, 1, 8, 8)
    refuse("expected timestep", scheduler.step, x, 5, x)
    for t in scheduler.timesteps:
        x = scheduler.step(torch.zeros_like(x), t, x).prev_sample
    refuse("more than the artifact's 2 evaluations", scheduler.step, x, scheduler.timesteps[-1], x)
