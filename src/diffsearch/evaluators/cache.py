"""A persistent evaluation cache (SQLite): no schedule is evaluated twice with the same settings.

The key hashes the schedule's decisions, the model fingerprint and the evaluator spec (metrics,
samples, noise seed, guidance, reference), so any change of those is a different entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from diffsearch.solvers.schedule import Schedule


def default_path() -> Path:
    return Path(os.environ.get("DIFFSEARCH_CACHE", Path.home() / ".cache" / "diffsearch")) / "evaluations.sqlite"


def cache_key(schedule: Schedule, model_fingerprint: str, spec: dict[str, Any]) -> str:
    """sha256 of (timesteps, steps, first step, noise schedule), model fingerprint and evaluator spec."""
    decisions = schedule.model_dump(mode="json", include={"timesteps", "steps", "first_step", "noise_schedule"})
    payload = json.dumps({"schedule": decisions, "model": model_fingerprint, "evaluator": spec}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class EvaluationCache:
    """key -> result JSON in one SQLite table; safe to share between processes on one machine."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS evaluations (key TEXT PRIMARY KEY, result TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._connect() as connection:
            row = connection.execute("SELECT result FROM evaluations WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, result: dict[str, Any]) -> None:
        with self._connect() as connection:
            connection.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?)", (key, json.dumps(result, default=str)))


def cache_for(model: Any, enabled: bool = True) -> EvaluationCache | None:
    """The default cache, for models whose fingerprint identifies their weights (else None)."""
    return EvaluationCache() if enabled and getattr(model, "fingerprint_is_content_hash", False) else None
