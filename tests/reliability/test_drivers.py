"""Joined drivers: stage building is claim-once in the storage (SQLite row insert, journal lock file)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import optuna
import pytest

from diffsearch.search import storage
from tests.reliability.conftest import PLUGIN, S3_CONFIG, SRC, TINY


def _url(tmp_path, kind: str) -> str:
    return f"sqlite:///{tmp_path}/claims.db" if kind == "sqlite" else f"journal:///{tmp_path}/claims.log"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_one_of_many_racing_drivers_wins_a_claim(tmp_path, kind):
    """Eight drivers (own storage connections) claim the same keys at once: exactly one holds each."""
    optuna.create_study(study_name="claims", storage=storage.optuna_storage(_url(tmp_path, kind)))
    studies = [optuna.load_study(study_name="claims", storage=storage.optuna_storage(_url(tmp_path, kind))) for _ in range(8)]
    barrier, won = threading.Barrier(8), {}

    def driver(index: int) -> None:
        barrier.wait()
        won[index] = [storage.claim_once(studies[index], f"s3:build:{stage}", f"driver{index}", lambda holder: True) for stage in range(5)]

    threads = [threading.Thread(target=driver, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for stage in range(5):
        winners = [index for index in range(8) if won[index][stage]]
        assert len(winners) == 1 and studies[0].user_attrs[f"s3:build:{stage}"] == f"driver{winners[0]}"


def test_a_claim_of_a_dead_driver_is_taken_over(tmp_path):
    study = optuna.create_study(study_name="claims", storage=_url(tmp_path, "sqlite"))
    assert storage.claim_once(study, "s3:build:1", "dead", lambda holder: True)
    assert not storage.claim_once(study, "s3:build:1", "second", lambda holder: holder == "dead")  # holder alive: wait
    assert storage.claim_once(study, "s3:build:1", "second", lambda holder: holder == "second")  # holder dead: #2
    assert study.user_attrs["s3:build:1#2"] == "second"
    assert not storage.claim_once(study, "s3:build:1", "third", lambda holder: holder == "second")


def _driver(tmp_path, name: str, *extra: str) -> subprocess.Popen:
    """A tiny s3 search of the faulty gmm whose proxies sleep 50 ms a call, logging its network calls to ``<name>.log``."""
    (tmp_path / "s3.json").write_text(json.dumps(S3_CONFIG))
    environment = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "DIFFSEARCH_THREADS": "1",
                   "DIFFSEARCH_CACHE": str(tmp_path / "cache"), "DIFFSEARCH_SLOW": "32:0.05", "DIFFSEARCH_CALL_LOG": str(tmp_path / f"{name}.log")}
    command = [sys.executable, "-m", "diffsearch.cli", "run", "--config", str(tmp_path / "s3.json"), "--model", f"{PLUGIN}:make", *TINY,
               "--study", "joined", "--evals", "12", "--final-seeds", "1", "--out", str(tmp_path / f"{name}.json"), *extra]
    return subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _calls(tmp_path, name: str, rows: str) -> int:
    log = tmp_path / f"{name}.log"
    return log.read_text().split().count(rows) if log.exists() else 0


@pytest.mark.slow
def test_two_joined_s3_drivers_build_each_stage_once(tmp_path):
    """B joins while A computes stage 0's proxies: B waits for A's stage 0, and every later stage is built by one of
    them. The proxies the two computed add up to exactly the proxies of the stages in the study."""
    first = _driver(tmp_path, "a")
    started = time.monotonic()
    while _calls(tmp_path, "a", "32") < 4 and time.monotonic() - started < 120:  # A is in stage 0's proxies
        time.sleep(0.2)
    second = _driver(tmp_path, "b", "--join")
    for process in (first, second):
        assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    with sqlite3.connect(tmp_path / "runs" / "joined.db") as connection:
        attrs = {k: json.loads(v) for k, v in connection.execute("SELECT key, value_json FROM study_user_attributes")}
    stages = sorted(int(key.split(":")[2]) for key in attrs if key.startswith("s3:stats:"))
    assert len(stages) >= 3 and stages == list(range(len(stages)))
    proxied = sum(sum("value" in entry for entry in attrs.get(f"s3:proxy_values:{stage}:0", {}).values()) for stage in stages)
    assert _calls(tmp_path, "a", "32") + _calls(tmp_path, "b", "32") == 4 * proxied  # 4 NFE: 4 calls per proxy, none twice
    claims = {key: holder for key, holder in attrs.items() if key.startswith("s3:build:")}
    assert sorted(claims) == sorted(f"s3:build:{stage}" for stage in stages)  # one claim per stage, none taken over
    assert claims["s3:build:0"].split(":")[1] == str(first.pid)
