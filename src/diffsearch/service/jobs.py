"""The service's jobs: one per study, stored as the study's ``service:job`` user attr (same database)."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from diffsearch.errors import DiffsearchError
from diffsearch.search import report, storage
from diffsearch.search.config import RunConfig, load_config, validate_study_name

JOB_KEY = "service:job"
TERMINAL = ("finished", "failed", "cancelled")
ACTIVE = ("queued", "running")
MAX_ATTEMPTS = 3
SERVER_KEYS = ("storage", "out", "progress")


class JobConflict(DiffsearchError):
    """A submit that clashes with an existing study (active job, or a different search config)."""


class Job(BaseModel):
    """A search submitted to the service and where it stands."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["queued", "running", "finished", "failed", "cancelled"]
    config: dict[str, Any]
    submitted: float
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    evaluations_at_start: int = 0
    worker: dict[str, Any] | None = None
    error: str | None = None
    artifact: str | None = None


def read_job(study) -> Job | None:
    """The study's job record, read fresh from the storage (None for a study not submitted to the service)."""
    data = study.user_attrs.get(JOB_KEY)
    return None if data is None else Job.model_validate(data)


def write_job(study, job: Job) -> None:
    """Store the job record on its study (one user attr: the database is the queue)."""
    study.set_user_attr(JOB_KEY, job.model_dump(mode="json"))


def update_job(study, **changes: Any) -> Job:
    """Read the job fresh, apply ``changes`` and write it back."""
    job = read_job(study)
    if job is None:
        raise DiffsearchError(f"study {study.study_name!r} is not a service job")
    job = job.model_copy(update=changes)
    write_job(study, job)
    return job


def service_config(body: Any, storage_url: str, runs_dir: Path) -> RunConfig:
    """The submitted run config (YAML keys), with the server's storage and artifact path; DiffsearchError names a bad field."""
    if not isinstance(body, dict):
        raise DiffsearchError("config: expected a JSON object of run settings (the keys of a YAML config)")
    for key in SERVER_KEYS:
        if key in body:
            raise DiffsearchError(f"config {key}: set by the server, not by a submit")
    config = load_config(None, {**body, "storage": storage_url, "progress": False})
    name = validate_study_name(config.study_name())
    return load_config(None, {**config.model_dump(mode="json"), "study": name, "out": str(runs_dir / name / "best.json")})


def submit(shared, config: RunConfig) -> Job:
    """Create (or reopen) the study and queue its job; JobConflict if it is active or was searched differently."""
    name = config.study_name()
    if name in storage.study_names(shared):
        study = storage.load_from(shared, name)
        job, stored = read_job(study), study.user_attrs.get("config")
        if job is not None and job.status in ACTIVE:
            raise JobConflict(f"study {name!r} is already {job.status}")
        if stored is not None and stored != config.identity():
            raise JobConflict(f"study {name!r} exists with a different search config; choose another study name")
    study = storage.open_study(name, config.storage, None, config.identity())
    job = Job(status="queued", config=config.model_dump(mode="json"), submitted=time.time())
    write_job(study, job)
    return job


def summary(study) -> dict[str, Any]:
    """Status, evaluations done of total, best value, elapsed and estimated seconds of one study."""
    job = read_job(study)
    config = job.config if job else study.user_attrs.get("config") or {}
    counts = storage.count_evaluations(study)
    curve = report.best_so_far(study)
    status = job.status if job else ("finished" if study.user_attrs.get("final") else "stopped")
    elapsed = eta = None
    if job is not None and job.started is not None:
        elapsed = (job.finished or time.time()) - job.started
        done_now = counts["expensive"] - job.evaluations_at_start
        if status == "running" and done_now > 0 and config.get("evals"):
            eta = elapsed / done_now * max(config["evals"] - counts["expensive"], 0)
    return {"name": study.study_name, "status": status, "evaluations": counts["expensive"], "total": config.get("evals"),
            "failed": counts["failed"], "duplicates": counts["duplicates"], "best": curve[-1] if curve else None,
            "metric": config.get("metric"), "model": config.get("model"), "space": config.get("space"),
            "budget": config.get("budget"), "strategy": config.get("strategy"), "elapsed_s": elapsed, "eta_s": eta,
            "submitted": _iso(job.submitted if job else None), "error": job.error if job else None,
            "attempts": job.attempts if job else None, "artifact": bool(job and job.artifact and Path(job.artifact).is_file())}


def detail(study, top: int = 10) -> dict[str, Any]:
    """A study's summary plus top candidates, best-so-far curve, cost breakdown, Pareto front and held-out finalists."""
    results = storage.trial_results(study)
    final = study.user_attrs.get("final") or {}
    finalists = [{key: row.get(key) for key in ("trial", "label", "search_value", "heldout")} for row in final.get("rows", [])]
    return {**summary(study), "top": report.top_rows(study, top), "best_so_far": report.best_so_far(study),
            "cost": cost_breakdown(study, results, final), "pareto": pareto_front(results),
            "points": [[row["result"].get("seconds_per_sample"), row["value"]] for row in results], "finalists": finalists,
            "final_best_trial": final.get("best")}


def cost_breakdown(study, results: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """Seconds sampling (the evaluator's wall time) and in metrics/overhead, per fidelity counts."""
    sampling = sum(row["result"].get("wall_time_s") or 0.0 for row in results)
    total = sum(row["seconds"] for row in results)
    stats = [value for key, value in study.user_attrs.items() if key.startswith("s3:stats:") and value]
    return {"sampling_s": sampling, "metric_and_overhead_s": max(total - sampling, 0.0),
            "predictor_s": sum(s.get("predictor_s", 0.0) for s in stats), "final_s": final.get("final_s"),
            "evaluations": {**storage.count_evaluations(study), "predicted": sum(s.get("predicted", 0) for s in stats),
                            "final": len(final.get("rows", []))}}


def pareto_front(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated trials minimising (objective, measured seconds per sample), cheapest first."""
    points = sorted((row["result"].get("seconds_per_sample") or math.inf, row["value"], row["number"], row["label"])
                    for row in results if row["value"] is not None)
    front, best = [], math.inf
    for cost, value, number, label in points:
        if value < best:
            best = value
            front.append({"trial": number, "seconds_per_sample": cost, "value": value, "label": label})
    return front


def _iso(stamp: float | None) -> str | None:
    return None if stamp is None else datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")
