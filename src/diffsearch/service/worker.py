"""``python -m diffsearch.service.worker --storage URL --study NAME``: run one queued job through ``run_search``."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from diffsearch.search import storage
from diffsearch.search.config import RunConfig
from diffsearch.service.jobs import read_job, update_job


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)  # unwinds the search loop (its executor closes); the server records the cancel


def run_job(storage_url: str, name: str) -> int:
    """Mark the job started, run the search (resuming the study), record finished or failed."""
    import torch

    from diffsearch.search.runner import export_study, run_search

    torch.set_num_threads(int(os.environ.get("DIFFSEARCH_THREADS", "1")))
    shared = storage.shared_storage(storage_url)
    study = storage.load_from(shared, name)
    job = read_job(study)
    if job is None:
        print(f"error: study {name!r} has no service job", file=sys.stderr)
        return 2
    update_job(study, started=time.time(), finished=None, error=None,
               evaluations_at_start=storage.count_evaluations(study)["expensive"])
    try:
        config = RunConfig.model_validate(job.config)
        Path(config.out).parent.mkdir(parents=True, exist_ok=True)  # the server owns runs/<study>/; run_search checks --out first
        result = run_search(config)
        export_study(name, storage_url, result.path, model=config.model)  # exactly what `search export --model M` writes
    except Exception as error:
        update_job(study, status="failed", finished=time.time(), error=f"{type(error).__name__}: {error}")
        print(f"error: {error}", file=sys.stderr)
        return 1
    if read_job(study).status == "running":
        update_job(study, status="finished", finished=time.time(), artifact=str(result.path.resolve()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--storage", required=True)
    parser.add_argument("--study", required=True)
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    return run_job(arguments.storage, arguments.study)


if __name__ == "__main__":
    sys.exit(main())
