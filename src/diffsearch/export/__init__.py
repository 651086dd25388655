"""Export: the diffsearch.schedule/v1 and diffsearch.plan/v1 artifacts (save, load, JSON Schema) and deployment adapters."""

from __future__ import annotations

from diffsearch.export.artifact import SCHEMA_PATH, load_schedule, save_schedule, schedule_json_schema
from diffsearch.export.plan import PLAN_SCHEMA_PATH, load_plan, plan_json_schema, save_plan

__all__ = [
    "PLAN_SCHEMA_PATH", "SCHEMA_PATH", "load_plan", "load_schedule", "plan_json_schema", "save_plan",
    "save_schedule", "schedule_json_schema",
]
