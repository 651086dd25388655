"""The job queue's loop: re-queue jobs whose worker died, start queued jobs up to ``workers`` at once."""

from __future__ import annotations

import threading
import time
from typing import Any

from diffsearch.search import storage
from diffsearch.service.jobs import MAX_ATTEMPTS, read_job, update_job


class Dispatcher:
    """A background thread over the jobs in the storage (the database is the queue; nothing is kept in memory)."""

    def __init__(self, shared, launcher, workers: int, interval: float = 0.5) -> None:
        self.shared, self.launcher, self.workers, self.interval = shared, launcher, workers, interval
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="diffsearch-dispatcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.step()
            except Exception as error:  # a locked database or a flaky cluster: try again next tick
                print(f"dispatcher: {type(error).__name__}: {error}", flush=True)

    def step(self) -> None:
        """One pass: reap dead workers (re-queue, or fail after MAX_ATTEMPTS), then launch queued jobs oldest first."""
        with self.lock:
            jobs = self._jobs()
            running = [(study, job) for study, job in jobs if job.status == "running"]
            for study, job in running:
                if not self.launcher.alive(job.worker or {}):
                    self._reap(study)
            active = sum(1 for study, _ in running if read_job(study).status == "running")
            queued = sorted(((s, j) for s, j in jobs if j.status == "queued"), key=lambda item: item[1].submitted)
            for study, job in queued[: max(self.workers - active, 0)]:
                handle = self.launcher.start(study.study_name)  # the worker first writes its record seconds later (imports)
                update_job(study, status="running", worker=handle, attempts=job.attempts + 1)

    def cancel(self, study) -> Any:
        """Stop the job's worker (if any) and mark it cancelled."""
        with self.lock:
            job = read_job(study)
            if job is not None and job.status == "running" and job.worker:
                self.launcher.stop(job.worker)
            return update_job(study, status="cancelled", finished=time.time())

    def _jobs(self) -> list[tuple[Any, Any]]:
        pairs = []
        for name in storage.study_names(self.shared):
            study = storage.load_from(self.shared, name)
            job = read_job(study)
            if job is not None:
                pairs.append((study, job))
        return pairs

    def _reap(self, study) -> None:
        job = read_job(study)  # fresh: a worker writes "finished" before it exits
        if job.status != "running":
            return
        if job.attempts >= MAX_ATTEMPTS:
            update_job(study, status="failed", finished=time.time(), error=f"worker died {job.attempts} times")
        else:
            update_job(study, status="queued", worker=None, error="worker died; re-queued (the study resumes)")
