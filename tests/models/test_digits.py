"""The built-in digits model: data split, offline loading, guidance, training determinism, sample quality."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.models.digits import (
    UNET_WEIGHTS,
    TrainConfig,
    build_digits,
    digits_split,
    train_digits,
)
from diffsearch.models._digits_unet import UNetConfig

GUIDANCE = 2.0


@pytest.fixture(scope="module")
def digits():
    return diffsearch.load_model("digits")


def test_split_is_seeded_stratified_and_scaled():
    split = digits_split()
    assert split.train_images.shape == (1437, 1, 8, 8) and split.held_out_images.shape == (360, 1, 8, 8)
    assert split.train_images.dtype == torch.float32 and split.held_out_labels.dtype == torch.long
    assert split.train_images.min() == -1.0 and split.train_images.max() == 1.0
    assert torch.bincount(split.held_out_labels, minlength=10).min() >= 35
    again = digits_split()
    assert torch.equal(again.held_out_images, split.held_out_images)
    assert not torch.equal(digits_split(seed=1).held_out_labels, split.held_out_labels)


def test_digits_loads_offline(no_network):
    model = build_digits()
    assert model.name == "digits" and model.prediction_type == "epsilon"
    assert model.data_shape == (1, 8, 8) and model.num_classes == 10 and model.null_cond == 10
    assert model.noise_schedule.fingerprint == diffsearch.noise_schedule_from(
        {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
    ).fingerprint
    assert model.data_mean.shape == (1, 8, 8)
    assert torch.allclose(model.data_mean, digits_split().train_images.mean(0))
    assert model.feature_extractor == "digits"
    images, labels = model.reference_data()
    assert images.shape == (1437, 1, 8, 8) and labels.shape == (1437,)  # the train split: the FID reference
    assert model.floor_data()[0].shape == (360, 1, 8, 8)  # held-out digits: the noise floor


def test_weights_are_small_and_fingerprinted():
    metadata = json.loads(UNET_WEIGHTS.with_suffix(".json").read_text())
    digest = hashlib.sha256(UNET_WEIGHTS.read_bytes()).hexdigest()
    assert metadata["sha256"] == digest
    assert build_digits().fingerprint == f"digits-{digest[:16]}"
    assert UNET_WEIGHTS.stat().st_size < 3_000_000
    assert metadata["architecture"] == UNetConfig.model_validate(metadata["architecture"]).model_dump(mode="json")


def test_missing_weights_explain_how_to_train(tmp_path):
    with pytest.raises(DiffsearchError, match="python -m diffsearch.models.digits train"):
        build_digits(tmp_path / "nothing.safetensors")


def test_network_conditions_and_guides(digits):
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 3, 7, 9])
    conditional = digits.network(x, 0.5, labels)
    unconditional = digits.network(x, 0.5)
    assert conditional.shape == x.shape and not torch.allclose(conditional, unconditional)
    assert torch.allclose(digits.network(x, 0.5, torch.full((4,), 10)), unconditional)
    assert torch.allclose(digits.network(x, 0.5, labels, guidance=1.0), conditional, atol=1e-5)
    assert digits.network(x.double(), 0.5, labels).dtype == torch.float64
    with pytest.raises(DiffsearchError, match="labels"):
        digits.network(x, 0.5, torch.tensor([0, 11, 1, 2]))


@pytest.fixture()
def skip_final_loss(monkeypatch):
    """Skip the held-out loss computed at the end of training (the slow part of a tiny run)."""
    monkeypatch.setattr("diffsearch.models.digits.denoising_loss", lambda *args, **kwargs: 0.0)


def test_training_is_deterministic(skip_final_loss):
    config = TrainConfig(steps=3, batch_size=16, warmup_steps=2, threads=1, architecture=UNetConfig(channels=(8, 16), embedding_dim=16))
    first, info = train_digits(config, log_every=0)
    second, _ = train_digits(config, log_every=0)
    assert info["steps_done"] == 3
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def _schedule(model, nfe: int):
    """The 20-NFE DPM-Solver++(2M) schedule through the public API."""
    return diffsearch.load_schedule("preset:dpmpp_2m", nfe=nfe, model=model)


def test_conditional_samples_at_20_nfe_are_recognisable(digits):
    from diffsearch.evaluators.features import classify

    labels = torch.arange(10).repeat_interleave(10)
    x_T = torch.randn(100, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    samples = diffsearch.sample(digits, _schedule(digits, 20), x_T, cond=labels, guidance=GUIDANCE)
    assert samples.shape == x_T.shape and torch.isfinite(samples).all()
    accuracy = float((classify(samples.clamp(-1, 1)) == labels).float().mean())
    assert accuracy >= 0.9, accuracy


def test_train_command_writes_loadable_weights(tmp_path, skip_final_loss):
    from diffsearch.models.digits import main

    main(["train", "--out", str(tmp_path), "--steps", "2", "--threads", "1"])
    metadata = json.loads((tmp_path / "digits_unet.json").read_text())
    assert metadata["training"]["steps"] == 2 and metadata["metrics"]["steps_done"] == 2
    assert metadata["command"].startswith("python -m diffsearch.models.digits train")
    model = build_digits(tmp_path / "digits_unet.safetensors")
    assert model.fingerprint == f"digits-{metadata['sha256'][:16]}"
