"""Learned performance predictors: encoders, models behind one contract, proxy pretraining, gating.

Predictors register lazily (``"module:attribute"`` thunks) so that importing this package, and
``search --help``, pull in neither torch, scikit-learn nor xgboost.
"""

from __future__ import annotations

from diffsearch.registry import Registry

PREDICTORS: Registry[type] = Registry("predictor")
PREDICTORS.register("mlp", "diffsearch.predictors.models:MLPPredictor")
PREDICTORS.register("xgboost", "diffsearch.predictors.models:XGBoostPredictor")
PREDICTORS.register("gp", "diffsearch.predictors.models:GPPredictor")
PREDICTORS.register("ensemble", "diffsearch.predictors.models:EnsemblePredictor")
PREDICTORS.register("ofa", "diffsearch.predictors.ofa:OFAAccuracyPredictor")


def make_predictor(name: str, seed: int = 0, **options):
    """A fresh predictor registered as ``name``."""
    return PREDICTORS.get(name)(seed=seed, **options)


__all__ = ["PREDICTORS", "make_predictor"]
