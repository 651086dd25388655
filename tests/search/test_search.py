"""The search engine: budgets, seeds, resume after SIGKILL, failed candidates, configs and errors."""

from __future__ import annotations

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
from diffsearch.search.config import load_config
from diffsearch.search.runner import run_search
from diffsearch.search.strategies import STRATEGIES
from diffsearch.spaces import candidate_fingerprint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def config(tmp_path, **overrides):
    base = {"model": "gmm", "budget": "4nfe", "strategy": "evolution", "evals": 24, "search_samples": 200,
            "final_samples": 400, "final_top": 2, "study": "test", "storage": f"sqlite:///{tmp_path}/s.db",
            "out": str(tmp_path / "best.json"), "progress": False, "predictor": "xgboost"}
    return {**base, **overrides}


def trials(tmp_path, study="test"):
    return optuna.load_study(study_name=study, storage=f"sqlite:///{tmp_path}/s.db").get_trials()


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_respects_the_budget_and_exports(tmp_path, strategy):
    result = run_search(config(tmp_path, strategy=strategy, space="timesteps", solver="dpmpp_2m", evals=12))
    assert result.schedule.nfe == 4 and result.path.is_file()
    complete = [t for t in trials(tmp_path) if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert len(complete) == 12
    metrics, provenance = result.schedule.metrics, result.schedule.provenance
    assert metrics["heldout"]["samples"] == 400 and metrics["baseline"]["schedule"].startswith("preset:")
    assert 1 <= metrics["baseline"]["presets_evaluated"] <= metrics["baseline"]["presets_in_space"]
    assert provenance["search_cost"]["evaluations"]["expensive"] == 12
    assert diffsearch.load_schedule(result.path) == result.schedule


def test_same_seed_same_search(tmp_path):
    first = run_search(config(tmp_path / "a", strategy="s3", evals=52))
    second = run_search(config(tmp_path / "b", strategy="s3", evals=52))
    fingerprints = [[t.user_attrs["fingerprint"] for t in trials(tmp_path / d)] for d in ("a", "b")]
    assert fingerprints[0] == fingerprints[1]
    assert first.schedule.timesteps == second.schedule.timesteps


def test_solver_schedule_search_candidates_honour_the_nfe(tmp_path):
    run_search(config(tmp_path, strategy="s3", space="solver_schedule", evals=52))
    origins = {trial.user_attrs["tags"]["origin"] for trial in trials(tmp_path)}
    assert origins == {"initial", "s3"}
    for trial in trials(tmp_path):
        schedule = diffsearch.Schedule(noise_schedule=None, **trial.user_attrs["candidate"])
        assert schedule.nfe == 4


def test_rerun_resumes_without_recomputing(tmp_path):
    run_search(config(tmp_path, evals=22))
    before = {t.number: (t.value, t.datetime_complete) for t in trials(tmp_path)}
    run_search(config(tmp_path, evals=30))
    after = trials(tmp_path)
    assert all((t.value, t.datetime_complete) == before[t.number] for t in after if t.number in before)
    complete = [t for t in after if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert len(complete) == 30
    assert len({t.user_attrs["fingerprint"] for t in complete}) == 30


@pytest.mark.slow
def test_killed_search_resumes_with_nothing_lost_or_recomputed(tmp_path):
    command = [sys.executable, "-m", "diffsearch.cli", "run", "--model", "gmm", "--budget", "5nfe", "--strategy", "evolution",
               "--evals", "60", "--samples", "3000", "--final-samples", "500", "--study", "killed",
               "--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(tmp_path / "best.json"), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            done = [t for t in trials(tmp_path, "killed") if t.state.name == "COMPLETE"]
        except Exception:
            continue
        if len(done) >= 25:
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = {t.number: t.value for t in trials(tmp_path, "killed") if t.state.name == "COMPLETE"}
    assert 25 <= len(before) < 60
    subprocess.run(command, check=True, capture_output=True)
    after = trials(tmp_path, "killed")
    assert all(t.value == before[t.number] for t in after if t.number in before)
    complete = [t for t in after if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert len(complete) == 60 and len({t.user_attrs["fingerprint"] for t in complete}) == 60
    assert (tmp_path / "best.json").is_file()


def test_failing_candidates_are_failed_trials_and_the_search_goes_on(tmp_path, flaky_plugin):
    plugin = flaky_plugin
    result = run_search(config(tmp_path, model=f"{plugin}:make", strategy="random", space="timesteps", evals=15))
    failed = [t for t in trials(tmp_path) if t.state.name == "FAIL"]
    assert failed and all(t.user_attrs.get("error") for t in failed)
    assert any("exploded" in t.user_attrs["error"] for t in failed) or any("non-finite" in t.user_attrs["error"] for t in failed)
    assert result.schedule.nfe == 4


def test_resuming_with_a_different_config_is_refused(tmp_path):
    run_search(config(tmp_path, evals=21))
    with pytest.raises(DiffsearchError, match="different config \\(budget differ"):
        run_search(config(tmp_path, evals=21, budget="5nfe"))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"strategy": "annealing"}, "unknown strategy 'annealing'; valid strategies: evolution, gp, nsga2, random, s3, tpe"),
        ({"space": "pruning"}, "unknown space 'pruning'; valid spaces: architecture, bitwidth, bitwidth_per_step, solver_schedule, "
                               "solver_schedule\\+architecture, solver_schedule\\+bitwidth, solver_schedule\\+supernet, supernet, supernet_per_step, "
                               "timesteps, timesteps\\+architecture"),
        ({"metric": "fid_inf"}, "unknown metric 'fid_inf'"),
        ({"budget": "4xyz"}, "is not a budget"),
        ({"budget": "60%macs"}, "space solver_schedule accepts only nfe budgets, e.g. 10nfe"),
    ],
)
def test_bad_names_give_one_clear_error(tmp_path, overrides, message):
    with pytest.raises(DiffsearchError, match=message.replace("(", "\\(").replace(")", "\\)")):
        run_search(config(tmp_path, **overrides))


def test_config_files_validate_and_unknown_keys_are_rejected(tmp_path):
    for path in CONFIGS.glob("*.yaml"):
        load_config(str(path), {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: solver_schedule\nbudjet: 10nfe\n")
    with pytest.raises(DiffsearchError, match="config budjet: Extra inputs are not permitted"):
        load_config(str(bad), {})
    with pytest.raises(DiffsearchError, match="config time:"):
        load_config(None, {"time": "ten minutes"})


def test_cli_run_flags_override_the_config_file(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "diffsearch.cli", "run", "--config", str(CONFIGS / "timesteps_10nfe.yaml"), "--model", "gmm",
         "--budget", "3nfe", "--evals", "8", "--samples", "100", "--final-samples", "100", "--study", "cli",
         "--storage", f"sqlite:///{tmp_path}/s.db", "--out", str(tmp_path / "b.json"), "--no-progress"],
        capture_output=True, text=True,
    )
    assert process.returncode == 0, process.stderr
    assert diffsearch.load_schedule(tmp_path / "b.json").nfe == 3
    shown = subprocess.run([sys.executable, "-m", "diffsearch.cli", "show", "--study", "cli", "--storage", f"sqlite:///{tmp_path}/s.db",
                            "--plots", str(tmp_path), "--json"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "best_so_far.png").is_file()


def test_journal_storage_is_shared_by_two_drivers_and_resumes(tmp_path):
    """``journal:///file``: two concurrent drivers append to one file-locked journal; a rerun resumes."""
    url = f"journal:///{tmp_path}/studies.log"
    commands = [[sys.executable, "-m", "diffsearch.cli", "run", "--model", "gmm", "--budget", "4nfe", "--strategy", "random",
                 "--evals", "6", "--samples", "200", "--final-samples", "400", "--study", name, "--storage", url,
                 "--out", str(tmp_path / f"{name}.json"), "--no-progress"] for name in ("a", "b")]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for command in commands]
    outputs = [process.communicate(timeout=240)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    from diffsearch.search.storage import load_existing

    before = {t.number: t.datetime_complete for t in load_existing("a", url).trials}
    result = run_search(config(tmp_path, strategy="random", evals=8, study="a", storage=url, predictor="ensemble"))
    after = load_existing("a", url).trials
    assert all(t.datetime_complete == before[t.number] for t in after if t.number in before)
    assert result.schedule.provenance["search_cost"]["evaluations"]["expensive"] == 8
    assert len(load_existing("b", url).trials) >= 6
