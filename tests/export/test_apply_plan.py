"""apply_plan in a diffusers loop equals diffsearch.sample for a plan with skipped and reused blocks;
remove_plan gives back the original scheduler, UNet and samples exactly."""

from __future__ import annotations

import json

import pytest
import torch

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.models.blocks import BlocksConfig
from diffsearch.solvers.plan import Plan
from diffsearch.testing.diffusers_loop import diffusers_loop as shared_loop

diffusers = pytest.importorskip("diffusers")
from diffsearch.export.diffusers import apply_plan, remove_plan  # noqa: E402

BETAS = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
TINY = dict(sample_size=8, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4)


class LatentPipeline(diffusers.DiffusionPipeline):
    """A minimal latent pipeline (UNet2DConditionModel + AutoencoderKL + scheduler)."""

    def __init__(self, unet, vae, scheduler) -> None:
        super().__init__()
        self.register_modules(unet=unet, vae=vae, scheduler=scheduler)


def save_pixel(directory):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(in_channels=1, out_channels=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), **TINY)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(**BETAS)).save_pretrained(directory)
    return directory


def save_latent(directory):
    torch.manual_seed(1)
    unet = diffusers.UNet2DConditionModel(
        in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8, attention_head_dim=2, **TINY,
    )
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), norm_num_groups=4,
                                  down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",), sample_size=8)
    scheduler = diffusers.DDIMScheduler(**{**BETAS, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
                                        prediction_type="v_prediction")
    for name, part in (("unet", unet), ("vae", vae), ("scheduler", scheduler)):
        part.save_pretrained(directory / name)
    index = {"_class_name": "LatentPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "scheduler": ["diffusers", "DDIMScheduler"]}
    (directory / "model_index.json").write_text(json.dumps(index))
    return directory


def load_latent_pipeline(directory):
    return LatentPipeline(diffusers.UNet2DConditionModel.from_pretrained(directory / "unet").eval(),
                          diffusers.AutoencoderKL.from_pretrained(directory / "vae").eval(),
                          diffusers.DDIMScheduler.from_pretrained(directory / "scheduler"))


def diffusers_loop(pipe, x_T, steps, cond=None, null=None, guidance=None):
    return shared_loop(pipe.unet, pipe.scheduler, x_T, steps, cond, null, guidance)


def block_plan(model, names) -> Plan:
    """5 NFE of UniPC with a block skipped at every other evaluation and a DeepCache-style reuse of deep blocks."""
    schedule = diffsearch.load_schedule("preset:unipc_bh2", nfe=5, model=model)
    skip, deep = names[1], [n for n in names if n.startswith(("mid_block", "up_blocks.0"))]
    network = (BlocksConfig(), BlocksConfig(modes={skip: "skip"}), BlocksConfig(modes=dict.fromkeys(deep, "reuse")),
               BlocksConfig(modes={skip: "skip", **dict.fromkeys(deep, "reuse")}), BlocksConfig())
    return Plan(schedule=schedule, network=network)


def relative_error(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


def check_apply_and_remove(pipe, model, tmp_path, x_T, cond=None, guidance=None):
    plan = block_plan(model, model.blocks.names)
    path = diffsearch.save_plan(plan, tmp_path / "best.json")
    null = model.null_cond if cond is not None else None
    original_scheduler = pipe.scheduler
    before = diffusers_loop(pipe, x_T, 5, cond, null, guidance)
    apply_plan(pipe, path)
    planned = diffusers_loop(pipe, x_T, 5, cond, null, guidance)
    expected = diffsearch.sample(model, plan, x_T, cond, guidance)
    assert relative_error(planned, expected) < 1e-5
    full = diffsearch.sample(model, plan.schedule, x_T, cond, guidance)
    assert relative_error(planned, full) > 1e-4  # the blocks really changed the network (10x the tolerance above)
    assert torch.equal(diffusers_loop(pipe, x_T, 5, cond, null, guidance), planned)  # the cache resets per run
    with pytest.raises(DiffsearchError, match="already has a plan"):
        apply_plan(pipe, path)
    remove_plan(pipe)
    assert pipe.scheduler is original_scheduler and not pipe.unet._forward_pre_hooks
    assert all("forward" not in module.__dict__ for module in pipe.unet.modules())
    assert torch.equal(diffusers_loop(pipe, x_T, 5, cond, null, guidance), before)


def test_pixel_unet2d_pipeline(tmp_path):
    directory = save_pixel(tmp_path / "pixel")
    pipe = diffusers.DDPMPipeline.from_pretrained(directory)
    model = diffsearch.load_model(f"diffusers:{directory}")
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    check_apply_and_remove(pipe, model, tmp_path, x_T)


def test_latent_unet2d_condition_pipeline_with_guidance(tmp_path):
    directory = save_latent(tmp_path / "latent")
    pipe, model = load_latent_pipeline(directory), diffsearch.load_model(f"diffusers:{directory}")
    generator = torch.Generator().manual_seed(1)
    x_T, cond = torch.randn(2, 4, 8, 8, generator=generator), torch.randn(2, 3, 8, generator=generator)
    check_apply_and_remove(pipe, model, tmp_path, x_T, cond, 3.0)


def test_remove_without_apply_and_unknown_blocks_are_refused(tmp_path):
    directory = save_pixel(tmp_path / "pixel")
    pipe = diffusers.DDPMPipeline.from_pretrained(directory)
    with pytest.raises(DiffsearchError, match="no plan installed"):
        remove_plan(pipe)
    model = diffsearch.load_model(f"diffusers:{directory}")
    schedule = diffsearch.load_schedule("preset:ddim", nfe=2, model=model)
    with pytest.raises(DiffsearchError, match="block\\(s\\) mid that model 'UNet2DModel' lacks"):
        apply_plan(pipe, Plan(schedule=schedule, network=(BlocksConfig(), BlocksConfig(modes={"mid": "skip"}))))
    assert not pipe.unet._forward_pre_hooks and getattr(pipe, "_diffsearch_plan", None) is None
