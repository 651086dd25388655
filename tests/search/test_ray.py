"""The Ray executor, Ray Jobs, the Tune adapter and fault tolerance (one local Ray cluster per module)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from diffsearch.search.runner import prepare, run_search

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

CRASH_ONCE = (
    "import os, diffsearch\n"
    "from diffsearch.models.gmm import build_gmm\n"
    "def make():\n"
    "    if os.path.exists({poison!r} + '-load'):\n"
    "        raise RuntimeError('weights missing on this node')\n"
    "    base = build_gmm()\n"
    "    def fn(x, t, cond):\n"
    "        try:\n"
    "            os.rename({flag!r}, {flag!r} + '.used')  # only the first evaluation anywhere gets the flag\n"
    "            os._exit(1)\n"
    "        except FileNotFoundError:\n"
    "            pass\n"
    "        if os.path.exists({poison!r}):\n"
    "            os._exit(1)\n"
    "        return base.fn(x, t, cond)\n"
    "    model = diffsearch.Denoiser(fn, base.noise_schedule, data_shape=(8,), name='crashy')\n"
    "    model.truth = base.truth\n"
    "    return model\n"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster (with the dashboard, for Ray Jobs) shared by the whole module."""
    port = _free_port()
    context = ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", dashboard_port=port,
                       log_to_driver=False, configure_logging=False, runtime_env={"env_vars": {"DIFFSEARCH_THREADS": "1"}})
    yield {"gcs": context.address_info["gcs_address"], "dashboard": f"http://127.0.0.1:{port}"}
    ray.shutdown()


def config(tmp_path, **overrides):
    base = {"model": "gmm", "budget": "4nfe", "strategy": "evolution", "evals": 8, "search_samples": 200,
            "final_samples": 400, "final_top": 2, "study": "test", "storage": f"sqlite:///{tmp_path}/s.db",
            "out": str(tmp_path / "best.json"), "progress": False, "cache": False, "executor": "ray", "workers": 2}
    return {**base, **overrides}


def trials(tmp_path, study="test"):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/s.db").get_trials()


def distinct_complete(all_trials):
    return [t for t in all_trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]


def test_parallel_search_on_two_actors_exports(cluster, tmp_path):
    result = run_search(config(tmp_path))
    complete = distinct_complete(trials(tmp_path))
    assert len(complete) == 8 and len({t.user_attrs["fingerprint"] for t in complete}) == 8
    assert len({t.user_attrs["result"]["pid"] for t in complete}) == 2  # two evaluator actors, each loaded once
    assert os.getpid() not in {t.user_attrs["result"]["pid"] for t in complete}
    assert {t.user_attrs["result"]["device"] for t in complete} == {"cpu"}  # no GPU reserved: Ray hides any, device auto is cpu
    assert result.schedule.nfe == 4 and result.path.is_file()


def test_an_actor_killed_mid_evaluation_is_retried_on_a_fresh_actor(cluster, tmp_path):
    flag = tmp_path / "crash-once"
    flag.touch()
    plugin = tmp_path / "crashy.py"
    plugin.write_text(CRASH_ONCE.format(flag=str(flag), poison=str(tmp_path / "poison")))
    run_search(config(tmp_path, model=f"{plugin}:make", evals=6))
    assert not flag.exists() and Path(f"{flag}.used").exists()
    complete = distinct_complete(trials(tmp_path))
    assert len(complete) == 6 and not [t for t in trials(tmp_path) if t.state.name == "FAIL"]
    assert sorted(t.user_attrs["result"]["retries"] for t in complete) == [0, 0, 0, 0, 0, 1]


def test_a_candidate_that_keeps_killing_its_actor_fails_after_max_retries(cluster, tmp_path):
    poison = tmp_path / "poison"
    plugin = tmp_path / "crashy.py"
    plugin.write_text(CRASH_ONCE.format(flag=str(tmp_path / "no-flag"), poison=str(poison)))
    run = prepare(optuna_free_config(tmp_path, model=f"{plugin}:make", max_retries=1, workers=1))
    candidate = run.space.initial()[0][1]
    try:
        poison.touch()
        run.executor.submit(7, candidate)
        key, result = run.executor.next_result()
        assert key == 7 and result["status"] == "failed" and result["retries"] == 1
        assert "evaluator died 2 times" in result["error"]
        poison.unlink()
        run.executor.submit(8, candidate)
        key, result = run.executor.next_result()
        assert key == 8 and result["status"] == "ok" and result["retries"] == 0
    finally:
        run.executor.close()


def test_actors_that_cannot_load_the_model_stop_the_search_with_one_error(cluster, tmp_path):
    from diffsearch.errors import DiffsearchError

    plugin = tmp_path / "crashy.py"
    plugin.write_text(CRASH_ONCE.format(flag=str(tmp_path / "no-flag"), poison=str(tmp_path / "poison")))
    run = prepare(optuna_free_config(tmp_path, model=f"{plugin}:make"))
    (tmp_path / "poison-load").touch()  # the driver loaded the model; the actors cannot
    with pytest.raises(DiffsearchError, match="evaluator actor could not start.*weights missing"):
        run.executor.submit(0, run.space.initial()[0][1])
    run.executor.close()


def optuna_free_config(tmp_path, **overrides):
    from diffsearch.search.config import RunConfig

    return RunConfig.model_validate(config(tmp_path, **overrides))


def test_nan_and_raising_candidates_are_failed_trials_with_ray(cluster, tmp_path, flaky_plugin):
    plugin = flaky_plugin
    result = run_search(config(tmp_path, model=f"{plugin}:make", strategy="random", space="timesteps", solver="dpmpp_2m", evals=10))
    failed = [t for t in trials(tmp_path) if t.state.name == "FAIL"]
    assert failed and all(t.user_attrs.get("error") for t in failed)
    assert all(t.user_attrs["result"]["retries"] == 0 for t in failed)  # a broken candidate is not an actor death
    assert len(distinct_complete(trials(tmp_path))) == 10 and result.schedule.nfe == 4


def cli_command(tmp_path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "diffsearch.cli", "run", "--model", "gmm", "--budget", "5nfe", "--strategy", "evolution",
            "--samples", "3000", "--final-samples", "500", "--study", "killed", "--storage", f"sqlite:///{tmp_path}/s.db",
            "--out", str(tmp_path / "best.json"), "--no-progress", "--executor", "ray", "--workers", "2", *extra]


@pytest.mark.slow
def test_killed_ray_driver_resumes_with_nothing_lost_or_recomputed(cluster, tmp_path):
    command = cli_command(tmp_path, "--evals", "30", "--ray-address", cluster["gcs"])
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            if len([t for t in trials(tmp_path, "killed") if t.state.name == "COMPLETE"]) >= 10:
                break
        except Exception:
            continue
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {t.number: t.value for t in trials(tmp_path, "killed") if t.state.name == "COMPLETE"}
    assert 10 <= len(before) < 30
    subprocess.run(command, check=True, capture_output=True, timeout=240)
    after = trials(tmp_path, "killed")
    assert all(t.value == before[t.number] for t in after if t.number in before)
    complete = distinct_complete(after)
    assert len(complete) == 30 and len({t.user_attrs["fingerprint"] for t in complete}) == 30
    assert (tmp_path / "best.json").is_file()


@pytest.mark.slow
def test_ray_job_submit_runs_the_search_entrypoint(cluster, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "search.yaml").write_text(
        f"model: gmm\nbudget: 4nfe\nstrategy: random\nevals: 4\nsearch_samples: 200\nfinal_samples: 400\nfinal_top: 1\n"
        f"study: job\nstorage: sqlite:///{tmp_path}/s.db\nout: {tmp_path}/best.json\ncache: false\nexecutor: ray\nworkers: 1\n"
    )
    client = JobSubmissionClient(cluster["dashboard"])
    job = client.submit_job(entrypoint=f"{sys.executable} -m diffsearch.cli run --config search.yaml --no-progress",
                            runtime_env={"working_dir": str(job_dir)})
    deadline = time.monotonic() + 200
    while client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED} and time.monotonic() < deadline:
        time.sleep(1)
    assert client.get_job_status(job) == JobStatus.SUCCEEDED, client.get_job_logs(job)[-3000:]
    assert len(distinct_complete(trials(tmp_path, "job"))) == 4 and (tmp_path / "best.json").is_file()
    assert "wrote" in client.get_job_logs(job)


def test_tune_searcher_drives_a_tuner_with_a_diffsearch_strategy(cluster, tmp_path):
    from ray import tune

    from diffsearch.search.ray_tune import from_run_config

    searcher, trainable, metric = from_run_config(config(tmp_path, strategy="evolution", space="timesteps", solver="dpmpp_2m"))
    tuner = tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, metric=metric, mode="min", num_samples=4,
                                                              max_concurrent_trials=2),
                       run_config=tune.RunConfig(name="tune", storage_path=str(tmp_path / "tune"), verbose=0))
    results = tuner.fit()
    assert len(results) == 4 and not results.errors
    best = results.get_best_result()
    assert best.metrics[metric] > 0 and best.config["candidate"]["timesteps"]
    told = [t for t in searcher.study.trials if t.state.name == "COMPLETE"]
    assert len(told) == 4 and {t.user_attrs["tags"]["origin"] for t in told} >= {"initial"}


def test_space_converts_to_a_tune_param_space(cluster, tmp_path):
    from ray import tune

    from diffsearch.models.loading import load_model
    from diffsearch.search.executors import evaluation_settings
    from diffsearch.search.ray_tune import make_trainable, tune_search_space

    run = prepare(optuna_free_config(tmp_path, space="solver_schedule", workers=1))
    param_space = tune_search_space(run.space)
    assert set(param_space) == set(run.space.distributions())
    assert isinstance(param_space["order_0"], tune.search.sample.Integer)
    tuner = tune.Tuner(make_trainable(evaluation_settings(run.config, run.space, run.metric, run.search_samples)), param_space=param_space,
                       tune_config=tune.TuneConfig(metric=run.metric, mode="min", num_samples=2, max_concurrent_trials=2),
                       run_config=tune.RunConfig(name="space", storage_path=str(tmp_path / "tune"), verbose=0))
    results = tuner.fit()
    assert len(results) == 2 and not results.errors
    for result in results:
        assert run.space.validate(run.space.from_params({k: result.config[k] for k in param_space}))
    assert load_model  # the model is loaded inside Tune's workers, not passed to them


def test_cli_help_and_the_search_engine_do_not_import_ray():
    code = ("import sys, diffsearch.cli, diffsearch.search.runner, diffsearch.search.executors; "
            "assert 'ray' not in sys.modules, 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
    help_text = subprocess.run([sys.executable, "-m", "diffsearch.cli", "run", "--help"], check=True, capture_output=True, text=True).stdout
    assert "--executor" in help_text and "--ray-address" in help_text


def test_example_cluster_config_validates_and_the_job_config_loads():
    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    from diffsearch.search.config import load_config

    configs = Path(__file__).resolve().parents[2] / "configs"
    validate_config(prepare_config(yaml.safe_load((configs / "ray" / "cluster.yaml").read_text())))
    job = load_config(str(configs / "ray_solver_schedule_10nfe.yaml"), {})
    assert (job.executor, job.workers, job.gpus_per_worker) == ("ray", 4, 1)


def test_parallel_settings_without_the_ray_executor_are_refused(tmp_path):
    from diffsearch.errors import DiffsearchError
    from diffsearch.search.config import load_config

    with pytest.raises(DiffsearchError, match="need executor: ray"):
        load_config(None, {"workers": 2})
    assert load_config(None, {"executor": "ray", "workers": 2}).identity() == load_config(None, {}).identity()


def test_more_gpus_than_ray_reports_are_refused_at_start(cluster, tmp_path):
    from diffsearch.errors import DiffsearchError

    gpus = ray.cluster_resources().get("GPU", 0)
    with pytest.raises(DiffsearchError, match=rf"need {gpus + 1:g} GPUs; Ray reports 2 CPU, {gpus:g} GPU"):
        run_search(config(tmp_path, executor="ray", workers=1, gpus_per_worker=gpus + 1))


FAULTY_WRAPPER = (
    "import importlib.util, os\n"
    "def make():\n"
    "    spec = importlib.util.spec_from_file_location('faulty_model', {faulty!r})\n"
    "    module = importlib.util.module_from_spec(spec)\n"
    "    spec.loader.exec_module(module)\n"
    "    os.environ['DIFFSEARCH_FAULT'] = {fault!r}\n"
    "    try:\n"
    "        return module.make()  # reads DIFFSEARCH_FAULT once\n"
    "    finally:\n"
    "        del os.environ['DIFFSEARCH_FAULT']\n"
)


def faulty_plugin(tmp_path, fault: str) -> str:
    """tests/reliability/faulty_model.py with ``fault`` on the dpmpp_2m@karras preset, in every process that loads it."""
    plugin = tmp_path / f"{fault}.py"
    faulty = Path(__file__).resolve().parents[1] / "reliability" / "faulty_model.py"
    plugin.write_text(FAULTY_WRAPPER.format(faulty=str(faulty), fault=fault))
    return f"{plugin}:make"


def test_hung_evaluations_and_proxies_stop_at_the_timeout_or_the_deadline_on_ray(cluster, tmp_path):
    """The timeout kills and replaces a hung actor (failed result); the --time deadline does too, as interrupted;
    a proxy batch through the Ray executor fails the hung proxy by its timeout and raises at the deadline."""
    import math

    from diffsearch.search.executors import INTERRUPTED, DeadlineReached, evaluate_batch, proxy_settings

    run = prepare(optuna_free_config(tmp_path, model=faulty_plugin(tmp_path, "hang"), space="timesteps", solver="dpmpp_2m"))
    (label, poison), (_, clean) = run.space.initial()[:2]
    assert label == "preset:dpmpp_2m@karras"
    try:
        run.executor.timeout = 3.0
        hung, ok = evaluate_batch(run.executor, [poison, clean], proxy_settings(32, "frechet_exact"))
        assert hung["status"] == "failed" and "ran past its 3s timeout" in hung["error"] and "actor was replaced" in hung["error"]
        assert ok["status"] == "ok" and ok["samples"] == 32, ok
        run.executor.submit(5, clean)
        replaced = run.executor.next_result()[1]
        assert replaced["status"] == "ok", replaced  # the replacement actor evaluates (its model load is not timed)
        run.executor.timeout, run.executor.deadline = math.inf, time.monotonic() + 3
        run.executor.submit(6, poison)
        assert run.executor.next_result() == (6, {"status": "interrupted", "error": INTERRUPTED})
        run.executor.deadline = time.monotonic() + 3
        with pytest.raises(DeadlineReached):
            evaluate_batch(run.executor, [clean, poison], proxy_settings(32, "frechet_exact"))
    finally:
        run.executor.close()


def test_a_proxy_that_kills_its_actor_fails_and_the_s3_search_completes_on_ray(cluster, tmp_path):
    """Gated s3 proxies every preset through the Ray actors: os._exit in one kills an actor, not the driver."""
    import json

    result = run_search(config(tmp_path, model=faulty_plugin(tmp_path, "crash"), strategy="s3", space="timesteps", solver="dpmpp_2m",
                               evals=5, max_retries=0, final_seeds=1, strategy_options={"mutants": 40}))
    study = optuna.load_study(study_name="test", storage=f"sqlite:///{tmp_path}/s.db")
    values = study.user_attrs["s3:proxy_values:0:0"]
    assert sorted(entry["value"] is None for entry in values.values()) == [False, False, False, True]
    complete = distinct_complete(study.get_trials())
    assert len(complete) == 5 and os.getpid() not in {t.user_attrs["result"]["pid"] for t in complete}
    assert json.loads(result.path.read_text())["provenance"]["label"] != "preset:dpmpp_2m@karras"


LISTENERS = '''
import os, pathlib
from diffsearch.search.config import RunConfig
from diffsearch.search.runner import prepare

run = prepare(RunConfig.model_validate({"model": "gmm", "budget": "4nfe", "study": "bind", "storage": "sqlite:///:memory:",
                                        "executor": "ray", "workers": 1, "progress": False}))
run.executor.warm_up()
import ray
print("nodes", sorted({node["NodeManagerAddress"] for node in ray.nodes()}))
parents = {}
for status in pathlib.Path("/proc").glob("[0-9]*/stat"):
    try:
        fields = status.read_text().rsplit(")", 1)[1].split()
    except OSError:
        continue
    parents[int(status.parent.name)] = int(fields[1])
tree = {os.getpid()}
while grown := {pid for pid, parent in parents.items() if parent in tree} - tree:
    tree |= grown
inodes = set()
for pid in tree:
    for fd in pathlib.Path(f"/proc/{pid}/fd").glob("*"):
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
for table in ("tcp", "tcp6"):
    for line in pathlib.Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
            print("listen", parts[1].split(":")[0])
run.executor.close()
'''
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::ffff:127.0.0.1, ::1


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="listening sockets are read from Linux /proc")
def test_the_embedded_local_cluster_listens_on_loopback_only(tmp_path):
    """Every socket a process of the executor's own cluster listens on is a loopback address (not 0.0.0.0 or the LAN)."""
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src"), "DIFFSEARCH_CACHE": str(tmp_path)}
    environment.pop("RAY_ADDRESS", None)
    output = subprocess.run([sys.executable, "-c", LISTENERS], env=environment, capture_output=True, text=True, timeout=240)
    assert output.returncode == 0, output.stderr[-2000:]
    listening = [line.split()[1] for line in output.stdout.splitlines() if line.startswith("listen ")]
    assert "nodes ['127.0.0.1']" in output.stdout and len(listening) >= 3  # GCS, raylet, agents
    assert set(listening) <= LOOPBACK, listening
