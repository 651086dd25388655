"""FBNetV3-style training: pretrain on many cheap proxy labels, then fine-tune on the few expensive ones."""

from __future__ import annotations

import numpy as np

from diffsearch.predictors import make_predictor
from diffsearch.predictors.base import Predictor


def log_targets(values) -> np.ndarray:
    """Targets for predictors: log of (positive) metric values."""
    return np.log(np.maximum(np.asarray(values, dtype=np.float64), 1e-12))


def train_predictor(name: str, labelled: tuple[np.ndarray, np.ndarray, np.ndarray], proxy: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    seed: int = 0, min_proxy: int = 10) -> Predictor:
    """A predictor fine-tuned on ``labelled`` (features, values, nfe), pretrained on ``proxy`` when it has ``min_proxy`` rows.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(30, 4)); v = np.exp(x[:, 0]); nfe = np.full(30, 5)
        >>> p = train_predictor("gp", (x[:20], v[:20], nfe[:20]), proxy=(x, v * 1.1, nfe))
        >>> p.predict(x[20:]).shape
        (10,)
    """
    predictor = make_predictor(name, seed=seed)
    if proxy is not None and len(proxy[1]) >= min_proxy:
        predictor.pretrain(proxy[0], log_targets(proxy[1]), proxy[2])
    return predictor.fit(labelled[0], log_targets(labelled[1]), labelled[2])
