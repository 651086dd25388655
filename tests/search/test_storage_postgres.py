"""Cluster storage: a study in a real PostgreSQL server resumes without recomputation and is shared by drivers.

Set DIFFSEARCH_TEST_POSTGRES_URL (e.g. postgresql+psycopg2://user@127.0.0.1:5432/db); ``.ci/run`` starts a
throwaway server and sets it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import optuna
import pytest

from diffsearch.search.runner import run_search

URL = os.environ.get("DIFFSEARCH_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="DIFFSEARCH_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against (.ci/run starts one)")


@pytest.fixture
def study_name():
    """A fresh study name, deleted from the server afterwards."""
    name = f"pg-{uuid.uuid4().hex[:10]}"
    yield name
    try:
        optuna.delete_study(study_name=name, storage=URL)
    except KeyError:
        pass


def config(tmp_path, study, **overrides):
    base = {"model": "gmm", "budget": "4nfe", "strategy": "evolution", "evals": 10, "search_samples": 200, "final_samples": 400,
            "final_top": 2, "study": study, "storage": URL, "out": str(tmp_path / "best.json"), "progress": False, "cache": False}
    return {**base, **overrides}


def test_a_second_run_on_postgres_continues_the_study_without_recomputation(tmp_path, study_name):
    run_search(config(tmp_path, study_name))
    before = {t.number: (t.value, t.datetime_complete) for t in optuna.load_study(study_name=study_name, storage=URL).trials}
    result = run_search(config(tmp_path, study_name, evals=14))
    after = optuna.load_study(study_name=study_name, storage=URL).trials
    assert all((t.value, t.datetime_complete) == before[t.number] for t in after if t.number in before)
    complete = [t for t in after if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert len(complete) == 14 and len({t.user_attrs["fingerprint"] for t in complete}) == 14
    assert result.schedule.provenance["search_cost"]["evaluations"]["expensive"] == 14


def test_two_drivers_share_one_postgres_store(tmp_path, study_name):
    second = f"{study_name}-b"
    commands = [[sys.executable, "-m", "diffsearch.cli", "run", "--model", "gmm", "--budget", "4nfe", "--strategy", "random",
                 "--evals", "6", "--samples", "200", "--final-samples", "400", "--study", name, "--storage", URL,
                 "--out", str(tmp_path / f"{name}.json"), "--no-progress"] for name in (study_name, second)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for command in commands]
    try:
        outputs = [process.communicate(timeout=240)[0] for process in processes]
        assert [process.returncode for process in processes] == [0, 0], outputs
        names = {summary.study_name for summary in optuna.get_all_study_summaries(storage=URL)}
        assert {study_name, second} <= names
    finally:
        optuna.delete_study(study_name=second, storage=URL)
