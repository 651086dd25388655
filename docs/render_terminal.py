"""Render what a finished search shows on an 80-column terminal as SVG, with rich's own export.

    python docs/render_terminal.py STUDY --log LOG --out docs/terminal_80.svg

STUDY is a finished study in runs/ made by RUN (the command in docs/reading_results.md); LOG is
the stderr of that `search run`. The bar frame is drawn with the search's own columns
(``diffsearch.search.progress.bar_columns``) from the study's final counts; the log lines are the
real ones, and the tables are the real output of rerunning RUN (it resumes: nothing is evaluated
again) and of `search show`, both on a forced 80-column terminal.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

WIDTH = 80


def bar_frame(study_name: str, console) -> None:
    """The search bar as it stood at the end of the search (30/30, best value, elapsed)."""
    from rich.progress import Progress

    from diffsearch.search import storage
    from diffsearch.search.progress import best_text, bar_columns
    from diffsearch.search.report import metric_of

    study = storage.load_existing(study_name, None)
    counts = storage.count_evaluations(study)
    times = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    elapsed = (max(t.datetime_complete for t in times) - min(t.datetime_start for t in times)).total_seconds()
    progress = Progress(*bar_columns(WIDTH), console=console)
    task = progress.add_task(f"search {study_name}", total=counts["expensive"], completed=counts["expensive"],
                             best=best_text(metric_of(study), study.best_value), detail="")
    progress._tasks[task].start_time, progress._tasks[task].finished_time = 0.0, elapsed  # a finished task shows its elapsed time
    console.print(progress.make_tasks_table(progress.tasks))


RUN = ["run", "--budget", "5nfe", "--evals", "30", "--samples", "500", "--final-samples", "1000", "--metric", "fd_teacher"]


def terminal_output(args: list[str]) -> str:
    """stdout of ``search ARGS`` on a forced 80-column terminal (ANSI colours kept)."""
    env = {**os.environ, "COLUMNS": str(WIDTH), "FORCE_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "diffsearch.cli", *args], capture_output=True, text=True, check=True, env=env).stdout.rstrip()


def main() -> None:
    from rich.console import Console
    from rich.text import Text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study")
    parser.add_argument("--log", required=True)
    parser.add_argument("--out", default="docs/terminal_80.svg")
    args = parser.parse_args()
    console = Console(record=True, width=WIDTH, file=open(os.devnull, "w"), force_terminal=True)
    console.print(Text("$ search " + " ".join(RUN), style="bold"))
    bar_frame(args.study, console)
    console.print(Text("(stderr on a terminal: the bar above; redirected: these lines)", style="dim"))
    for line in Path(args.log).read_text().splitlines():
        if not line.endswith(" s wall"):
            console.print(Text(line), overflow="fold")
    console.print(Text.from_ansi(terminal_output(RUN)))
    console.print(Text(f"\n$ search show --study {args.study} --top 5", style="bold"))
    console.print(Text.from_ansi(terminal_output(["show", "--study", args.study, "--top", "5"])))
    console.save_svg(args.out, title="search at 80 columns", clear=False)
    Path(args.out).with_suffix(".txt").write_text(console.export_text())
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
