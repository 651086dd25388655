"""Jobs as Ray Jobs on a cluster (``search serve --ray-address``): the only service module that imports Ray."""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from diffsearch.errors import DiffsearchError
from diffsearch.service.launchers import worker_command

RUNNING = ("PENDING", "RUNNING")


class RayJobLauncher:
    """Submits ``python -m diffsearch.service.worker`` through Ray's job API (``DIFFSEARCH_RAY_PYTHON`` names another
    interpreter); the cluster runs the driver, which reads and writes the same storage."""

    def __init__(self, storage_url: str, log_dir: Path, address: str | None = None) -> None:
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError:
            raise DiffsearchError("--ray-address needs Ray: pip install 'diffsearch[ray]'") from None
        try:
            self.client = JobSubmissionClient(address)
        except Exception as error:
            raise DiffsearchError(f"--ray-address {address}: cannot reach the Ray job API ({type(error).__name__}: {error})") from None
        self.storage_url, self.address = storage_url, address

    def start(self, study: str) -> dict[str, Any]:
        command = worker_command(self.storage_url, study)
        entrypoint = shlex.join([os.environ.get("DIFFSEARCH_RAY_PYTHON", "python"), *command[1:]])
        submission = self.client.submit_job(entrypoint=entrypoint, metadata={"diffsearch_study": study})
        return {"kind": "ray", "submission_id": submission, "address": self.address, "study": study}

    def alive(self, handle: dict[str, Any]) -> bool:
        try:
            return str(self.client.get_job_status(handle["submission_id"])).rsplit(".", 1)[-1] in RUNNING
        except Exception:  # the job API does not know it (a new cluster): not running
            return False

    def stop(self, handle: dict[str, Any]) -> None:
        try:
            self.client.stop_job(handle["submission_id"])
        except Exception:
            pass
