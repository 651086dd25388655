"""Models: noise schedules, the Denoiser wrapper, built-in models and the plug-in loader."""

from __future__ import annotations

from diffsearch.models.denoiser import Denoiser
from diffsearch.models.loading import MODELS, load_model, register_model
from diffsearch.models.noise_schedules import NoiseSchedule, noise_schedule_from

__all__ = ["MODELS", "Denoiser", "NoiseSchedule", "load_model", "noise_schedule_from", "register_model"]
