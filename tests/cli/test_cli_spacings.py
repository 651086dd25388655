"""`--spacing gits|dmn|ld3|ays` on the command line."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from diffsearch.cli import app

runner = CliRunner()


def test_eval_and_baselines_take_optimised_spacings(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFSEARCH_CACHE", str(tmp_path))
    result = runner.invoke(app, ["eval", "--model", "gmm", "--schedule", "preset:unipc_bh2", "--budget", "4nfe",
                                 "--spacing", "gits", "--samples", "200", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["nfe"] == 4
    result = runner.invoke(app, ["baselines", "--model", "gmm", "--budget", "3nfe", "--spacing", "dmn", "--samples", "100", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert all(row["spacing_seconds"] >= 0 for row in rows) and len(list((tmp_path / "anchors").glob("dmn-*.json"))) == len(rows)


def test_ays_on_an_unsupported_noise_schedule_is_one_line_exit_2():
    args = ["eval", "--model", "gmm", "--schedule", "preset:dpmpp_2m", "--budget", "10nfe", "--spacing", "ays"]
    process = subprocess.run([sys.executable, "-m", "diffsearch.cli", *args], capture_output=True, text=True)
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "published for: stable_diffusion" in lines[0], process.stderr
