"""Layer order: models import no higher layer (the digits quality report lives in evaluators/)."""

from __future__ import annotations

import ast
from pathlib import Path

import diffsearch

HIGHER = ("diffsearch.solvers", "diffsearch.spaces", "diffsearch.evaluators", "diffsearch.predictors",
          "diffsearch.search", "diffsearch.cli", "diffsearch.export")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_models_do_not_import_higher_layers():
    models = Path(diffsearch.__file__).parent / "models"
    offending = {
        path.name: sorted(name for name in imported_modules(path) if name.startswith(HIGHER) or name == "diffsearch")
        for path in models.glob("*.py")
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_declared_capabilities_have_one_default():
    model = diffsearch.Denoiser(lambda x, t, c: x, {"beta_schedule": "linear"}, data_shape=(2,))
    assert (model.data_range, model.reference_data, model.truth, model.decode, model.blocks) == (None,) * 5
    assert model.feature_extractor == "raw"
    model.truth = "set later"  # still allowed: evaluators read these attributes until phase 2
    assert model.truth == "set later"
    digits, gmm = diffsearch.load_model("digits"), diffsearch.load_model("gmm")
    assert digits.data_range == (-1.0, 1.0) and digits.feature_extractor == "digits" and digits.reference_data is not None
    assert digits.blocks.names == ("down0", "down1", "mid", "up1", "up0") and gmm.truth is not None and gmm.blocks is None
