"""Faults injected into tiny gmm searches, and what each cost: survived?, evaluations lost, recomputed.

Each kill -9 scenario runs the default s3 search (4 NFE, 200 search / 400 held-out samples, 10
expensive evaluations, 40 mutants a stage, seed 0), SIGKILLs it at one network call of a phase,
resumes it, and compares with an uninterrupted run: same artifact (candidate and held-out values)
and same evaluated candidates. Work is counted in network calls logged by the plug-in model
(4 calls = one 4-NFE evaluation of any sample count); "recomputed" is the killed plus resumed
runs' calls minus the uninterrupted run's, in evaluations. The crash / hang / NaN scenarios run
the timesteps space (4 presets) with a plug-in that misbehaves on one candidate.

The deadline scenario hangs the third preset under ``--time 3s`` (twice), then resumes without the fault
and compares with an uninterrupted run. ``--only final_stage deadline`` runs only the named scenarios.

    python benchmarks/faults.py      # about 10 minutes on 2 busy cores
"""

from __future__ import annotations

import json
import sqlite3
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.reliability.conftest import PLUGIN, essence, evaluated, search, tiny_search  # noqa: E402
from tests.reliability.test_resume import PHASES  # noqa: E402

FAULTY = ["--model", f"{PLUGIN}:make", "--space", "timesteps", "--solver", "dpmpp_2m", "--budget", "4nfe",
          "--samples", "200", "--final-samples", "400", "--no-progress", "--strategy", "random", "--evals", "6"]


def calls(log: Path, rows: str | None = None) -> int:
    """Network calls in a call log (of batches of ``rows`` rows only, if given)."""
    logged = log.read_text().split() if log.exists() else []
    return len(logged) if rows is None else logged.count(rows)


def kill_scenario(folder: Path, phase: str, reference: dict, reference_calls: int) -> dict:
    """Kill at ``phase``, resume, compare with the uninterrupted run (own folder and caches)."""
    folder = folder / phase
    folder.mkdir()
    log = folder / f"{phase}.log"
    env = {"DIFFSEARCH_CALL_LOG": str(log)}
    first = tiny_search(folder, phase, "--evals", "10", env={**env, "DIFFSEARCH_KILL": PHASES[phase]})
    second = tiny_search(folder, phase, "--evals", "10", env=env)
    same = second.returncode == 0 and {**essence(folder / "runs" / phase / "best.json"),
                                       "evaluated": evaluated(folder / "runs" / f"{phase}.db")} == reference
    connection = sqlite3.connect(folder / "runs" / f"{phase}.db")
    lost = connection.execute("SELECT count(*) FROM trial_user_attributes WHERE key = 'interrupted'").fetchone()[0]
    return {"fault": f"kill -9 during {phase.replace('_', ' ')}", "killed": first.returncode == -9, "survived": same,
            "trials interrupted": lost, "recomputed evaluations": (calls(log) - reference_calls) / 4,
            "held-out": calls(log, "400") / 4}


def model_fault(folder: Path, fault: str, extra: list[str], runs: int) -> dict:
    """Run the misbehaving plug-in until the study completes (at most ``runs`` times)."""
    folder = folder / fault
    folder.mkdir()
    codes = []
    for _ in range(runs):
        codes.append(search(folder, "run", *FAULTY, *extra, "--study", fault, env={"DIFFSEARCH_FAULT": fault}).returncode)
        if codes[-1] == 0:
            break
    connection = sqlite3.connect(folder / "runs" / f"{fault}.db")
    errors = [json.loads(v) for (v,) in connection.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'error'")]
    return {"fault": f"plug-in {fault}s on one candidate", "killed": codes[:-1] != [], "survived": codes[-1] == 0,
            "trials interrupted": sum("interrupted" in e for e in errors), "recomputed evaluations": 0,
            "runs": len(codes), "failed trial": next((e for e in errors if "interrupted" not in e), None)}


def deadline_scenario(folder: Path, reference_folder: Path) -> dict:
    """``--time 3s`` stops the hung third preset twice (interrupted, not an attempt); the resumed run equals an uninterrupted one."""
    import time

    folder = folder / "deadline"
    folder.mkdir()
    arguments, env = ["run", *FAULTY, "--study", "deadline"], {"DIFFSEARCH_POISON": "quadratic"}
    assert search(reference_folder, *arguments, env=env).returncode == 0
    walls = []
    for _ in range(2):
        started = time.monotonic()
        assert search(folder, *arguments, "--time", "3s", env={**env, "DIFFSEARCH_FAULT": "hang"}).returncode == 0
        walls.append(time.monotonic() - started)
    resumed = search(folder, *arguments, env=env).returncode == 0

    def outcome(where: Path) -> dict:
        return {**essence(where / "runs" / "deadline" / "best.json"), "evaluated": evaluated(where / "runs" / "deadline.db")}

    connection = sqlite3.connect(folder / "runs" / "deadline.db")
    stopped = connection.execute("SELECT t.datetime_start, t.datetime_complete FROM trials t JOIN trial_user_attributes a "
                                 "ON a.trial_id = t.trial_id WHERE a.key = 'deadline'").fetchall()
    errors = [json.loads(v) for (v,) in connection.execute("SELECT value_json FROM trial_user_attributes WHERE key = 'error'")]
    return {"fault": f"plug-in hangs on one candidate, `--time 3s` (twice; runs took {', '.join(f'{w:.0f}' for w in walls)} s with "
                     f"start-up and final stage, the hung evaluation stopped after {_seconds(stopped)} s)",
            "killed": False, "survived": resumed and outcome(folder) == outcome(reference_folder), "trials interrupted": len(stopped),
            "recomputed evaluations": 0, "runs": 3, "failed trial": next((e for e in errors if "re-queued" not in e), None)}


def _seconds(rows) -> str:
    from datetime import datetime

    return ", ".join(f"{(datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds():.1f}" for start, end in rows)


def main() -> None:
    only = sys.argv[sys.argv.index("--only") + 1 :] if "--only" in sys.argv else None
    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    (folder / "reference").mkdir()
    log = folder / "reference" / "reference.log"
    assert tiny_search(folder / "reference", "reference", "--evals", "10", env={"DIFFSEARCH_CALL_LOG": str(log)}).returncode == 0
    reference = {**essence(folder / "reference" / "runs" / "reference" / "best.json"),
                 "evaluated": evaluated(folder / "reference" / "runs" / "reference.db")}
    rows = [kill_scenario(folder, phase, reference, calls(log)) for phase in PHASES if only is None or phase in only]
    if only is None:
        rows += [model_fault(folder, "crash", [], 4), model_fault(folder, "hang", ["--eval-timeout", "3s"], 1),
                 model_fault(folder, "nan", [], 1)]
    if only is None or "deadline" in only:
        rows.append(deadline_scenario(folder, folder / "reference"))
    print(f"uninterrupted run: {calls(log)} network calls ({calls(log) / 4:.0f} evaluations of 4 NFE; "
          f"{calls(log, '400') / 4:.0f} held-out evaluations)")
    for row in rows:
        if "held-out" in row:
            print(f"{row['fault']}: held-out evaluations in the killed + resumed runs {row['held-out']:g}")
    print("| fault | survived (same artifact / study completed) | trials interrupted (evaluations lost) | recomputed evaluations | runs |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['fault']} | {'yes' if row['survived'] else 'NO'} | {row['trials interrupted']} | {row['recomputed evaluations']:g} | "
              f"{row.get('runs', 2)}{'; ' + row['failed trial'] if row.get('failed trial') else ''} |")


if __name__ == "__main__":
    main()
