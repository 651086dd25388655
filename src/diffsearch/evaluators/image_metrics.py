"""FID and KID between generated samples and real reference data, in a feature extractor's space.

FID is the Frechet distance between Gaussians fitted to the two feature sets (Heusel et al. 2017);
KID is the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets
(Binkowski et al. 2018). KID is unbiased and the better signal for small sample counts.

References are ``ReferenceStats``: feature mean and covariance plus, when available, the features
themselves (KID needs them). They come from a model's own held-out data (``reference_stats``,
cached on disk under ``$DIFFSEARCH_CACHE`` or ``~/.cache/diffsearch``) or from a user file
(``load_reference``): a ``.npy`` / ``.npz`` of samples, or a pytorch-fid ``.npz`` with ``mu``/``sigma``.
"""

from __future__ import annotations

import logging

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.frechet import frechet_distance, gaussian_moments
from diffsearch.files import atomic_path

if TYPE_CHECKING:
    import torch
    from torch import nn

    from diffsearch.models.denoiser import Denoiser


@dataclass(frozen=True)
class ReferenceStats:
    """Real-data statistics in one feature space: mean, covariance and (optionally) the features."""

    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None = None
    #: identifies (extractor weights, data); caches and reports key on it.
    fingerprint: str = ""
    source: str = ""

    @classmethod
    def from_features(cls, features: np.ndarray, fingerprint: str = "", source: str = "") -> ReferenceStats:
        mu, sigma = gaussian_statistics(features)
        return cls(mu, sigma, np.asarray(features, np.float64), fingerprint, source)

    def require_features(self) -> np.ndarray:
        """The reference features, or an error saying that KID needs samples, not mu/sigma."""
        if self.features is None:
            raise DiffsearchError(
                f"KID needs reference samples, but {self.source or 'this reference'} holds only mu/sigma "
                "(pytorch-fid statistics); pass a .npy/.npz of reference samples instead"
            )
        return self.features


def cache_dir() -> Path:
    """diffsearch's cache: ``$DIFFSEARCH_CACHE`` or ``~/.cache/diffsearch``."""
    return Path(os.environ.get("DIFFSEARCH_CACHE", Path.home() / ".cache" / "diffsearch")).expanduser()


def extract_features(extractor: nn.Module, samples: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Features (N, D) float64 of ``samples`` in batches, without gradients."""
    import torch

    with torch.no_grad():
        chunks = [extractor(batch).double().cpu() for batch in torch.as_tensor(samples).split(batch_size)]
    return torch.cat(chunks).numpy()


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (N, D) features, in float64."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise DiffsearchError(f"statistics need (N >= 2, D) features, got shape {features.shape}")
    mu, sigma = gaussian_moments(features)
    return mu, np.atleast_2d(sigma)


def fid_from_features(features: np.ndarray, reference: ReferenceStats | np.ndarray) -> float:
    """FID: the Frechet distance between the Gaussians of ``features`` and of ``reference``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> value = fid_from_features(rng.normal(size=(500, 4)), rng.normal(3.0, 1.0, size=(500, 4)))
        >>> 34 < value < 39  # ||mu1 - mu2||^2 = 4 * 3^2 = 36
        True
    """
    if not isinstance(reference, ReferenceStats):
        reference = ReferenceStats.from_features(reference)
    mu, sigma = gaussian_statistics(features)
    return frechet_distance(mu, sigma, reference.mu, reference.sigma)


def _kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's cubic polynomial kernel (a.b / d + 1)^3."""
    k = a @ b.T / a.shape[1] + 1.0
    return k * k * k


def _within(k: np.ndarray) -> float:
    """Sum of the off-diagonal entries of a kernel matrix."""
    return float(k.sum() - np.trace(k))


def polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 (KID's kernel; diagonals of k_xx, k_yy dropped)."""
    m = x.shape[0]
    within = (_within(_kernel(x, x)) + _within(_kernel(y, y))) / (m * (m - 1))
    return float(within - 2.0 * _kernel(x, y).mean())


def kid_from_features(
    features: np.ndarray,
    reference: ReferenceStats | np.ndarray,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (Binkowski et al. 2018): mean and std of unbiased MMD^2 over random equal-size subsets.

    ``subset_size`` is capped at the smaller set; subsets are drawn without replacement.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> mean, std = kid_from_features(rng.normal(size=(200, 4)), rng.normal(size=(200, 4)), subset_size=100)
        >>> abs(mean) < 0.05
        True
    """
    y = reference.require_features() if isinstance(reference, ReferenceStats) else np.asarray(reference, np.float64)
    x = np.asarray(features, np.float64)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise DiffsearchError(f"KID needs at least 2 samples on each side, got {x.shape[0]} and {y.shape[0]}")
    rng = np.random.default_rng(seed)
    pick_x, pick_y = np.zeros((subsets, x.shape[0])), np.zeros((subsets, y.shape[0]))
    for row in range(subsets):  # the draw order of the subset-by-subset definition: x's subset (unless all of x), then y's
        pick_x[row, np.arange(m) if m == x.shape[0] else rng.choice(x.shape[0], m, replace=False)] = 1.0
        pick_y[row, rng.choice(y.shape[0], m, replace=False)] = 1.0
    values = _subset_mmd2(x, y, pick_x, pick_y, m)
    return float(np.mean(values)), float(np.std(values))


def _subset_mmd2(x: np.ndarray, y: np.ndarray, pick_x: np.ndarray, pick_y: np.ndarray, m: int) -> np.ndarray:
    """``polynomial_mmd2`` of every subset pair (0/1 rows of ``pick_*``) from the three kernel matrices, each computed once."""
    def within(k: np.ndarray, pick: np.ndarray) -> np.ndarray:
        return np.einsum("si,ij,sj->s", pick, k, pick, optimize=True) - pick @ np.diag(k)

    cross = np.einsum("si,ij,sj->s", pick_x, _kernel(x, y), pick_y, optimize=True) / (m * m)
    return (within(_kernel(x, x), pick_x) + within(_kernel(y, y), pick_y)) / (m * (m - 1)) - 2.0 * cross


def fid(samples: torch.Tensor, reference: ReferenceStats, extractor: nn.Module | str) -> float:
    """FID of generated ``samples`` against ``reference`` in ``extractor``'s feature space."""
    from diffsearch.evaluators.features import load_feature_extractor

    return fid_from_features(extract_features(load_feature_extractor(extractor), samples), reference)


def kid(samples: torch.Tensor, reference: ReferenceStats, extractor: nn.Module | str, **options: Any) -> tuple[float, float]:
    """KID (mean, std) of generated ``samples`` against ``reference``; options as ``kid_from_features``."""
    from diffsearch.evaluators.features import load_feature_extractor

    return kid_from_features(extract_features(load_feature_extractor(extractor), samples), reference, **options)


def reference_stats(model: Denoiser, extractor: nn.Module | str | None = None, directory: Path | None = None) -> ReferenceStats:
    """Statistics of ``model.reference_data()`` (real data; digits: its train split), computed once and cached on disk.

    The cache key hashes the extractor's fingerprint and the data's bytes; ``directory`` defaults to
    ``cache_dir() / "reference"``.
    """
    from diffsearch.evaluators.features import load_feature_extractor

    if model.reference_data is None:
        raise DiffsearchError(f"model {model.name!r} has no reference_data; pass reference samples or statistics")
    extractor = load_feature_extractor(extractor or model.feature_extractor or "raw")
    data = model.reference_data()
    images = data[0] if isinstance(data, (tuple, list)) else data
    key = _fingerprint(getattr(extractor, "fingerprint", type(extractor).__name__), _data_hash(images))
    path = (directory or cache_dir() / "reference") / f"{model.name}-{key}.npz"
    source = f"{model.name} reference data ({len(images)} images)"
    if path.is_file():
        cached = load_reference(path)
        return ReferenceStats(cached.mu, cached.sigma, cached.features, cached.fingerprint, source)
    logging.getLogger(__name__).info(f"reference statistics: features of {source} (once, then cached)")
    stats = ReferenceStats.from_features(extract_features(extractor, images), key, source)
    save_reference(stats, path)
    return stats


def save_reference(stats: ReferenceStats, path: Path) -> Path:
    """Write ``mu``, ``sigma`` (pytorch-fid keys), ``features`` and ``fingerprint`` atomically."""
    arrays = {"mu": stats.mu, "sigma": stats.sigma, "fingerprint": np.array(stats.fingerprint)}
    if stats.features is not None:
        arrays["features"] = stats.features
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_reference(path: str | Path, extractor: nn.Module | str | None = None) -> ReferenceStats:
    """A reference from a file: pytorch-fid ``.npz`` (``mu``, ``sigma``[, ``features``]) or samples.

    Samples (a ``.npy`` array, or the single array / ``samples`` key of an ``.npz``) are in the model's
    data space and go through ``extractor``; mu/sigma-only files support FID but not KID.
    """
    path = Path(path)
    if not path.is_file():
        raise DiffsearchError(f"reference file {path} does not exist")
    if path.suffix not in (".npy", ".npz"):
        raise DiffsearchError(f"reference file {path}: expected .npy or .npz, got {path.suffix!r}")
    if path.suffix == ".npy":
        arrays = {"samples": np.load(path, allow_pickle=False)}
    else:
        with np.load(path, allow_pickle=False) as loaded:
            arrays = {key: loaded[key] for key in loaded.files}
    if "mu" in arrays and "sigma" in arrays:
        fingerprint = str(arrays["fingerprint"]) if "fingerprint" in arrays else _file_hash(path)
        return ReferenceStats(arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64),
                              arrays.get("features"), fingerprint, str(path))
    return _reference_from_samples(path, arrays, extractor)


def _reference_from_samples(path: Path, arrays: dict[str, np.ndarray], extractor: nn.Module | str | None) -> ReferenceStats:
    import torch

    from diffsearch.evaluators.features import load_feature_extractor

    if "samples" not in arrays and len(arrays) != 1:
        raise DiffsearchError(f"reference file {path}: expected keys mu+sigma, 'samples', or a single array; got {sorted(arrays)}")
    if extractor is None:
        raise DiffsearchError(f"reference file {path} holds samples; a feature extractor is needed to use it")
    samples = arrays.get("samples", next(iter(arrays.values())))
    if samples.dtype.kind != "f":
        raise DiffsearchError(f"reference samples in {path} must be floats in the model's data space, got {samples.dtype}")
    extractor = load_feature_extractor(extractor)
    key = _fingerprint(getattr(extractor, "fingerprint", type(extractor).__name__), _file_hash(path))
    features = extract_features(extractor, torch.from_numpy(samples).float())
    return ReferenceStats.from_features(features, key, str(path))


def _data_hash(images: Any) -> str:
    import torch

    array = torch.as_tensor(images).float().contiguous().cpu().numpy()
    return hashlib.sha256(array.tobytes() + str(array.shape).encode()).hexdigest()[:16]


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _fingerprint(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
