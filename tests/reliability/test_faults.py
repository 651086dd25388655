"""Crashing, hanging and NaN models; full disks; corrupt, oversize and hostile files; unsafe names."""

from __future__ import annotations

import json
import resource
import signal
import sqlite3
import subprocess
import sys

import pytest

from diffsearch.errors import DiffsearchError
from tests.reliability.conftest import PLUGIN, SRC, one_line_error, search

FAULTY = ["--model", f"{PLUGIN}:make", "--space", "timesteps", "--solver", "dpmpp_2m", "--budget", "4nfe",
          "--samples", "200", "--final-samples", "400", "--no-progress"]


def trial_errors(database) -> list[str]:
    connection = sqlite3.connect(database)
    return [json.loads(v) for (v,) in connection.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'error'")]


def test_a_candidate_that_kills_its_process_fails_after_max_attempts(tmp_path):
    """os._exit in the network: each run dies on it, the second rerun records it failed and completes."""
    arguments = ["run", *FAULTY, "--strategy", "random", "--evals", "6", "--study", "crash"]
    codes = [search(tmp_path, *arguments, env={"DIFFSEARCH_FAULT": "crash"}).returncode for _ in range(3)]
    assert codes == [3, 3, 0]
    errors = trial_errors(tmp_path / "runs" / "crash.db")
    assert errors.count("interrupted (the run was killed); re-queued") == 1
    assert "the evaluation killed its process 2 times (--max-attempts 2); not retried" in errors
    assert (tmp_path / "runs" / "crash" / "best.json").is_file()


def test_a_hanging_evaluation_times_out_as_a_failed_trial(tmp_path):
    result = search(tmp_path, "run", *FAULTY, "--strategy", "random", "--evals", "5", "--eval-timeout", "3s",
                    "--study", "hang", env={"DIFFSEARCH_FAULT": "hang"}, timeout=200)
    assert result.returncode == 0, result.stderr[-2000:]
    assert any("ran past its 3s timeout" in error for error in trial_errors(tmp_path / "runs" / "hang.db"))


@pytest.mark.slow
def test_a_nan_model_is_a_failed_trial(tmp_path):
    result = search(tmp_path, "run", *FAULTY, "--strategy", "random", "--evals", "5", "--study", "nan", env={"DIFFSEARCH_FAULT": "nan"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert trial_errors(tmp_path / "runs" / "nan.db") == ["non-finite samples (the schedule diverged)"]


@pytest.mark.slow
def test_a_candidate_that_kills_the_s3_proxy_fails_after_max_attempts(tmp_path):
    """The gated s3 proxies every preset first: the crash happens there, and is counted there."""
    arguments = ["run", *FAULTY, "--evals", "5", "--study", "proxycrash"]
    codes = [search(tmp_path, *arguments, env={"DIFFSEARCH_FAULT": "crash"}).returncode for _ in range(3)]
    assert codes == [3, 3, 0]
    connection = sqlite3.connect(tmp_path / "runs" / "proxycrash.db")
    (stored,) = connection.execute("SELECT value_json FROM study_user_attributes WHERE key = 's3:proxy_values:0:0'").fetchone()
    assert sorted(entry["attempts"] for entry in json.loads(stored).values()) == [1, 1, 1, 3]  # the third run gave up on it


def test_disk_full_during_export_keeps_the_previous_artifact(tmp_path, gmm):
    """A file-size limit (EFBIG, as a full disk's ENOSPC) while rewriting best.json: the old file stays whole."""
    import diffsearch

    path = tmp_path / "best.json"
    diffsearch.save_schedule(diffsearch.load_schedule("preset:dpmpp_2m", nfe=5, model=gmm), path)
    before = path.read_text()
    script = ("import diffsearch, sys; m = diffsearch.load_model('gmm'); s = diffsearch.load_schedule('preset:unipc_bh2', nfe=9, model=m)\n"
              "try:\n    diffsearch.save_schedule(s, sys.argv[1])\nexcept OSError as e:\n    print(e.errno); sys.exit(7)")

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, len(before) // 2))

    result = subprocess.run([sys.executable, "-c", script, str(path)], env={"PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1"}, preexec_fn=limit,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 7, result.stderr[-2000:]
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]  # no temporary file left behind


@pytest.mark.parametrize("problem", ["out_is_a_folder", "out_folder_missing", "runs_not_writable"])
def test_out_and_runs_are_checked_before_the_search(tmp_path, monkeypatch, problem):
    """Found before any model is loaded (the model spec here does not even exist)."""
    import diffsearch

    monkeypatch.chdir(tmp_path)
    config = {"model": "no_such_module:make", "study": "s", "progress": False}
    if problem == "out_is_a_folder":
        (tmp_path / "folder").mkdir()
        config["out"], message = str(tmp_path / "folder"), "is a folder"
    elif problem == "out_folder_missing":
        config["out"], message = str(tmp_path / "missing" / "best.json"), "does not exist"
    else:
        (tmp_path / "runs").write_text("a file where the runs/ folder should be")
        message = "--storage: cannot create the folder runs"
    with pytest.raises(DiffsearchError, match=message):
        diffsearch.run_search(config)


@pytest.mark.parametrize("study", ["../../x", "/tmp/abs", "a/b", ".hidden", "x" * 200])
def test_unsafe_study_names_are_refused(study):
    from diffsearch.search.config import validate_config, validate_study_name

    with pytest.raises(DiffsearchError, match="study name"):
        validate_study_name(study)
    with pytest.raises(DiffsearchError, match="study name"):
        validate_config({"study": study})


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_study_is_one_line_from_every_command(tmp_path, damage):
    database = tmp_path / "runs" / "broken.db"
    database.parent.mkdir()
    connection = sqlite3.connect(database)
    connection.executescript("CREATE TABLE t (x); " + "INSERT INTO t VALUES (randomblob(4000));" * 20)
    connection.close()
    data = database.read_bytes()
    database.write_bytes(data[: len(data) // 3] if damage == "truncated" else b"\x00garbage" * 1000)
    from diffsearch.search import storage
    from diffsearch.search.runner import export_study

    url = f"sqlite:///{database}"
    calls = (lambda: storage.load_existing("broken", url), lambda: export_study("broken", url, tmp_path / "x.json"),
             lambda: storage.open_study("broken", url, None, {}))
    for call in calls:
        with pytest.raises(DiffsearchError, match="cannot read the study database") as error:
            call()
        assert "\n" not in str(error.value)
    if damage == "truncated":  # and from the command line: exit 2, one line
        assert "cannot read the study database" in one_line_error(search(tmp_path, "show", "--study", "broken"))


def test_a_corrupt_cache_is_set_aside_and_rebuilt(tmp_path):
    from diffsearch.evaluators.cache import EvaluationCache

    path = tmp_path / "evaluations.sqlite"
    path.write_bytes(b"SQLite format 3\x00" + b"\xff" * 5000)
    cache = EvaluationCache(path)
    cache.put("k", {"status": "ok", "fid": 1.5})
    assert cache.get("k") == {"status": "ok", "fid": 1.5}
    assert len(list(tmp_path.glob("evaluations.sqlite.corrupt-*"))) == 1


def test_a_cached_value_failing_validation_is_discarded(tmp_path):
    from diffsearch.evaluators.cache import EvaluationCache

    cache = EvaluationCache(tmp_path / "evaluations.sqlite")
    with sqlite3.connect(cache.path) as connection:
        connection.execute("INSERT INTO evaluations VALUES ('bad', ?)", (json.dumps({"status": "ok", "fid": -3.0}),))
        connection.execute("INSERT INTO evaluations VALUES ('text', 'not json')")
    assert cache.get("bad") is None and cache.get("text") is None


def test_the_cache_key_follows_the_reference_content_not_its_path(tmp_path, gmm):
    import numpy as np

    import diffsearch
    from diffsearch.evaluators.cache import cache_key

    schedule = diffsearch.load_schedule("preset:ddim", nfe=4, model=gmm)
    reference = tmp_path / "reference.npy"
    keys = []
    for value in (0.0, 1.0):
        np.save(reference, np.full((4, 8), value))
        keys.append(cache_key(schedule, gmm.fingerprint, {"reference": str(reference)}))
    assert keys[0] != keys[1]
    np.save(tmp_path / "copy.npy", np.full((4, 8), 1.0))
    assert cache_key(schedule, gmm.fingerprint, {"reference": str(tmp_path / "copy.npy")}) == keys[1]


def base_artifact(gmm) -> dict:
    import diffsearch

    return json.loads(diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=gmm).model_dump_json())


def _set(data: dict, path: tuple, value) -> dict:
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


HOSTILE = {
    "overflowing_metric": (lambda d: json.dumps(_set(d, ("metrics",), {"fid": 1})).replace('"fid": 1', '"fid": 1e999'), "overflows"),
    "huge_timestep": (lambda d: json.dumps(_set(d, ("timesteps", 1), 1e308)), "timesteps[1]"),
    "timestep_above_one": (lambda d: json.dumps(_set(d, ("timesteps", 0), 3.0)), "timesteps[0]"),
    "missing_schema_version": (lambda d: json.dumps(_set(d, ("schema_version",), KeyError)), "schema_version: required"),
    "null_noise_schedule": (lambda d: json.dumps(_set(d, ("noise_schedule",), None)), "noise_schedule: required"),
    "deep_nesting": (lambda d: json.dumps(d)[:-1] + ', "provenance": ' + "[" * 100000 + "]" * 100000 + "}", "not valid JSON"),
    "moderately_deep": (lambda d: json.dumps(_set(d, ("provenance",), json.loads("[" * 40 + "]" * 40))), "nested deeper"),
    "200000_steps": (lambda d: json.dumps(_set(_set(d, ("steps",), [{"order": 1}] * 200_000), ("timesteps",),
                                               [1 - i / 200_001 for i in range(200_001)])), "bytes"),
    "4097_steps": (lambda d: json.dumps(_set(_set(d, ("steps",), [{"order": 1}] * 4097), ("timesteps",),
                                             [1 - i / 4098 for i in range(4098)])), "steps"),
    "huge_coefficient": (lambda d: json.dumps(d).replace('"coefficient": 0.0', '"coefficient": 1e300', 1), "coefficient"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_artifacts_are_one_clear_error(tmp_path, gmm, case):
    import diffsearch

    build, message = HOSTILE[case]
    path = tmp_path / "a.json"
    path.write_text(build(base_artifact(gmm)))
    with pytest.raises(DiffsearchError, match="^" + str(path)) as error:
        diffsearch.load_schedule(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_hostile_artifact_is_exit_2_and_one_line_from_the_cli(tmp_path, gmm):
    path = tmp_path / "a.json"
    path.write_text(HOSTILE["huge_timestep"][0](base_artifact(gmm)))
    assert "timesteps[1]" in one_line_error(search(tmp_path, "eval", "--model", "gmm", "--schedule", str(path), "--samples", "8"))


YAML = {
    "python_tag": ("model: !!python/object/apply:os.system ['echo hacked']\n", "could not determine a constructor"),
    "alias_bomb": ("a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nstrategy_options: {x: [*b, *b]}\n", "aliases"),
    "misspelt_option": ("strategy: s3\nstrategy_options: {top_kk: 3}\n", "strategy_options.top_kk"),
    "out_of_bounds_option": ("strategy: evolution\nstrategy_options: {crossover: 7}\n", "strategy_options.crossover"),
    "not_a_mapping": ("- a\n- b\n", "expected a mapping"),
}


@pytest.mark.parametrize("case", list(YAML))
def test_hostile_configs_are_one_clear_error(tmp_path, case):
    from diffsearch.search.config import load_config

    text, message = YAML[case]
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(DiffsearchError, match=message) as error:
        load_config(str(tmp_path / "c.yaml"), {})
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_export_does_not_import_the_plugin_a_study_names(tmp_path):
    marker = tmp_path / "imported"
    plugin = tmp_path / "evil.py"
    plugin.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nfrom tests.reliability.faulty_model import make\n")
    env = {"PYTHONPATH": f"{SRC}:{SRC.parent}"}
    done = search(tmp_path, "run", *FAULTY[2:], "--model", f"{plugin}:make", "--strategy", "random", "--evals", "4", "--study", "evil", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    marker.unlink()
    assert "is code" in one_line_error(search(tmp_path, "export", "--study", "evil", "--out", "x.json", env=env))
    assert not marker.exists()
    assert search(tmp_path, "export", "--study", "evil", "--out", "x.json", "--model", f"{plugin}:make", env=env).returncode == 0
    assert marker.exists()


@pytest.mark.slow
def test_a_second_driver_refuses_a_live_study_or_joins_it(tmp_path):
    """Driver A hangs on a candidate; B refuses (one line naming A), then with --join shares the work
    without touching A's running trial; A's trial ends by its own timeout, and nothing is marked interrupted."""
    import os
    import time

    arguments = ["run", *FAULTY, "--strategy", "random", "--evals", "6", "--study", "shared", "--eval-timeout", "20s"]
    environment = {**os.environ, "PYTHONPATH": str(SRC), "DIFFSEARCH_CACHE": str(tmp_path / "cache"), "DIFFSEARCH_FAULT": "hang"}
    first = subprocess.Popen([sys.executable, "-m", "diffsearch.cli", *arguments], cwd=tmp_path, env=environment,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    database, started = tmp_path / "runs" / "shared.db", time.monotonic()
    while time.monotonic() - started < 120:
        time.sleep(1)
        if database.is_file() and _running(database):
            break
    refused = search(tmp_path, *arguments)
    assert "is being run by driver" in one_line_error(refused) and f"pid {first.pid}" in refused.stderr
    joined = search(tmp_path, *arguments, "--join")
    assert joined.returncode == 0, joined.stderr[-2000:]
    out, err = first.communicate(timeout=200)
    assert first.returncode == 0, err[-2000:]
    errors = trial_errors(database)
    assert not any("interrupted" in error for error in errors) and any("timeout" in error for error in errors)


def _running(database) -> bool:
    try:
        with sqlite3.connect(database) as connection:
            return connection.execute("SELECT count(*) FROM trials WHERE state = 'RUNNING'").fetchone()[0] > 0
    except sqlite3.Error:
        return False
