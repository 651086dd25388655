"""On-disk cache of optimised spacings: one JSON file per (method, model, solver, NFE, settings)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict


class AnchorRecord(BaseModel):
    """An optimised spacing with what it was computed for and what it cost."""

    model_config = ConfigDict(extra="forbid")
    method: str
    fingerprint: str
    solver: str
    nfe: int
    settings: dict[str, Any]
    timesteps: list[float]
    seconds: float
    details: dict[str, Any] = {}


def anchor_directory() -> Path:
    """``$DIFFSEARCH_CACHE/anchors`` (default ``~/.cache/diffsearch/anchors``)."""
    return Path(os.environ.get("DIFFSEARCH_CACHE", Path.home() / ".cache" / "diffsearch")) / "anchors"


ALGORITHM_VERSION = 3  # bump when a method's results change for the same settings (stale entries are then ignored)


def record_key(method: str, fingerprint: str, solver: str, nfe: int, settings: dict[str, Any]) -> str:
    """sha256 of the method, the model (or noise schedule) fingerprint, the solver, NFE, settings and ALGORITHM_VERSION."""
    payload = json.dumps({"method": method, "fingerprint": fingerprint, "solver": solver, "nfe": nfe,
                          "settings": settings, "version": ALGORITHM_VERSION}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def load_record(key: str, method: str) -> AnchorRecord | None:
    """The cached record, or None (a damaged file counts as missing)."""
    path = anchor_directory() / f"{method}-{key}.json"
    if not path.is_file():
        return None
    try:
        return AnchorRecord.model_validate_json(path.read_text())
    except ValueError:
        return None


def store_record(key: str, record: AnchorRecord) -> Path:
    """Write the record atomically (rename), so concurrent readers never see half a file."""
    directory = anchor_directory()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{record.method}-{key}.json"
    temporary = path.with_suffix(f".tmp{os.getpid()}")
    temporary.write_text(record.model_dump_json(indent=2))
    temporary.replace(path)
    return path
