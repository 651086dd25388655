"""Export: the diffsearch.schedule/v1 artifact (save, load, JSON Schema) and deployment adapters."""

from __future__ import annotations

from diffsearch.export.artifact import SCHEMA_PATH, load_schedule, save_schedule, schedule_json_schema

__all__ = ["SCHEMA_PATH", "load_schedule", "save_schedule", "schedule_json_schema"]
