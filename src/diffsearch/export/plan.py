"""The ``diffsearch.plan/v1`` artifact: write, read and validate sampling-plan JSON files.

A plan file holds a schedule and one network configuration per model evaluation. Every
``diffsearch.schedule/v1`` file (and ``preset:NAME``) loads too, as a plan with the full network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from diffsearch.errors import DiffsearchError
from diffsearch.export.artifact import artifact_text, check_nfe, load_schedule, read_json, validation_message
from diffsearch.files import atomic_write_text
from diffsearch.solvers.plan import PLAN_SCHEMA_VERSION, Plan
from diffsearch.solvers.schedule import SCHEMA_VERSION, Schedule

PLAN_SCHEMA_PATH = Path(__file__).with_name("plan.v1.schema.json")


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema of the plan artifact, generated from the pydantic model (committed as PLAN_SCHEMA_PATH)."""
    return Plan.model_json_schema()


def parse_plan(data: str | dict[str, Any], source: str = "plan") -> Plan:
    """A validated Plan from JSON text or a dict (plan/v1, or schedule/v1 as the full network)."""
    data = read_json(data, source)
    if not isinstance(data, dict):
        raise DiffsearchError(f"{source}: expected a JSON object")
    version = data.get("schema_version")
    model = {PLAN_SCHEMA_VERSION: Plan, SCHEMA_VERSION: Schedule}.get(version)
    if model is None:
        raise DiffsearchError(f"{source}: schema_version {version!r} is not one of {PLAN_SCHEMA_VERSION}, {SCHEMA_VERSION}")
    try:
        value = model.model_validate(data)
    except ValidationError as error:
        raise DiffsearchError(f"{source}: {validation_message(error)}") from None
    return value if isinstance(value, Plan) else Plan(schedule=value)


def save_plan(plan: Plan, path: str | Path) -> Path:
    """Write ``plan`` as diffsearch.plan/v1 JSON (finite numbers only)."""
    return atomic_write_text(path, json.dumps(plan.model_dump(mode="json"), indent=2, allow_nan=False) + "\n")


def load_plan(source: str | Path | Plan | Schedule, nfe: int | None = None, model: Any = None, **options: Any) -> Plan:
    """A plan from a Plan, a Schedule, ``preset:NAME`` (needs ``nfe`` and ``model``) or a plan/schedule JSON file.

    Example:
        >>> import diffsearch
        >>> load_plan("preset:ddim", nfe=4, model=diffsearch.load_model("gmm")).full_network
        True
    """
    if isinstance(source, Plan):
        return source
    if isinstance(source, Schedule) or str(source).startswith("preset:"):
        return Plan(schedule=load_schedule(source, nfe=nfe, model=model, **options))
    plan = parse_plan(artifact_text(str(source), "plan"), source=str(source))
    check_nfe(str(source), "plan", plan.nfe, nfe)
    return plan
