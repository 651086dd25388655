"""The ``diffsearch.schedule/v1`` artifact: write, read and validate schedule JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from diffsearch.errors import DiffsearchError
from diffsearch.solvers.schedule import Schedule

SCHEMA_PATH = Path(__file__).with_name("schedule.v1.schema.json")


def schedule_json_schema() -> dict[str, Any]:
    """The JSON Schema of the artifact, generated from the pydantic model (committed as SCHEMA_PATH)."""
    return Schedule.model_json_schema()


def _reject_non_finite(token: str) -> float:
    raise DiffsearchError(f"schedule JSON contains {token}; only finite numbers are allowed")


def validation_message(error: ValidationError) -> str:
    """One line: the first failing field and what is allowed."""
    first = error.errors()[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    message = first["msg"].removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def parse_schedule(data: str | dict[str, Any], source: str = "schedule") -> Schedule:
    """A validated Schedule from JSON text or a dict; errors name the field and what is allowed."""
    if isinstance(data, str):
        try:
            data = json.loads(data, parse_constant=_reject_non_finite)
        except json.JSONDecodeError as error:
            raise DiffsearchError(f"{source}: not valid JSON ({error})") from None
    try:
        return Schedule.model_validate(data)
    except ValidationError as error:
        raise DiffsearchError(f"{source}: {validation_message(error)}") from None


def save_schedule(schedule: Schedule, path: str | Path) -> Path:
    """Write ``schedule`` as diffsearch.schedule/v1 JSON (finite numbers only)."""
    payload = schedule.model_dump(mode="json")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return path


def load_schedule(
    source: str | Path | Schedule,
    nfe: int | None = None,
    model: Any = None,
    spacing: str | None = None,
    **options: Any,
) -> Schedule:
    """A schedule from ``preset:NAME`` (needs ``nfe`` and ``model``) or a JSON file path.

    Example:
        >>> import diffsearch
        >>> model = diffsearch.load_model("gmm")
        >>> diffsearch.load_schedule("preset:unipc_bh2", nfe=5, model=model).nfe
        5
    """
    if isinstance(source, Schedule):
        return source
    text = str(source)
    if text.startswith("preset:"):
        from diffsearch.solvers.presets import preset_schedule

        if nfe is None or model is None:
            raise DiffsearchError(f"{text}: a preset needs nfe= and model= (e.g. --budget 10nfe --model gmm)")
        noise_schedule = model.noise_schedule if hasattr(model, "noise_schedule") else model
        denoiser = model if hasattr(model, "noise_schedule") else None
        return preset_schedule(text.removeprefix("preset:"), nfe, noise_schedule, spacing or "logsnr", model=denoiser, **options)
    path = Path(text)
    if not path.is_file():
        raise DiffsearchError(f"schedule {text!r} is neither preset:NAME nor an existing JSON file")
    schedule = parse_schedule(path.read_text(), source=str(path))
    if nfe is not None and schedule.nfe != nfe:
        raise DiffsearchError(f"{path}: the schedule costs {schedule.nfe} NFE, not the requested {nfe}")
    return schedule


def is_finite_tree(value: Any) -> bool:
    """True when every number in a JSON-like tree is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite_tree(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite_tree(v) for v in value)
    return True
