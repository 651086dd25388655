"""``search serve`` end to end: real server processes on loopback, real worker processes, real gmm searches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.search.config import validate_study_name
from diffsearch.testing.service import SRC, TINY, wait_for

TOKEN = "s3cret-token"
SLOW_GMM = f"{Path(__file__).with_name('slow_gmm.py')}:make"  # 0.1 s per network call on search batches


def completed_trials(server, name):
    study = optuna.load_study(study_name=name, storage=server.storage)
    return [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) if "duplicate_of" not in t.user_attrs]


def export_with_cli(server, name, path):
    env = {**os.environ, "PYTHONPATH": SRC, "DIFFSEARCH_CACHE": str(server.folder / "cache")}
    subprocess.run([sys.executable, "-m", "diffsearch.cli", "export", "--study", name, "--storage", server.storage, "--out", str(path)],
                   check=True, env=env, capture_output=True)
    return json.loads(path.read_text())


def without_timestamp(artifact):
    return {**artifact, "provenance": {k: v for k, v in artifact["provenance"].items() if k != "created"}}


def test_submit_wait_export_cancel_and_access(make_server, tmp_path):
    server = make_server(token=TOKEN, workers=2)
    client = diffsearch.Client(server.url, token=TOKEN)
    assert server.request("POST", "/studies", TINY)[0] == 401  # no token
    assert server.request("POST", "/studies", TINY, token="wrong")[0] == 401
    status, body = server.request("POST", "/studies", {**TINY, "budgt": "4nfe"}, token=TOKEN)
    assert status == 422 and "budgt" in body["detail"]
    assert server.request("POST", "/studies", raw=b"{" + b" " * 100_000 + b"}", token=TOKEN)[0] == 413
    status, body = server.request("POST", "/studies", {**TINY, "study": "../evil"}, token=TOKEN)
    assert status == 422 and body["detail"].startswith("config study:")
    assert server.request("POST", "/studies", {**TINY, "storage": "sqlite:///elsewhere.db"}, token=TOKEN)[0] == 422
    assert server.request("GET", "/studies/no-such-study")[0] == 404
    names = [client.submit({**TINY, "seed": seed}) for seed in (0, 1)]
    assert server.request("POST", "/studies", {**TINY, "seed": 0}, token=TOKEN)[0] == 409  # already queued or running
    slow = client.submit({**TINY, "evals": 400, "search_samples": 4000, "study": "to-cancel"})
    for name in names:
        done = client.wait(name, timeout=180, poll=0.3)
        assert done["status"] == "finished" and done["evaluations"] == 6 and done["best"] > 0
        assert len(done["top"]) == 6 and done["pareto"] and done["cost"]["evaluations"]["final"] >= 1
        fetched = client.artifact(name, tmp_path / f"{name}.json")
        exported = export_with_cli(server, name, tmp_path / f"{name}-cli.json")
        assert without_timestamp(fetched) == without_timestamp(exported)
    png = server.request("GET", f"/studies/{names[0]}/plots/best_so_far.png")[1]
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert server.request("GET", f"/studies/{names[0]}/plots/nope.png")[0] == 404
    wait_for(lambda: client.status(slow)["evaluations"] >= 1)
    assert client.cancel(slow)["status"] == "cancelled"
    worker = server.jobs()[slow]["worker"]
    wait_for(lambda: not os.path.exists(f"/proc/{worker['pid']}") or open(f"/proc/{worker['pid']}/stat").read().split(")")[1].split()[0] == "Z", 30)
    listed = {row["name"]: row["status"] for row in client.status()}
    assert listed == {names[0]: "finished", names[1]: "finished", slow: "cancelled"}


@pytest.mark.slow
def test_restart_and_dead_worker_recompute_nothing(make_server):
    """Kill the server mid-search: the restarted one finds the running worker. Kill the worker: it is re-queued and resumes."""
    server = make_server()
    client = diffsearch.Client(server.url)
    name = client.submit({**TINY, "model": SLOW_GMM, "evals": 40, "cache": False, "study": "durable"})
    wait_for(lambda: client.status(name)["evaluations"] >= 2)
    seen = completed_trials(server, name)
    server.kill()
    server.start()
    assert client.status(name)["status"] == "running"
    assert server.jobs()[name]["attempts"] == 1  # the surviving worker was found, not started again
    before = wait_for(lambda: (trials := completed_trials(server, name)) and len(trials) >= 2 + len(seen) and trials)
    os.killpg(server.jobs()[name]["worker"]["pid"], signal.SIGKILL)
    done = client.wait(name, timeout=240, poll=0.3)
    assert done["status"] == "finished" and server.jobs()[name]["attempts"] == 2
    after = completed_trials(server, name)
    fingerprints = [t.user_attrs["fingerprint"] for t in after]
    assert len(after) == 40 and len(set(fingerprints)) == 40  # each candidate evaluated once
    kept = {t.number: (t.value, t.datetime_complete) for t in after}
    assert all(kept[t.number] == (t.value, t.datetime_complete) for t in before)  # earlier results untouched


def test_study_names_and_exposure(tmp_path):
    for good in ("a", "solver_schedule-4nfe-gmm-random-seed0", "x.y-z_1"):
        assert validate_study_name(good) == good
    for bad in ("", "../etc", "a/b", "a\\b", ".hidden", "a..b", "x" * 129, "name with space"):
        with pytest.raises(DiffsearchError, match="study name"):
            validate_study_name(bad)
    env = {**os.environ, "PYTHONPATH": SRC, "DIFFSEARCH_TOKEN": ""}
    refused = subprocess.run([sys.executable, "-m", "diffsearch.cli", "serve", "--host", "0.0.0.0", "--storage", f"sqlite:///{tmp_path}/s.db"],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --host 0.0.0.0") and "DIFFSEARCH_TOKEN" in refused.stderr


def test_private_reads_need_the_token(make_server):
    server = make_server(token=TOKEN, extra=["--private-reads"])
    assert server.request("GET", "/studies")[0] == 401
    assert server.request("GET", "/studies", token=TOKEN) == (200, [])


def test_the_client_imports_no_torch():
    code = "import sys, diffsearch; diffsearch.Client('http://127.0.0.1:1'); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


@pytest.mark.skipif(not os.environ.get("DIFFSEARCH_TEST_POSTGRES_URL"), reason="set DIFFSEARCH_TEST_POSTGRES_URL (.ci/run does)")
def test_a_job_on_postgresql_storage(make_server):
    server = make_server(storage=os.environ["DIFFSEARCH_TEST_POSTGRES_URL"])
    client = diffsearch.Client(server.url)
    name = client.submit({**TINY, "study": f"service-{os.getpid()}-{int(time.time())}"})
    assert client.wait(name, timeout=180, poll=0.3)["status"] == "finished"
    assert client.artifact(name)["provenance"]["study"] == name
