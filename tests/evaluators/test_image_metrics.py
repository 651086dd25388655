"""FID / KID: closed forms, unbiasedness, torchmetrics agreement, references and their cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.frechet import frechet_distance
from diffsearch.evaluators.image_metrics import (
    ReferenceStats,
    fid,
    fid_from_features,
    gaussian_statistics,
    kid,
    kid_from_features,
    load_reference,
    polynomial_mmd2,
    reference_stats,
    save_reference,
)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def test_frechet_of_identical_gaussians_is_zero():
    rng = np.random.default_rng(0)
    mu, sigma = rng.normal(size=6), _spd(rng, 6)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_frechet_with_equal_covariances_is_mean_distance():
    rng = np.random.default_rng(1)
    mu1, mu2, sigma = rng.normal(size=5), rng.normal(size=5), _spd(rng, 5)
    assert frechet_distance(mu1, sigma, mu2, sigma) == pytest.approx(np.sum((mu1 - mu2) ** 2), rel=1e-8)


def test_frechet_with_diagonal_covariances_matches_closed_form():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.1, 3.0, 4), rng.uniform(0.1, 3.0, 4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2.0 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-8)


def test_frechet_of_general_covariances_matches_eigenvalue_form():
    rng = np.random.default_rng(3)
    s1, s2 = _spd(rng, 7), _spd(rng, 7)
    trace_sqrt = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real))  # eigenvalues of S1 S2 are real, >= 0
    expected = np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt
    assert frechet_distance(np.zeros(7), s1, np.zeros(7), s2) == pytest.approx(expected, rel=1e-7)


def test_frechet_is_finite_for_singular_covariances():
    rng = np.random.default_rng(4)
    few = rng.normal(size=(3, 8))  # rank-2 covariances in 8 dims
    mu, sigma = gaussian_statistics(few)
    value = frechet_distance(mu, sigma, mu + 1.0, sigma)
    assert np.isfinite(value) and value == pytest.approx(8.0, abs=1e-3)


def test_fid_of_identical_feature_sets_is_zero():
    features = np.random.default_rng(5).normal(size=(400, 16))
    assert abs(fid_from_features(features, features)) < 1e-6
    assert abs(fid_from_features(features, ReferenceStats.from_features(features))) < 1e-6


def test_kid_between_samples_of_one_distribution_is_unbiased():
    rng = np.random.default_rng(6)
    values = [kid_from_features(rng.normal(size=(100, 8)), rng.normal(size=(100, 8)), subsets=5)[0] for _ in range(40)]
    mean, std = np.mean(values), np.std(values)
    assert abs(mean) < 3.0 * std / np.sqrt(len(values))
    assert abs(mean) < 0.01


def test_kid_between_different_distributions_is_clearly_positive():
    rng = np.random.default_rng(7)
    same = kid_from_features(rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), subset_size=100)[0]
    mean, std = kid_from_features(rng.normal(size=(300, 8)), rng.normal(0.5, 1.0, size=(300, 8)), subset_size=100)
    assert mean > 3.0 * std and mean > 20.0 * abs(same)


def test_kid_matches_torchmetrics_on_full_subsets():
    from torchmetrics.image.kid import KernelInceptionDistance

    class Features(torch.nn.Module):
        num_features = 12

        def forward(self, x):
            return x

    rng = np.random.default_rng(8)
    real, fake = rng.normal(size=(64, 12)), rng.normal(0.2, 1.1, size=(64, 12))
    metric = KernelInceptionDistance(feature=Features(), subsets=1, subset_size=64)
    metric.update(torch.from_numpy(real), real=True)
    metric.update(torch.from_numpy(fake), real=False)
    expected = float(metric.compute()[0])
    assert kid_from_features(fake, real, subset_size=64, subsets=3)[0] == pytest.approx(expected, rel=1e-9)
    assert polynomial_mmd2(fake, real) == pytest.approx(expected, rel=1e-9)


def test_kid_is_deterministic_for_a_seed():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(150, 4))
    assert kid_from_features(a, b, subset_size=50, seed=3) == kid_from_features(a, b, subset_size=50, seed=3)


def test_kid_needs_samples_not_only_mu_sigma(tmp_path):
    rng = np.random.default_rng(10)
    features = rng.normal(size=(50, 3))
    path = tmp_path / "stats.npz"
    np.savez(path, mu=features.mean(0), sigma=np.cov(features, rowvar=False))  # pytorch-fid --save-stats layout
    reference = load_reference(path)
    assert abs(fid_from_features(features, reference)) < 1e-8
    with pytest.raises(DiffsearchError, match="KID needs reference samples"):
        kid_from_features(features, reference)


def test_load_reference_from_samples(tmp_path):
    samples = np.random.default_rng(11).normal(size=(40, 1, 2, 2)).astype(np.float32)
    np.save(tmp_path / "ref.npy", samples)
    np.savez(tmp_path / "ref.npz", samples=samples)
    from_npy = load_reference(tmp_path / "ref.npy", "raw")
    from_npz = load_reference(tmp_path / "ref.npz", "raw")
    np.testing.assert_allclose(from_npy.features, samples.reshape(40, 4))
    np.testing.assert_allclose(from_npz.mu, from_npy.mu)
    assert kid(torch.from_numpy(samples), from_npy, "raw", subset_size=40, subsets=1)[0] < 1e-9
    with pytest.raises(DiffsearchError, match="feature extractor"):
        load_reference(tmp_path / "ref.npy")
    with pytest.raises(DiffsearchError, match="does not exist"):
        load_reference(tmp_path / "missing.npz")


def test_saved_reference_round_trips(tmp_path):
    reference = ReferenceStats.from_features(np.random.default_rng(12).normal(size=(30, 5)), "abc")
    loaded = load_reference(save_reference(reference, tmp_path / "r.npz"))
    np.testing.assert_array_equal(loaded.sigma, reference.sigma)
    np.testing.assert_array_equal(loaded.features, reference.features)
    assert loaded.fingerprint == "abc"


@pytest.fixture(scope="module")
def digits():
    import diffsearch

    return diffsearch.load_model("digits")


def test_reference_stats_are_cached_by_fingerprint(digits, tmp_path):
    first = reference_stats(digits, directory=tmp_path)
    files = list(tmp_path.glob("digits-*.npz"))
    assert len(files) == 1 and first.fingerprint in files[0].name
    second = reference_stats(digits, directory=tmp_path)
    np.testing.assert_array_equal(first.sigma, second.sigma)
    assert first.features.shape == (1437, 64)  # the train split is the reference
    raw = reference_stats(digits, "raw", directory=tmp_path)
    assert raw.fingerprint != first.fingerprint and raw.mu.shape == (64,)


def test_fid_of_real_digits_is_small_and_of_noise_is_large(digits, tmp_path):
    from diffsearch.models.digits import digits_split

    reference = reference_stats(digits, directory=tmp_path)
    train = digits_split().held_out_images  # real images the reference (the train split) does not hold
    real = fid(train, reference, "digits")
    noise = fid(torch.rand(360, 1, 8, 8) * 2 - 1, reference, "digits")
    assert real < 0.1 * noise
    assert kid(train[:360], reference, "digits", subset_size=200, subsets=10)[0] < 0.01 * kid(
        torch.rand(360, 1, 8, 8) * 2 - 1, reference, "digits", subset_size=200, subsets=10
    )[0]


def test_kid_over_subsets_equals_the_subset_by_subset_definition():
    """The kernel matrices are computed once and subsets summed from them: the same values as MMD^2 per subset pair."""
    rng = np.random.default_rng(10)
    x, y = rng.normal(0.1, 1.0, size=(120, 6)), rng.normal(size=(90, 6))
    draw = np.random.default_rng(4)
    expected = [polynomial_mmd2(x[draw.choice(120, 50, replace=False)], y[draw.choice(90, 50, replace=False)]) for _ in range(7)]
    mean, std = kid_from_features(x, y, subset_size=50, subsets=7, seed=4)
    assert mean == pytest.approx(np.mean(expected), rel=1e-12) and std == pytest.approx(np.std(expected), rel=1e-10)
