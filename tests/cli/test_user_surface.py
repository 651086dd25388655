"""What a newcomer sees: progress on stderr, results that say what they mean, strict input, one-line errors."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from diffsearch.budget import MAX_NFE, parse_budget
from diffsearch.cli import app, main
from diffsearch.errors import DiffsearchError
from diffsearch.search.progress import SearchProgress, bar_columns, best_text, log_lines
from diffsearch.search.summary import verdict

runner = CliRunner()
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ")


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny s3 search on gmm run by the real CLI with stdout and stderr captured separately (not a terminal)."""
    folder = tmp_path_factory.mktemp("run")
    storage = f"sqlite:///{folder}/s.db"
    process = subprocess.run(
        [sys.executable, "-m", "diffsearch.cli", "run", "--model", "gmm", "--budget", "3nfe", "--evals", "9",
         "--samples", "200", "--final-samples", "300", "--study", "tiny", "--storage", storage, "--out", str(folder / "best.json")],
        capture_output=True, text=True, cwd=folder,
    )
    assert process.returncode == 0, process.stderr
    return {"folder": folder, "storage": storage, "stdout": process.stdout, "stderr": process.stderr}


def test_progress_and_phases_go_to_stderr_as_timestamped_lines(finished):
    stdout, lines = finished["stdout"], finished["stderr"].splitlines()
    assert "wrote " in stdout and "held-out frechet_exact" in stdout and "search 9/9" not in stdout
    assert lines and all(STAMP.match(line) for line in lines), lines
    text = "\n".join(lines)
    for phase in (r"s3 stage 0: proxy of 40 presets", r"search 9/9 best frechet_exact", r"final stage: (\d) finalists on \d held-out noise sets of 300 samples", r"noise floor of frechet_exact",
                  r"final stage: (\d)/\1 ", r"exported "):
        assert re.search(phase, text), phase


def test_summary_says_what_was_exported_against_what(finished):
    last = finished["stdout"].strip().splitlines()[-2]
    provenance = json.loads((finished["folder"] / "best.json").read_text())["provenance"]
    if str(provenance["label"]).startswith("preset:"):
        assert last.startswith(f"no candidate beat the presets; exporting preset {provenance['label']} (frechet_exact "), last
    else:
        assert last.startswith("searched - preset: ") and ("a tie" in last or "beyond twice the seed std" in last), last


def test_eval_defaults_to_the_artifacts_own_held_out_sample_count(finished):
    result = runner.invoke(app, ["eval", "--model", "gmm", "--schedule", str(finished["folder"] / "best.json"), "--json", "--no-cache",
                                 "--metric", "frechet_exact"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["samples"] == 300


def test_show_has_a_candidate_table_with_origins_and_a_stage_table(finished):
    result = runner.invoke(app, ["show", "--study", "tiny", "--storage", finished["storage"], "--plots", str(finished["folder"]), "--json"])
    assert result.exit_code == 0, result.output
    tables = json.loads(result.stdout)
    origins = {row["origin"] for row in tables["candidates"]}
    assert origins <= {"mutation", "crossover"} | {o for o in origins if o.startswith("preset:")} and origins
    assert {"value", "held_out", "trial"} <= set(tables["candidates"][0]) and "stage" not in tables["candidates"][0]
    assert [row["stage"] for row in tables["stages"]][:2] == [0, 1] and "origin" not in tables["stages"][0]
    assert any(isinstance(row["held_out"], float) for row in tables["candidates"])
    assert (finished["folder"] / "best_so_far.png").stat().st_size > 10_000


def test_the_bar_keeps_count_best_and_eta_at_80_columns():
    from rich.console import Console
    from rich.progress import Progress

    name = "solver_schedule-10nfe-digits-s3-seed0"
    for width, named, detail in ((80, False, False), (120, False, True), (200, True, True), (130, False, True)):
        console = Console(width=width, record=True, file=io.StringIO())
        progress = Progress(*bar_columns(width, name if width != 130 else name * 3), console=console)
        progress.add_task(name, total=120, completed=12, best=best_text("fid", 0.12834), detail="predicted 3975 failed 0 dup 2")
        console.print(progress.make_tasks_table(progress.tasks))
        text = console.export_text()
        assert "12/120" in text and "best fid 0.1283" in text and "eta -:--:--" in text and "…" not in text, text
        assert max(map(len, text.splitlines())) <= width
        assert (name in text) == named and ("predicted 3975 failed 0 dup 2" in text) == detail
    assert best_text("fid", float("nan")) == "best fid -" and best_text("fid", None) == "best fid -"


def test_without_a_terminal_one_line_per_n_evaluations():
    from rich.console import Console

    stream = io.StringIO()
    with log_lines(console=Console(file=stream, force_terminal=False)):
        with SearchProgress("study", 25, "fid", every=10) as progress:
            for completed in range(26):
                progress.update(completed, None if completed == 0 else 1.0 / completed)
    lines = stream.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines)
    assert [line.split()[2] for line in lines[1:]] == ["10/25", "20/25", "25/25"]
    assert "best fid 0.04 " in lines[-1] and "eta 0:00:00" in lines[-1]


def test_on_a_terminal_the_bar_and_the_phase_lines_share_stderr():
    import logging

    from rich.console import Console

    stream = io.StringIO()
    with log_lines(console=Console(file=stream, force_terminal=True, width=80)):
        with SearchProgress("study", 120, "fid") as progress:
            progress.update(12, 0.12834)
            logging.getLogger("diffsearch.search.runner").info("final stage: 4 finalists on 5000 held-out samples")
    text = stream.getvalue()
    assert "12/120" in text and "best fid 0.1283" in text and "final stage: 4 finalists" in text and not STAMP.search(text)
    assert logging.getLogger("diffsearch").propagate  # restored afterwards


@pytest.mark.parametrize("text", ["10 nfe", " 10nfe", "10NFE", "10nfe ", "0nfe", "2.5nfe", f"{MAX_NFE + 1}nfe", "1000000nfe", "nfe10"])
def test_budgets_are_parsed_strictly_and_nfe_is_bounded(text):
    with pytest.raises(DiffsearchError):
        parse_budget(text)


def test_the_budget_hint_lists_only_the_units_the_space_accepts():
    assert parse_budget(f"{MAX_NFE}nfe").value == MAX_NFE and str(parse_budget("4.5bits")) == "4.5bits"
    with pytest.raises(DiffsearchError, match=r"^--budget '10 nfe' is not a budget; use e.g. 10nfe \(") as error:
        parse_budget("10 nfe", ("nfe",))
    assert "macs" not in str(error.value) and "bits" not in str(error.value)


def _one_line_error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and captured.out == "", captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_run_refuses_a_spaced_budget_before_creating_a_study(capsys, tmp_path):
    line = _one_line_error(capsys, "run", "--budget", "10 nfe", "--storage", f"sqlite:///{tmp_path}/s.db")
    assert "is not a budget" in line and not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--evals", "0"], "--evals 0: a search needs at least 1 expensive evaluation"),
    (["eval", "--schedule", "preset:ddim", "--budget", "5nfe", "--samples", "1"], "Invalid value for '--samples'"),
    (["eval", "--schedule", "preset:ddim"], "--schedule preset:ddim needs --budget (the NFE to build it at), e.g. --budget 10nfe"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_bad_flag_values_are_one_line_errors(capsys, args, expected):
    assert expected in _one_line_error(capsys, *args)


@pytest.mark.parametrize("url", ["sqlit:/x.db", "notaurl", "mysql://user@host/db"])
@pytest.mark.parametrize("command", [["show", "--study", "s"], ["export", "--study", "s"], ["run", "--evals", "1"]])
def test_every_command_with_a_bad_storage_url_gives_one_line(capsys, command, url):
    line = _one_line_error(capsys, *command, "--storage", url)
    assert line.startswith(f"error: --storage {url}: ") and "sqlite:///path.db" in line


def test_the_driver_sqlalchemy_picks_for_postgresql_urls_is_installed():
    from diffsearch.search.storage import check_storage_url

    check_storage_url("postgresql://user@localhost:5432/db")  # psycopg v3 (SQLAlchemy 2.1's default)
    check_storage_url("postgresql+psycopg2://user@localhost:5432/db")


def test_models_spaces_and_help_read_as_plain_text():
    models, spaces = runner.invoke(app, ["models", "--json"]), runner.invoke(app, ["spaces", "--json"])
    assert "`" not in models.stdout
    s3 = next(row for row in json.loads(spaces.stdout) if row["name"] == "s3")
    assert s3["description"].endswith("are evaluated.")
    assert {row["name"]: row["budget"] for row in json.loads(spaces.stdout) if row["kind"] == "space"} == {
        "solver_schedule": "nfe", "timesteps": "nfe", "architecture": "%macs", "timesteps+architecture": "%macs",
        "solver_schedule+architecture": "%macs", "bitwidth": "bits, MB, kB", "bitwidth_per_step": "bits, MB, kB",
        "solver_schedule+bitwidth": "bits, MB, kB", "supernet": "%macs", "supernet_per_step": "%macs", "solver_schedule+supernet": "%macs"}
    assert "<bool>" not in runner.invoke(app, ["eval", "--help"]).stdout


PRESET_ROW = {"objective": "fid", "search_samples": 1000,
              "heldout": {"fid": 0.1283, "samples": 5000, "nfe": 10},
              "baseline": {"schedule": "preset:dpmpp_2m@karras", "heldout": {"fid": 0.1375, "samples": 5000}}}


def test_verdict_says_plainly_when_a_preset_is_exported_and_when_a_margin_is_a_tie():
    preset = verdict(PRESET_ROW, {"label": "preset:unipc_bh2@logsnr"})
    assert preset.startswith("no candidate beat the presets; exporting preset preset:unipc_bh2@logsnr (fid 0.1283, 5000 held-out samples)")
    searched = verdict(PRESET_ROW, {"label": None})
    assert searched.startswith("searched schedule fid 0.1283 vs best preset preset:dpmpp_2m@karras 0.1375") and "floor" not in searched
    tie = verdict({**PRESET_ROW, "noise": {"std": 0.006, "floor": 0.012, "samples": 5000}}, {"label": None})
    assert "inside the noise floor 0.012 (seed std 0.006 over 5000 samples): a tie" in tie
    clear = verdict({**PRESET_ROW, "noise": {"std": 0.002, "floor": 0.004, "samples": 5000}}, {"label": None})
    assert "outside the noise floor 0.004" in clear and "tie" not in clear


def test_provenance_records_what_ran_after_a_resume_with_another_config(tmp_path):
    from diffsearch.search.runner import run_search

    base = {"model": "gmm", "budget": "3nfe", "strategy": "random", "evals": 4, "search_samples": 100, "final_samples": 100,
            "study": "resumed", "storage": f"sqlite:///{tmp_path}/s.db", "out": str(tmp_path / "best.json"), "progress": False}
    first = run_search({**base, "device": "cpu"})
    resumed = run_search({**base, "executor": "ray", "workers": 4, "gpus_per_worker": 1})  # nothing left to evaluate
    for result in (first, resumed):
        provenance = result.schedule.provenance
        assert provenance["executions"] == [{"executor": "inline", "workers": 1, "gpus_per_worker": 0.0, "ray_address": None,
                                             "device": "cpu", "evaluations": 4}]
        assert provenance["final_device"] == "cpu" and "executor" not in provenance["config"] and "workers" not in provenance["config"]
    more = run_search({**base, "evals": 6})
    assert [e["evaluations"] for e in more.schedule.provenance["executions"]] == [4, 2]
