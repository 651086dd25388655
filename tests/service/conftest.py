"""The ``make_server`` fixture: real ``search serve`` processes, killed with their workers at the end."""

from __future__ import annotations

import pytest
from diffsearch.testing.service import Server


@pytest.fixture()
def make_server(tmp_path):
    """``make_server(token=None, workers=1, extra=[])`` starts a server; all are killed (with their workers) at the end."""
    servers: list[Server] = []

    def make(token: str | None = None, workers: int = 1, extra: list[str] | None = None, storage: str | None = None) -> Server:
        folder = tmp_path / f"server{len(servers)}"
        folder.mkdir()
        servers.append(Server(folder, token, workers, extra or [], storage).start())
        return servers[-1]

    yield make
    for server in servers:
        server.kill()
        server.stop_workers()

