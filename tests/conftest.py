"""Shared test setup: one thread, fixed seeds, no network."""

from __future__ import annotations

import os
import socket

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFSEARCH_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "diffsearch"))
os.environ.setdefault("DIFFSEARCH_THREADS", "1")  # the CLI (in-process and in subprocesses) too: tests run side by side
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


@pytest.fixture()
def flaky_plugin(tmp_path):
    """A plug-in model file (gmm network) that returns NaN for some times and raises for others."""
    plugin = tmp_path / "flaky.py"
    plugin.write_text(
        "import torch, diffsearch\n"
        "from diffsearch.models.gmm import build_gmm\n"
        "def make():\n"
        "    base = build_gmm()\n"
        "    def fn(x, t, cond):\n"
        "        if 300 < float(t[0]) < 450:\n"
        "            return torch.full_like(x, float('nan'))\n"
        "        if 450 <= float(t[0]) < 470:\n"
        "            raise RuntimeError('network exploded')\n"
        "        return base.fn(x, t, cond)\n"
        "    model = diffsearch.Denoiser(fn, base.noise_schedule, data_shape=(8,), name='flaky')\n"
        "    model.truth = base.truth\n"
        "    return model\n"
    )
    return plugin
