"""Frechet distance between Gaussians: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})."""

from __future__ import annotations

import numpy as np
from scipy import linalg

from diffsearch.errors import DiffsearchError


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a PSD matrix by eigendecomposition (negative rounding clipped)."""
    values, vectors = linalg.eigh((matrix + matrix.T) / 2.0)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet (2-Wasserstein) distance of two Gaussians, in float64.

    tr (S1 S2)^{1/2} is computed as tr (S1^{1/2} S2 S1^{1/2})^{1/2}, the square root of a symmetric
    PSD matrix, which stays accurate for singular covariances (where scipy's general sqrtm of the
    non-symmetric product only warns and returns an inaccurate result).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise DiffsearchError(f"frechet_distance: shapes differ (mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape})")
    root1 = _psd_sqrt(sigma1)
    middle = linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_covmean = float(np.sqrt(np.clip(middle, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def gaussian_moments(x) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and covariance (rows are samples) in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x.mean(axis=0), np.cov(x, rowvar=False)
