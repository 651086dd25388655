"""Shared test setup: one thread, fixed seeds, no network."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFSEARCH_CACHE", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "diffsearch"))
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gmm():
    import diffsearch

    return diffsearch.load_model("gmm")
