"""``load_model("diffusers:<dir>")``: pipeline and bare UNet directories, offline, plus clear refusals."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import diffsearch
from diffsearch.errors import DiffsearchError

diffusers = pytest.importorskip("diffusers")

BETAS = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
TINY = dict(sample_size=8, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4)


def unet2d(**extra):
    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        in_channels=1, out_channels=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2, **TINY, **extra
    )


def conditional_unet():
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel(
        in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=8, attention_head_dim=2, **TINY,
    )


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pipeline")
    scheduler = diffusers.DDPMScheduler(**BETAS, prediction_type="v_prediction")
    diffusers.DDPMPipeline(unet=unet2d(), scheduler=scheduler).save_pretrained(directory)
    return directory


def test_pipeline_directory(pipeline_dir):
    model = diffsearch.load_model(f"diffusers:{pipeline_dir}")
    assert model.prediction_type == "v_prediction" and model.data_shape == (1, 8, 8)
    assert model.noise_schedule.fingerprint == diffsearch.noise_schedule_from(BETAS).fingerprint
    schedule = diffsearch.load_schedule("preset:unipc_bh2", nfe=4, model=model)
    x = diffsearch.sample(model, schedule, torch.randn(2, 1, 8, 8))
    assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all() and model.nfe == 4
    assert model.decode is None  # no VAE: samples are the images


def test_bare_class_conditional_unet(tmp_path):
    unet2d(num_class_embeds=3).save_pretrained(tmp_path)
    diffusers.DDIMScheduler(**{**BETAS, "beta_schedule": "squaredcos_cap_v2"}).save_pretrained(tmp_path)
    model = diffsearch.load_model(f"diffusers:{tmp_path}")
    assert model.num_classes == 3 and model.null_cond is None
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=3, model=model)
    x = diffsearch.sample(model, schedule, torch.randn(2, 1, 8, 8), cond=torch.tensor([0, 2]))
    assert torch.isfinite(x).all()
    with pytest.raises(DiffsearchError, match="no unconditional input"):
        diffsearch.sample(model, schedule, torch.randn(2, 1, 8, 8), cond=torch.tensor([0, 2]), guidance=2.0)


def test_latent_conditional_pipeline_with_saved_null_cond(tmp_path):
    from safetensors.torch import save_file

    conditional_unet().save_pretrained(tmp_path / "unet")
    diffusers.DDIMScheduler(**BETAS).save_pretrained(tmp_path / "scheduler")
    diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8,), norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
    ).save_pretrained(tmp_path / "vae")
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    null = torch.randn(1, 3, 8)
    save_file({"null_cond": null}, str(tmp_path / "null_cond.safetensors"))
    model = diffsearch.load_model(f"diffusers:{tmp_path}")
    assert torch.equal(model.null_cond, null) and model.data_shape == (4, 8, 8)
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=3, model=model)
    latents = diffsearch.sample(model, schedule, torch.randn(2, 4, 8, 8), cond=torch.randn(2, 3, 8), guidance=4.0)
    assert model.nfe == 3  # cond and uncond share one batched call per step
    assert model.decode(latents).shape == (2, 3, 8, 8)


def test_zero_null_embedding_by_default(tmp_path):
    conditional_unet().save_pretrained(tmp_path)
    diffusers.DDPMScheduler(**BETAS).save_pretrained(tmp_path / "scheduler")
    model = diffsearch.load_model(f"diffusers:{tmp_path}")
    assert model.null_cond.shape == (1, 1, 8) and not model.null_cond.any()


def refuse(match, directory):
    with pytest.raises(DiffsearchError, match=match):
        diffsearch.load_model(f"diffusers:{directory}")


def test_missing_and_malformed_directories(tmp_path, pipeline_dir):
    refuse("directory does not exist", tmp_path / "nowhere")
    refuse(r"neither a pipeline \(model_index.json\) nor a UNet directory", tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(pipeline_dir, broken)
    (broken / "scheduler" / "scheduler_config.json").write_text("{not json")
    refuse(r"scheduler/scheduler_config.json is not valid JSON", broken)
    (broken / "scheduler" / "scheduler_config.json").write_text(json.dumps({**BETAS, "prediction_type": "flow"}))
    refuse("prediction_type 'flow' is not one of", broken)
    (broken / "scheduler" / "scheduler_config.json").write_text(json.dumps(BETAS))
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
    refuse("cannot load UNet2DModel from unet/", broken)
    shutil.rmtree(broken / "unet")
    refuse("missing unet/config.json", broken)
    bare = tmp_path / "bare"
    unet2d().save_pretrained(bare)
    refuse("needs scheduler_config.json", bare)
    (bare / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    (bare / "scheduler_config.json").write_text(json.dumps(BETAS))
    refuse("unet class 'VQModel' is not supported", bare)


def test_declared_null_label_is_not_a_class_to_sample(tmp_path):
    """num_class_embeds = classes + 1 with the null label declared: labels cover the real classes only."""
    from safetensors.torch import save_file

    from diffsearch.evaluators.noise import noise_set

    unet2d(num_class_embeds=4).save_pretrained(tmp_path)
    diffusers.DDPMScheduler(**BETAS).save_pretrained(tmp_path)
    save_file({"null_cond": torch.tensor(3)}, str(tmp_path / "null_cond.safetensors"))
    model = diffsearch.load_model(f"diffusers:{tmp_path}")
    assert model.num_classes == 3 and model.null_cond == 3
    _, labels = noise_set(model, 30)
    assert sorted(labels.tolist()) == sorted(list(range(3)) * 10)
    save_file({"null_cond": torch.tensor(0)}, str(tmp_path / "null_cond.safetensors"))
    refuse("null label 0 must be the last class embedding", tmp_path)


def test_declared_capabilities_of_a_diffusers_model(pipeline_dir):
    model = diffsearch.load_model(f"diffusers:{pipeline_dir}")
    assert model.data_range is None and model.truth is None and model.reference_data is None
    assert model.feature_extractor == "raw" and model.blocks.names[0] == "down_blocks.0.resnets.0"
