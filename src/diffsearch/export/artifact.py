"""The ``diffsearch.schedule/v1`` artifact: write, read and validate schedule JSON files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from diffsearch.errors import DiffsearchError, validation_message
from diffsearch.files import atomic_write_text
from diffsearch.solvers.schedule import Schedule

SCHEMA_PATH = Path(__file__).with_name("schedule.v1.schema.json")
MAX_ARTIFACT_BYTES = 2_000_000  # a 1000-step schedule with metrics and provenance is ~300 kB
MAX_JSON_DEPTH = 32  # artifacts nest about 8 deep


def schedule_json_schema() -> dict[str, Any]:
    """The JSON Schema of the artifact, generated from the pydantic model (committed as SCHEMA_PATH)."""
    return Schedule.model_json_schema()


def _reject_non_finite(token: str) -> float:
    raise DiffsearchError(f"schedule JSON contains {token}; only finite numbers are allowed")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DiffsearchError(f"schedule JSON contains {text}, which overflows to {value}; only finite numbers are allowed")
    return value


def json_depth(value: Any) -> int:
    """Nesting depth of a JSON-like tree (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list, tuple)))
    return deepest


def _decode(text: str, source: str) -> Any:
    """JSON text -> data, bounded: size, depth, finite numbers."""
    if len(text) > MAX_ARTIFACT_BYTES:
        raise DiffsearchError(f"{source}: {len(text)} bytes, larger than the {MAX_ARTIFACT_BYTES}-byte limit of a schedule artifact")
    try:
        return json.loads(text, parse_constant=_reject_non_finite, parse_float=_finite_float)
    except (json.JSONDecodeError, RecursionError) as error:
        raise DiffsearchError(f"{source}: not valid JSON ({error})") from None
    except DiffsearchError as error:
        raise DiffsearchError(f"{source}: {error}") from None


def read_json(data: str | dict[str, Any], source: str) -> Any:
    """JSON text parsed (bounded size, finite numbers only; a one-line error naming ``source``), or a dict as is."""
    return _decode(data, source) if isinstance(data, str) else data


def parse_schedule(data: str | dict[str, Any], source: str = "schedule") -> Schedule:
    """A validated Schedule from JSON text or a dict; errors name the field and what is allowed."""
    data = read_json(data, source)
    if not isinstance(data, dict):
        raise DiffsearchError(f"{source}: expected a JSON object, got {type(data).__name__}")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise DiffsearchError(f"{source}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    for key in ("schema_version", "noise_schedule"):
        if data.get(key) is None:
            raise DiffsearchError(f"{source}: {key}: required (an artifact names its schema and the noise schedule it was searched for)")
    try:
        return Schedule.model_validate(data)
    except ValidationError as error:
        raise DiffsearchError(f"{source}: {validation_message(error)}") from None


def save_schedule(schedule: Schedule, path: str | Path) -> Path:
    """Write ``schedule`` as diffsearch.schedule/v1 JSON (finite numbers only)."""
    payload = schedule.model_dump(mode="json")
    return atomic_write_text(path, json.dumps(payload, indent=2, allow_nan=False) + "\n")


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
    schedule = parse_schedule(artifact_text(text, "schedule"), source=text)
    check_nfe(text, "schedule", schedule.nfe, nfe)
    return schedule


def artifact_text(source: str, kind: str) -> str:
    """The text of an artifact file; a one-line error when ``source`` is no file (nor a preset)."""
    path = Path(source)
    if not path.is_file():
        raise DiffsearchError(f"{kind} {source!r} is neither preset:NAME nor an existing JSON file")
    if path.stat().st_size > MAX_ARTIFACT_BYTES:
        raise DiffsearchError(f"{path}: {path.stat().st_size} bytes, larger than the {MAX_ARTIFACT_BYTES}-byte limit of an artifact")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise DiffsearchError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None


def check_nfe(source: str, kind: str, actual: int, requested: int | None) -> None:
    """Refuse an artifact whose NFE differs from the requested budget."""
    if requested is not None and actual != requested:
        raise DiffsearchError(f"{source}: the {kind} costs {actual} NFE, not the requested {requested}")


def is_finite_tree(value: Any) -> bool:
    """True when every number in a JSON-like tree is finite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite_tree(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(is_finite_tree(v) for v in value)
    return True
