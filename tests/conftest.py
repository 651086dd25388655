"""Shared test setup: one thread, fixed seeds, no network."""

from __future__ import annotations

import os
import socket

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFSEARCH_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "diffsearch"))
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gmm():
    import diffsearch

    return diffsearch.load_model("gmm")


@pytest.fixture()
def no_network(monkeypatch):
    """Fail the test on any attempt to open a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
