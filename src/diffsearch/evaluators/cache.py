"""A persistent evaluation cache (SQLite): no plan (or schedule) is evaluated twice with the same settings.

The key hashes the schedule's decisions, the model fingerprint, the evaluator spec (metrics,
samples, noise seed, guidance, and the ``reference`` file by its content, not its path) and the
package version, so any change of those is a different entry. A cache file that cannot be read
is set aside (renamed ``*.corrupt-<time>``) and rebuilt; a cached result that fails its own
validation (a negative Frechet distance, a non-finite metric) is discarded and recomputed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from diffsearch.solvers.plan import Plan, as_plan
from diffsearch.solvers.schedule import Schedule

NON_NEGATIVE = ("fid", "frechet_exact", "teacher_error", "wall_time_s")  # kid is unbiased: it may dip below 0


def default_path() -> Path:
    return Path(os.environ.get("DIFFSEARCH_CACHE", Path.home() / ".cache" / "diffsearch")) / "evaluations.sqlite"


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(path: Any) -> Any:
    """sha256 of the file at ``path`` (memoized by size and mtime); other values unchanged."""
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        return path
    stat = Path(path).stat()
    return {"sha256": _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)}


def _package_version() -> str:
    from diffsearch._version import __version__

    return str(__version__)


def cache_key(schedule: Plan | Schedule, model_fingerprint: str, spec: dict[str, Any]) -> str:
    """sha256 of (timesteps, steps, first step, noise schedule), the network configurations' fingerprint (only when a
    plan changes the network: a full-network plan keeps its schedule's key), model fingerprint, evaluator spec and version."""
    plan = as_plan(schedule)
    decisions = plan.schedule.model_dump(mode="json", include={"timesteps", "steps", "first_step", "noise_schedule"})
    evaluator = {**spec, "reference": content_digest(spec.get("reference"))}
    entry = {"schedule": decisions, "model": model_fingerprint, "evaluator": evaluator, "version": _package_version()}
    if not plan.full_network:
        entry["plan"] = plan.fingerprint
    payload = json.dumps(entry, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def valid_result(result: Any) -> bool:
    """A cached result is trusted only if it is a dict with a status and sane metric values."""
    if not isinstance(result, dict) or result.get("status") not in ("ok", "failed"):
        return False
    for key, value in result.items():
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if key in NON_NEGATIVE and value is not None and (not isinstance(value, (int, float)) or value < 0):
            return False
    return True


class EvaluationCache:
    """key -> result JSON in one SQLite table; safe to share between processes on one machine."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._create()
        except sqlite3.DatabaseError:
            self._set_aside()
            self._create()

    def _create(self) -> None:
        with self._connect() as connection:
            connection.execute("CREATE TABLE IF NOT EXISTS evaluations (key TEXT PRIMARY KEY, result TEXT NOT NULL)")
            connection.execute("SELECT count(*) FROM evaluations").fetchone()  # a corrupt file fails here

    def _set_aside(self) -> None:
        """Rename an unreadable cache file (never trusted, never deleted) so a fresh one is built."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        for suffix in ("", "-journal", "-wal", "-shm"):
            source = Path(f"{self.path}{suffix}")
            if source.exists():
                os.replace(source, f"{aside}{suffix}")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached result, or None (also for an unreadable cache or an entry failing validation)."""
        try:
            with self._connect() as connection:
                row = connection.execute("SELECT result FROM evaluations WHERE key = ?", (key,)).fetchone()
            result = None if row is None else json.loads(row[0])
        except (sqlite3.DatabaseError, ValueError):
            self._recover()
            return None
        if result is not None and not valid_result(result):
            self._delete(key)
            return None
        return result

    def put(self, key: str, result: dict[str, Any]) -> None:
        if not valid_result(result):
            return
        try:
            with self._connect() as connection:
                connection.execute("INSERT OR REPLACE INTO evaluations VALUES (?, ?)", (key, json.dumps(result, default=str)))
        except sqlite3.DatabaseError:
            self._recover()

    def _delete(self, key: str) -> None:
        with self._connect() as connection:
            connection.execute("DELETE FROM evaluations WHERE key = ?", (key,))

    def _recover(self) -> None:
        """The file went bad while in use: set it aside and start an empty one."""
        self._set_aside()
        self._create()


def cache_for(model: Any, enabled: bool = True) -> EvaluationCache | None:
    """The default cache, for models whose fingerprint identifies their weights (else None)."""
    return EvaluationCache() if enabled and getattr(model, "fingerprint_is_content_hash", False) else None
