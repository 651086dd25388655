"""diffsearch: search for the fastest way to sample a pretrained diffusion model.

The public API is imported lazily so that ``import diffsearch`` and ``search --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from diffsearch._version import __version__

_EXPORTS = {
    "Denoiser": "diffsearch.models.denoiser",
    "load_model": "diffsearch.models.loading",
    "register_model": "diffsearch.models.loading",
    "noise_schedule_from": "diffsearch.models.noise_schedules",
    "Schedule": "diffsearch.solvers.schedule",
    "Step": "diffsearch.solvers.schedule",
    "Derivative": "diffsearch.solvers.schedule",
    "Corrector": "diffsearch.solvers.schedule",
    "sample": "diffsearch.solvers.sampler",
    "Plan": "diffsearch.solvers.plan",
    "BlocksConfig": "diffsearch.models.blocks",
    "load_plan": "diffsearch.export.plan",
    "save_plan": "diffsearch.export.plan",
    "load_schedule": "diffsearch.export.artifact",
    "save_schedule": "diffsearch.export.artifact",
    "DiffsearchError": "diffsearch.errors",
    "run_search": "diffsearch.search.runner",
    "RunConfig": "diffsearch.search.config",
    "Client": "diffsearch.service.client",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'diffsearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
