"""The `search` command line: tables, JSON, one-line errors, fast --help."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from diffsearch.cli import app

runner = CliRunner()
CUDA = torch.cuda.is_available()


def run(*args: str):
    return runner.invoke(app, list(args))


def test_eval_json_on_gmm():
    result = run("eval", "--model", "gmm", "--schedule", "preset:dpmpp_2m", "--budget", "5nfe", "--samples", "200", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["nfe"] == 5 and row["status"] == "ok" and row["samples"] == 200
    assert row["frechet_exact"] > 0 and row["fd_teacher"] > 0 and row["wall_time_s"] > 0
    assert row["noise"]["frechet_exact"]["samples"] == row["samples"] and row["noise"]["fd_teacher"]["std"] > 0


def test_baselines_lists_every_preset_on_every_spacing_best_first():
    from diffsearch.solvers.presets import PRESETS
    from diffsearch.spaces.solver_schedule import INITIAL_SPACINGS

    result = run("baselines", "--model", "gmm", "--budget", "4nfe", "--samples", "100", "--metric", "frechet_exact", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 40 and sorted(row["schedule"] for row in rows) == sorted(f"preset:{name}@{spacing}" for name in PRESETS for spacing in INITIAL_SPACINGS)
    ok = [row["frechet_exact"] for row in rows if row["status"] == "ok"]
    assert ok == sorted(ok)


def test_models_lists_gmm_and_plugin_forms():
    result = run("models")
    assert result.exit_code == 0 and "gmm" in result.stdout and "file.py:factory" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "--schedule", "preset:nope", "--budget", "5nfe"], "unknown preset 'nope'; valid presets: ddim"),
        (["eval", "--schedule", "preset:ddim", "--budget", "5xyz"], "is not a budget"),
        (["eval", "--schedule", "preset:ddim", "--budget", "60%macs"], "a solver schedule accepts only nfe budgets, e.g. 10nfe"),
        (["eval", "--model", "nomodel", "--schedule", "preset:ddim", "--budget", "5nfe"], "unknown model 'nomodel'; valid models:"),
        (["eval", "--schedule", "preset:ddim", "--budget", "5nfe", "--spacing", "nope"], "unknown spacing 'nope'"),
        (["eval", "--schedule", "preset:ddim", "--budget", "5nfe", "--metric", "nope"], "unknown metric 'nope'"),
        (["eval", "--schedule", "preset:ddim", "--budget", "5nfe", "--device", "gpu"], "device 'gpu' is not one of auto, cpu, cuda"),
        pytest.param(["eval", "--model", "gmm", "--schedule", "preset:ddim", "--budget", "5nfe", "--device", "cuda"],
                     "CUDA is not available", marks=pytest.mark.skipif(CUDA, reason="this machine has CUDA")),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, message):
    process = subprocess.run([sys.executable, "-m", "diffsearch.cli", *args], capture_output=True, text=True)
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], process.stderr


def test_help_is_fast_and_imports_no_torch():
    code = "import sys, time; t = time.perf_counter(); import diffsearch.cli; print(time.perf_counter() - t, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diffsearch.cli", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 3.0  # interpreter start included; --help itself is ~0.2 s


def test_sample_writes_a_labelled_grid(tmp_path):
    out = tmp_path / "grid.png"
    result = run("sample", "--model", "digits", "--schedule", "preset:dpmpp_2m", "--budget", "4nfe", "--per-row", "2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_refuses_non_image_models(tmp_path):
    process = subprocess.run([sys.executable, "-m", "diffsearch.cli", "sample", "--model", "gmm", "--schedule", "preset:ddim",
                              "--budget", "3nfe", "--out", str(tmp_path / "g.png")], capture_output=True, text=True)
    assert process.returncode == 2 and "draws image grids" in process.stderr


def test_eval_reports_costs_on_digits():
    # fid only: the default metrics add fd_teacher, whose 4000-sample teacher reference costs about a minute here
    result = run("eval", "--model", "digits", "--schedule", "preset:unipc_bh2", "--budget", "3nfe", "--samples", "100", "--metric", "fid",
                 "--json", "--no-cache")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)
    assert row["fid"] > 0 and row["macs_per_sample"] > 0 and row["params"] == 424417
