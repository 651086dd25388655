"""The schedule artifact: committed JSON Schema, save/load, preset resolution and refusals."""

from __future__ import annotations

import json

import jsonschema
import pytest

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.export.artifact import SCHEMA_PATH, schedule_json_schema


def test_committed_json_schema_matches_the_model():
    """Regenerate with: python -c 'from diffsearch.export.artifact import *; ...' (see README)."""
    assert json.loads(SCHEMA_PATH.read_text()) == json.loads(json.dumps(schedule_json_schema(), sort_keys=True))


def test_saved_preset_validates_against_the_schema_and_round_trips(tmp_path, gmm):
    schedule = diffsearch.load_schedule("preset:unipc_bh2", nfe=6, model=gmm)
    path = diffsearch.save_schedule(schedule, tmp_path / "best.json")
    jsonschema.validate(json.loads(path.read_text()), json.loads(SCHEMA_PATH.read_text()))
    assert diffsearch.load_schedule(path) == schedule
    assert diffsearch.load_schedule(path, nfe=6) == schedule


def test_wrong_nfe_missing_file_and_non_finite_json_are_refused(tmp_path, gmm):
    path = diffsearch.save_schedule(diffsearch.load_schedule("preset:ddim", nfe=4, model=gmm), tmp_path / "s.json")
    with pytest.raises(DiffsearchError, match="costs 4 NFE, not the requested 5"):
        diffsearch.load_schedule(path, nfe=5)
    with pytest.raises(DiffsearchError, match="neither preset:NAME nor an existing JSON file"):
        diffsearch.load_schedule(tmp_path / "missing.json")
    path.write_text(path.read_text().replace('"timesteps": [\n    1.0', '"timesteps": [\n    NaN'))
    with pytest.raises(DiffsearchError, match="NaN"):
        diffsearch.load_schedule(path)


def test_schedule_of_another_noise_schedule_is_refused(gmm):
    other = diffsearch.Denoiser(gmm.fn, {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, data_shape=(8,))
    schedule = diffsearch.load_schedule("preset:ddim", nfe=3, model=other)
    import torch

    with pytest.raises(DiffsearchError, match="belongs to noise schedule"):
        diffsearch.sample(gmm, schedule, torch.zeros(2, 8))


def test_preset_needs_nfe_and_model():
    with pytest.raises(DiffsearchError, match="needs nfe= and model="):
        diffsearch.load_schedule("preset:ddim")
