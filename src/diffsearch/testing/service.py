"""A real ``search serve`` process on a free loopback port (tests and benchmarks), helpers to read its storage and stop its workers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[2])  # the folder holding this diffsearch package
TINY = {"model": "gmm", "budget": "4nfe", "strategy": "random", "evals": 6, "search_samples": 200, "final_samples": 400}  # a search of a few seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """One server process; ``start`` again after ``kill`` to restart it on the same storage and port."""

    def __init__(self, folder: Path, token: str | None = None, workers: int = 1, extra: list[str] | None = None,
                 storage: str | None = None) -> None:
        extra = extra or []
        self.folder, self.token, self.workers, self.extra = folder, token, workers, extra
        self.port, self.process = free_port(), None
        self.storage = storage or f"sqlite:///{folder / 'studies.db'}"
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> Server:
        env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "DIFFSEARCH_CACHE": str(self.folder / "cache"), "DIFFSEARCH_TOKEN": self.token or ""}
        command = [sys.executable, "-m", "diffsearch.cli", "serve", "--port", str(self.port), "--storage", self.storage,
                   "--runs-dir", str(self.folder / "runs"), "--workers", str(self.workers), *self.extra]
        with open(self.folder / "server.log", "ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()
            try:
                urllib.request.urlopen(self.url + "/docs", timeout=2).close()
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        raise AssertionError("server did not start in 90 s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def request(self, method: str, path: str, body=None, token: str | None = None, raw: bytes | None = None):
        """(status, parsed JSON or bytes) of one request."""
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                status, payload, kind = response.status, response.read(), response.headers.get("content-type", "")
        except urllib.error.HTTPError as error:
            status, payload, kind = error.code, error.read(), error.headers.get("content-type", "")
        return status, json.loads(payload) if "json" in kind else payload

    def jobs(self) -> dict[str, dict]:
        """Every study's job record, read from the database directly."""
        import optuna

        storage = optuna.storages.RDBStorage(self.storage)
        return {summary.study_name: summary.user_attrs.get("service:job")
                for summary in optuna.get_all_study_summaries(storage, include_best_trial=False)}

    def stop_workers(self) -> None:
        for job in self.jobs().values():
            worker = (job or {}).get("worker") or {}
            if worker.get("kind") == "local":
                try:
                    os.killpg(int(worker["pid"]), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass


def wait_for(condition, timeout: float = 120.0, every: float = 0.3):
    """Poll ``condition()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met in {timeout} s")
