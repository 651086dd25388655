"""The plan artifact: committed JSON Schema (drift test), save/load, schedule/v1 files as full-network plans."""

from __future__ import annotations

import json

import jsonschema
import pytest

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.export.plan import PLAN_SCHEMA_PATH, plan_json_schema
from diffsearch.models.blocks import BlocksConfig
from diffsearch.solvers.plan import Plan


def test_committed_plan_schema_matches_the_model():
    """Regenerate: PLAN_SCHEMA_PATH.write_text(json.dumps(plan_json_schema(), indent=2, sort_keys=True) + "\\n")."""
    assert json.loads(PLAN_SCHEMA_PATH.read_text()) == json.loads(json.dumps(plan_json_schema(), sort_keys=True))


def a_plan(gmm) -> Plan:
    schedule = diffsearch.load_schedule("preset:unipc_bh2", nfe=4, model=gmm)
    network = (BlocksConfig(), BlocksConfig(modes={"mid": "skip"}), BlocksConfig(modes={"mid": "reuse", "up1": "reuse"}), BlocksConfig())
    return Plan(schedule=schedule, network=network, metrics={"fid": 1.5})


def test_saved_plan_validates_against_the_schema_and_round_trips(tmp_path, gmm):
    plan = a_plan(gmm)
    path = diffsearch.save_plan(plan, tmp_path / "best.json")
    data = json.loads(path.read_text())
    jsonschema.validate(data, json.loads(PLAN_SCHEMA_PATH.read_text()))
    assert data["schema_version"] == "diffsearch.plan/v1"
    assert diffsearch.load_plan(path) == plan and diffsearch.load_plan(path, nfe=4).fingerprint == plan.fingerprint


def test_schedule_files_and_presets_load_as_full_network_plans(tmp_path, gmm):
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=gmm)
    path = diffsearch.save_schedule(schedule, tmp_path / "schedule.json")
    plan = diffsearch.load_plan(path)
    assert plan.schedule == schedule and plan.full_network and plan.network == ()
    assert diffsearch.load_plan("preset:dpmpp_2m", nfe=5, model=gmm) == plan


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: {**d, "schema_version": "diffsearch.plan/v9"}, "schema_version 'diffsearch.plan/v9' is not one of"),
    (lambda d: {**d, "network": d["network"][:3]}, "network: 3 configurations for a schedule of 4 NFE"),
    (lambda d: {**d, "network": [{"kind": "subnet"}] * 4}, "network"),
    (lambda d: {**d, "network": [{"kind": "bits", "weights": {"mid.conv1": 5}}] * 4}, "not among"),
    (lambda d: {**d, "network": [{"kind": "blocks", "modes": {"mid": "drop"}}] * 4}, r"network\[0\].blocks.modes.mid"),
    (lambda d: {**d, "extra": 1}, "extra"),
])
def test_invalid_plan_files_give_one_line_errors(tmp_path, gmm, edit, message):
    data = edit(a_plan(gmm).model_dump(mode="json"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DiffsearchError, match=message) as error:
        diffsearch.load_plan(path)
    assert "\n" not in str(error.value)
