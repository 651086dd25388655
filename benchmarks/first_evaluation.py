"""Time to the first completed evaluation of a search on a plug-in without reference data (issue 18 item 8).

Runs `search run` on benchmarks/plugins/digits_plugin.py with the given metric and reports the seconds
from the start until the study holds its first completed trial (the teacher's cost dominates).

    python benchmarks/first_evaluation.py --metric teacher_error --samples 256
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = Path(__file__).parent / "plugins" / "digits_plugin.py"


def first_completed(storage: str) -> bool:
    import optuna

    try:
        study = optuna.load_study(study_name="first", storage=storage)
    except Exception:
        return False
    return any(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--metric", default="teacher_error")
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--limit", type=float, default=3600.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    storage = f"sqlite:///{folder / 'first.db'}"
    command = [sys.executable, "-m", "diffsearch.cli", "run", "--model", f"{PLUGIN}:make", "--budget", "10nfe", "--strategy", "random",
               "--evals", "2", "--samples", str(args.samples), "--final-samples", str(args.samples), "--metric", args.metric,
               "--study", "first", "--storage", storage, "--out", str(folder / "best.json"), "--no-progress"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**__import__("os").environ, "DIFFSEARCH_CACHE": str(folder / "cache")})
    while time.perf_counter() - started < args.limit and process.poll() is None and not first_completed(storage):
        time.sleep(2.0)
    seconds = time.perf_counter() - started
    process.kill()
    print(f"first completed evaluation after {seconds:.0f} s ({args.metric}, {args.samples} samples, empty cache)")


if __name__ == "__main__":
    main()
