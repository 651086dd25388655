"""Feature extractors: registry, the shipped digits classifier, raw features, inception errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators import features
from diffsearch.evaluators.features import (
    CLASSIFIER_WEIGHTS,
    FEATURE_EXTRACTORS,
    ClassifierConfig,
    classify,
    load_digits_classifier,
    load_feature_extractor,
    random_shift,
    train_classifier,
)
from diffsearch.models.digits import digits_split


def test_registry_lists_the_built_in_extractors():
    assert {"digits", "raw", "inception"} <= set(FEATURE_EXTRACTORS.names())
    with pytest.raises(DiffsearchError, match="digits, digits_multi, inception, raw"):
        load_feature_extractor("nope")


def test_raw_features_flatten_samples():
    samples = torch.arange(12.0).reshape(3, 4)
    out = load_feature_extractor("raw")(samples)
    assert out.dtype == torch.float64 and torch.equal(out, samples.double())


def test_digits_classifier_loads_offline_and_is_accurate(no_network):
    classifier = load_digits_classifier()
    split = digits_split()
    accuracy = float((classifier.classify(split.held_out_images) == split.held_out_labels).float().mean())
    assert accuracy >= 0.97
    metadata = json.loads(CLASSIFIER_WEIGHTS.with_suffix(".json").read_text())
    assert accuracy == pytest.approx(metadata["metrics"]["held_out_accuracy"], abs=1e-6)
    assert CLASSIFIER_WEIGHTS.stat().st_size < 3_000_000
    assert "torchvision" not in sys.modules


def test_digits_features_are_deterministic_penultimate_activations():
    extractor = load_feature_extractor("digits")
    images = digits_split().held_out_images[:50]
    first, second = extractor(images), extractor(images)
    assert first.shape == (50, extractor.num_features) == (50, 64)
    assert torch.equal(first, second)
    covariance = torch.cov(extractor(digits_split().held_out_images).T)
    assert torch.linalg.eigvalsh(covariance.double()).min() > 0  # no dead feature dimensions
    assert extractor.fingerprint.startswith("digits-") and len(extractor.fingerprint) == 23
    assert load_feature_extractor("digits") is extractor


def test_classify_labels_held_out_digits():
    split = digits_split()
    labels = classify(split.held_out_images[:40])
    assert labels.dtype == torch.long and labels.shape == (40,)
    assert (labels == split.held_out_labels[:40]).float().mean() >= 0.95


def test_classifier_training_is_seeded():
    config = ClassifierConfig(epochs=1, threads=1)
    first, _ = train_classifier(config, log=False)
    second, _ = train_classifier(config, log=False)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name


def test_random_shift_keeps_shape_and_moves_pixels():
    images = torch.rand(16, 1, 8, 8)
    shifted = random_shift(images, 1, torch.Generator().manual_seed(0))
    assert shifted.shape == images.shape and not torch.equal(shifted, images)
    assert torch.equal(random_shift(images, 0, torch.Generator()), images)


def test_inception_without_weights_says_where_to_put_them(monkeypatch, tmp_path):
    target = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    monkeypatch.setenv("DIFFSEARCH_INCEPTION_WEIGHTS", str(target))
    with pytest.raises(DiffsearchError, match=f"Put it at {target}.*DIFFSEARCH_INCEPTION_WEIGHTS"):
        FEATURE_EXTRACTORS.get("inception")()
    monkeypatch.delenv("DIFFSEARCH_INCEPTION_WEIGHTS")
    monkeypatch.setenv("DIFFSEARCH_CACHE", str(tmp_path / "cache"))
    assert features.inception_weights_path() == tmp_path / "cache" / "weights" / target.name


def test_inception_without_torch_fidelity_names_the_dependency(monkeypatch, tmp_path):
    pytest.importorskip("torchmetrics")
    if "torch_fidelity" in sys.modules or _importable("torch_fidelity"):
        pytest.skip("torch-fidelity is installed")
    weights = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    weights.write_bytes(b"not really weights")
    monkeypatch.setenv("DIFFSEARCH_INCEPTION_WEIGHTS", str(weights))
    with pytest.raises(DiffsearchError, match="torch-fidelity"):
        FEATURE_EXTRACTORS.get("inception")()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None
