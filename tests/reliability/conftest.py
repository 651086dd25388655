"""Helpers of the fault-injection tests: tiny gmm searches run as real `search` processes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PLUGIN = Path(__file__).with_name("faulty_model.py")
TINY = ["--budget", "4nfe", "--samples", "200", "--final-samples", "400", "--no-progress"]
S3_CONFIG = {"strategy_options": {"mutants": 40}}


def search(cwd: Path, *arguments: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``search <arguments>`` in ``cwd`` as its own process (the faulty plug-in model is available)."""
    environment = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   "DIFFSEARCH_CACHE": str(cwd / "cache"), "DIFFSEARCH_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "diffsearch.cli", *arguments], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def tiny_search(cwd: Path, study: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A tiny s3 search of the faulty gmm (4 NFE, 200 search / 400 held-out samples, 40 mutants a stage)."""
    config = cwd / "s3.json"  # JSON is YAML: the --config path
    config.write_text(json.dumps(S3_CONFIG))
    return search(cwd, "run", "--config", str(config), "--model", f"{PLUGIN}:make", *TINY, "--study", study, *extra, env=env)


def essence(path: Path) -> dict:
    """What must agree between an interrupted-and-resumed and an uninterrupted run: the candidate and its values."""
    artifact = json.loads(path.read_text())
    heldout = {k: v for k, v in artifact["metrics"]["heldout"].items() if k not in ("wall_time_s", "seconds_per_sample")}
    baseline = artifact["metrics"]["baseline"] or {}
    return {"timesteps": artifact["timesteps"], "steps": artifact["steps"], "first_step": artifact["first_step"],
            "heldout": heldout, "search_value": artifact["metrics"]["search_value"],
            "baseline": (baseline.get("schedule"), (baseline.get("heldout") or {}).get("frechet_exact")),
            "label": artifact["provenance"]["label"]}


def evaluated(database: Path) -> list[str]:
    """Fingerprints of every completed trial of a study (sorted): no queued candidate may be lost or added."""
    connection = sqlite3.connect(database)
    rows = connection.execute("SELECT a.value_json FROM trial_user_attributes a JOIN trials t ON a.trial_id = t.trial_id "
                              "WHERE a.key = 'fingerprint' AND t.state = 'COMPLETE'")
    return sorted(json.loads(value) for (value,) in rows)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The stderr of a refused command: exit 2 and exactly one line ``error: ...``."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (result.returncode, result.stderr[-2000:])
    return lines[0]


@pytest.fixture(scope="session")
def references(tmp_path_factory):
    """Uninterrupted tiny searches by seed (computed once)."""
    folder, done = tmp_path_factory.mktemp("references"), {}

    def reference(seed: int) -> dict:
        if seed not in done:
            result = tiny_search(folder, f"ref{seed}", "--seed", str(seed), "--evals", "10")
            assert result.returncode == 0, result.stderr[-3000:]
            done[seed] = {**essence(folder / "runs" / f"ref{seed}" / "best.json"), "evaluated": evaluated(folder / "runs" / f"ref{seed}.db")}
        return done[seed]

    return reference
