"""``--time`` bounds a running evaluation: stopped at the deadline it is interrupted (re-queued, not an attempt), and the
resumed search exports what an uninterrupted one does."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from diffsearch.search.runner import run_search
from tests.reliability.conftest import PLUGIN, essence, evaluated, one_line_error, tiny_search

INTERRUPTED = "stopped at the --time deadline; re-queued"


def _config(tmp_path, study: str, **extra) -> dict:
    """The timesteps space of the faulty gmm (4 presets, the third poisoned), random strategy, 6 evaluations, in-process."""
    return {"model": f"{PLUGIN}:make", "space": "timesteps", "solver": "dpmpp_2m", "budget": "4nfe", "strategy": "random",
            "evals": 6, "search_samples": 200, "final_samples": 400, "final_top": 2, "final_seeds": 2, "study": study,
            "storage": f"sqlite:///{tmp_path}/{study}.db", "out": str(tmp_path / f"{study}.json"), "progress": False, **extra}


def _trials(tmp_path, study: str):
    import optuna

    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/{study}.db").get_trials()


def test_the_time_limit_stops_a_hung_evaluation_as_interrupted_and_the_resume_is_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFSEARCH_POISON", "quadratic")
    run_search(_config(tmp_path, "reference"))
    monkeypatch.setenv("DIFFSEARCH_FAULT", "hang")  # the third preset sleeps an hour; the default timeout is >= 60 s
    for _ in range(2):  # twice: a deadline's stop is not an attempt (--max-attempts 2 would fail the candidate)
        started = time.monotonic()
        run_search(_config(tmp_path, "deadline", time="3s"))
        assert time.monotonic() - started < 60
        stopped = _trials(tmp_path, "deadline")[-1]
        assert stopped.state.name == "FAIL" and stopped.user_attrs["error"] == INTERRUPTED and stopped.user_attrs["interrupted"]
        assert (stopped.datetime_complete - stopped.datetime_start).total_seconds() < 4.5
    assert [t.state.name for t in _trials(tmp_path, "deadline")] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    monkeypatch.delenv("DIFFSEARCH_FAULT")
    run_search(_config(tmp_path, "deadline"))
    resumed = {**essence(tmp_path / "deadline.json"), "evaluated": evaluated(tmp_path / "deadline.db")}
    assert resumed == {**essence(tmp_path / "reference.json"), "evaluated": evaluated(tmp_path / "reference.db")}
    assert not [t for t in _trials(tmp_path, "deadline") if t.state.name == "FAIL" and t.user_attrs["error"] != INTERRUPTED]
    assert json.loads((tmp_path / "deadline.json").read_text())["provenance"]["search_cost"]["evaluations"]["interrupted"] == 2


@pytest.mark.slow
def test_the_time_limit_stops_an_s3_proxy_batch_without_counting_an_attempt(tmp_path, references):
    """The deadline stops stage 0's proxy of the hung preset: nothing completed (one error line), the preset's attempt is
    rolled back, the proxies before it are kept, and the resumed search equals an uninterrupted one."""
    first = tiny_search(tmp_path, "proxies", "--evals", "10", "--time", "3s", env={"DIFFSEARCH_FAULT": "hang"})
    assert "no candidate evaluated successfully" in one_line_error(first)
    with sqlite3.connect(tmp_path / "runs" / "proxies.db") as connection:
        (stored,) = connection.execute("SELECT value_json FROM study_user_attributes WHERE key = 's3:proxy_values:0:0'").fetchone()
        errors = [json.loads(v) for (v,) in connection.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'error'")]
    entries = json.loads(stored).values()
    assert entries and all("value" in entry and entry["attempts"] == 1 for entry in entries)  # the stopped one is not there
    assert errors == [INTERRUPTED]
    assert tiny_search(tmp_path, "proxies", "--evals", "10").returncode == 0
    assert {**essence(tmp_path / "runs" / "proxies" / "best.json"), "evaluated": evaluated(tmp_path / "runs" / "proxies.db")} == references(0)
