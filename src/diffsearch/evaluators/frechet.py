"""Frechet distance between Gaussians: ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})."""

from __future__ import annotations

import numpy as np
from scipy import linalg


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet (2-Wasserstein) distance of two Gaussians, in float64 with scipy's sqrtm.

    A singular product gets ``eps`` added on the diagonals (as pytorch-fid does); imaginary
    residue of the matrix square root is discarded.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def gaussian_moments(x) -> tuple[np.ndarray, np.ndarray]:
    """Sample mean and covariance (rows are samples) in float64."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x.mean(axis=0), np.cov(x, rowvar=False)
