"""Where a job's search runs: a local worker process, or a Ray Job on a cluster (``ray_jobs``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from diffsearch.registry import Registry


class Launcher(Protocol):
    """Starts a study's worker, says whether it is alive, stops it. Handles are JSON dicts (stored in the job)."""

    def start(self, study: str) -> dict[str, Any]: ...

    def alive(self, handle: dict[str, Any]) -> bool: ...

    def stop(self, handle: dict[str, Any]) -> None: ...


def worker_command(storage_url: str, study: str) -> list[str]:
    """The worker entry point: ``search run``'s code path for one queued study."""
    return [sys.executable, "-m", "diffsearch.service.worker", "--storage", storage_url, "--study", study]


class LocalLauncher:
    """One worker process per job on this machine (own session: it outlives a killed server)."""

    def __init__(self, storage_url: str, log_dir: Path, address: str | None = None) -> None:
        self.storage_url, self.log_dir = storage_url, Path(log_dir)
        self.children: dict[int, subprocess.Popen] = {}

    def start(self, study: str) -> dict[str, Any]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{study}.log", "ab") as log:
            child = subprocess.Popen(worker_command(self.storage_url, study), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.children[child.pid] = child
        return {"kind": "local", "pid": child.pid, "host": socket.gethostname(), "study": study}

    def alive(self, handle: dict[str, Any]) -> bool:
        """Alive: our child has not exited, or (after a server restart) the pid still runs this study's worker."""
        if handle.get("host") != socket.gethostname():
            return True  # another machine's worker: its job stays as it is
        pid = int(handle["pid"])
        if pid in self.children:
            return self.children[pid].poll() is None
        try:
            status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return False
        return status != "Z" and b"diffsearch.service.worker" in command and handle["study"].encode() in command

    def stop(self, handle: dict[str, Any]) -> None:
        if self.alive(handle):
            try:
                os.killpg(int(handle["pid"]), signal.SIGTERM)
            except ProcessLookupError:
                pass


LAUNCHERS: Registry[type] = Registry("launcher")
LAUNCHERS.register("local", LocalLauncher)
LAUNCHERS.register("ray", "diffsearch.service.ray_jobs:RayJobLauncher")
