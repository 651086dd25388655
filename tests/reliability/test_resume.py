"""kill -9 at every phase of the default s3 search, then resume: the same artifact as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import sqlite3

import pytest

from tests.reliability.conftest import essence, evaluated, tiny_search

# (batch rows, network call) at which the first run is SIGKILLed. Stage 0 proxies every preset on
# 32 rows (32 distinct presets x 4 calls), re-ranks 8 on 64 rows, truly evaluates 6 on 200 rows; stage 1
# proxies offspring on 32 rows and evaluates on 200; the final stage re-scores on 400 rows.
PHASES = {"stage0_proxies": "32:90", "stage0_refine": "64:20", "presets": "200:10", "stage1_proxies": "32:140",
          "mid_stage": "200:33", "final_stage": "400:6"}


def killed_then_resumed(tmp_path, seed: int, kill: str):
    study = f"killed{seed}"
    first = tiny_search(tmp_path, study, "--seed", str(seed), "--evals", "10", env={"DIFFSEARCH_KILL": kill})
    assert first.returncode == -signal.SIGKILL, (first.returncode, first.stderr[-2000:])
    second = tiny_search(tmp_path, study, "--seed", str(seed), "--evals", "10")
    assert second.returncode == 0, second.stderr[-3000:]
    return tmp_path / "runs" / study


def resumed(folder) -> dict:
    return {**essence(folder / "best.json"), "evaluated": evaluated(folder.with_suffix(".db"))}


@pytest.mark.slow
def test_killed_during_presets_resumes_to_the_same_artifact(tmp_path, references):
    folder = killed_then_resumed(tmp_path, 0, PHASES["presets"])
    assert resumed(folder) == references(0)
    connection = sqlite3.connect(tmp_path / "runs" / "killed0.db")
    errors = [json.loads(v) for (v,) in connection.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'error'")]
    assert errors == ["interrupted (the run was killed); re-queued"]  # one attempt lost, re-queued, nothing else failed


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "seed"), [(phase, index % 3) for index, phase in enumerate(PHASES)])
def test_killed_at_any_phase_resumes_to_the_same_artifact(tmp_path, references, phase, seed):
    """Every phase once, the three search seeds in turn (each seed's trajectory reaches every phase)."""
    folder = killed_then_resumed(tmp_path, seed, PHASES[phase])
    assert resumed(folder) == references(seed)


@pytest.mark.slow
def test_stage0_proxies_are_stored_and_not_recomputed(tmp_path, references):
    """Killed after some stage-0 proxies: they are in the study, and the resumed run evaluates only the rest."""
    first = tiny_search(tmp_path, "proxies", "--evals", "10", env={"DIFFSEARCH_KILL": "32:90"})
    assert first.returncode == -signal.SIGKILL
    connection = sqlite3.connect(tmp_path / "runs" / "proxies.db")
    (stored,) = connection.execute("SELECT value_json FROM study_user_attributes WHERE key = 's3:proxy_values:0:0'").fetchone()
    done = {fingerprint: entry for fingerprint, entry in json.loads(stored).items() if "value" in entry}
    assert len(done) == 22  # 89 calls of 4 NFE: 22 whole proxies before the kill, each stored as computed
    log = tmp_path / "calls.log"
    assert tiny_search(tmp_path, "proxies", "--evals", "10", env={"DIFFSEARCH_CALL_LOG": str(log)}).returncode == 0
    calls = [rows for rows in log.read_text().split() if rows != "1"]  # "1": the one-row call that counts MACs (evaluators/cost.py)
    proxied_calls = calls.index("64")  # 32-row calls before stage 0's refinement round
    assert proxied_calls == 4 * (32 - 22)  # only the 10 missing of the 32 distinct presets were evaluated
    (stored,) = connection.execute("SELECT value_json FROM study_user_attributes WHERE key = 's3:proxy_values:0:0'").fetchone()
    assert all(json.loads(stored)[fingerprint] == entry for fingerprint, entry in done.items())
    assert resumed(tmp_path / "runs" / "proxies") == references(0)


def _study_attrs(database) -> dict:
    with sqlite3.connect(database) as connection:
        return {key: json.loads(value) for key, value in connection.execute("SELECT key, value_json FROM study_user_attributes")}


@pytest.mark.slow
def test_final_stage_evaluations_are_stored_and_not_recomputed(tmp_path, references):
    """Killed in the final stage after two held-out evaluations: they are stored, and the resumed run computes only the rest;
    fewer final_seeds reuse the evaluations of the same candidate, seed and samples, and another final_samples none."""
    first = tiny_search(tmp_path, "final", "--evals", "10", env={"DIFFSEARCH_KILL": "400:10"})
    assert first.returncode == -signal.SIGKILL
    database = tmp_path / "runs" / "final.db"
    stored = {k: v for k, v in _study_attrs(database).items() if k.startswith("final:heldout:")}
    assert len(stored) == 2 and "final" not in _study_attrs(database)  # 4 calls per evaluation: the third was killed
    log = tmp_path / "calls.log"
    assert tiny_search(tmp_path, "final", "--evals", "10", env={"DIFFSEARCH_CALL_LOG": str(log)}).returncode == 0
    attrs = _study_attrs(database)
    total = len(attrs["final"]["rows"]) * attrs["final"]["final_seeds"]
    assert attrs["final"]["heldout_evaluations"] == {"computed": total - 2, "restored": 2}
    assert log.read_text().split().count("400") == 4 * (total - 2)
    assert all(attrs[key] == value for key, value in stored.items())
    assert resumed(tmp_path / "runs" / "final") == references(0)

    log.unlink()
    assert tiny_search(tmp_path, "final", "--evals", "10", "--final-seeds", "2", env={"DIFFSEARCH_CALL_LOG": str(log)}).returncode == 0
    final = _study_attrs(database)["final"]
    assert final["final_seeds"] == 2 and final["heldout_evaluations"]["computed"] == 0
    assert not log.exists() or "400" not in log.read_text().split()  # nothing to evaluate: not even the teacher
    assert json.loads((tmp_path / "runs" / "final" / "best.json").read_text())["provenance"]["config"]["final_seeds"] == 2
    assert tiny_search(tmp_path, "final", "--evals", "10", "--final-seeds", "2", "--final-samples", "300").returncode == 0
    final = _study_attrs(database)["final"]
    assert final["final_samples"] == 300 and final["heldout_evaluations"]["restored"] == 0
