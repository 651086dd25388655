"""The Unified Sampling Framework: schedules, float64 coefficients, pure kernels, the loop, presets."""

from __future__ import annotations

from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.solvers.sampler import sample
from diffsearch.solvers.schedule import Corrector, Derivative, Schedule, Step, compute_nfe
from diffsearch.solvers.timesteps import TIMESTEP_FAMILIES, make_timesteps

__all__ = [
    "PRESETS", "TIMESTEP_FAMILIES", "Corrector", "Derivative", "Schedule", "Step",
    "compute_nfe", "make_timesteps", "preset_schedule", "sample",
]
