"""Optimised timestep spacings (nas_spec.md 6): GITS, DM-NonUniform, LD3 and Align-Your-Steps.

Each is a spacing family like ``logsnr``, usable as ``--spacing gits|dmn|ld3|ays`` with any preset.
Unlike the fixed families some need the model (GITS, LD3) and all may depend on the solver, so
they live in a second registry (``diffsearch.solvers.timesteps.OPTIMISED_SPACINGS``) that
``preset_schedule`` resolves with the model. Every result is computed once per (model or noise
schedule fingerprint, solver, NFE, settings) and cached under ``$DIFFSEARCH_CACHE/anchors`` with
its cost in seconds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from diffsearch.errors import DiffsearchError
from diffsearch.models.noise_schedules import NoiseSchedule
from diffsearch.solvers.anchors.cache import AnchorRecord, load_record, record_key, store_record

# Noise seeds of the anchors' own teacher trajectories, disjoint from the search (0) and
# held-out (1) noise sets of diffsearch.evaluators.noise and from the benchmarks' held-out seeds.
GITS_WARMUP_SEED = 7_001
LD3_SEED = 7_002


@dataclass(frozen=True)
class AnchorRequest:
    """What a spacing is optimised for: the model (or only its noise schedule), solver, NFE and range."""

    noise_schedule: NoiseSchedule
    solver: str
    nfe: int
    t_start: float
    t_end: float
    model: Any = None
    preset_options: dict[str, Any] = field(default_factory=dict)

    def base_schedule(self, timesteps: Any):
        """The solver preset on the given timesteps."""
        from diffsearch.solvers.presets import preset_schedule

        return preset_schedule(self.solver, self.nfe, self.noise_schedule, timesteps=timesteps, **self.preset_options)


@dataclass(frozen=True)
class AnchorMethod:
    """A registered optimiser: ``compute(request, **settings) -> (times, details)``."""

    compute: Callable[..., tuple[np.ndarray, dict[str, Any]]]
    needs_model: bool
    settings: dict[str, Any]


def anchor_record(name: str, request: AnchorRequest, use_cache: bool = True, **settings: Any) -> AnchorRecord:
    """The optimised spacing ``name`` for ``request``: from the cache, or computed, timed and stored."""
    from diffsearch.solvers.timesteps import OPTIMISED_SPACINGS

    method: AnchorMethod = OPTIMISED_SPACINGS.get(name)
    unknown = sorted(set(settings) - set(method.settings))
    if unknown:
        raise DiffsearchError(f"spacing {name!r}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(method.settings))}")
    settings = {**method.settings, **settings}
    if method.needs_model and request.model is None:
        raise DiffsearchError(f"spacing {name!r} needs the model, not only its noise schedule (pass model=)")
    fingerprint, cacheable = _fingerprint(request, method.needs_model)
    key_settings = {**settings, "t_start": request.t_start, "t_end": request.t_end, "preset_options": request.preset_options}
    key = record_key(name, fingerprint, request.solver, request.nfe, key_settings)
    if use_cache and cacheable and (record := load_record(key, name)) is not None:
        return record
    started = time.perf_counter()
    times, details = method.compute(request, **settings)
    record = AnchorRecord(method=name, fingerprint=fingerprint, solver=request.solver, nfe=request.nfe,
                          settings=key_settings, timesteps=[float(t) for t in check_times(name, times, request)],
                          seconds=time.perf_counter() - started, details=details)
    if cacheable:
        store_record(key, record)
    return record


def _fingerprint(request: AnchorRequest, needs_model: bool) -> tuple[str, bool]:
    if not needs_model:
        return request.noise_schedule.fingerprint, True
    return request.model.fingerprint, bool(getattr(request.model, "fingerprint_is_content_hash", False))


def check_times(name: str, times: np.ndarray, request: AnchorRequest) -> np.ndarray:
    """Refuse anything but nfe + 1 finite, strictly decreasing times from t_start to t_end."""
    times = np.asarray(times, dtype=np.float64)
    if len(times) != request.nfe + 1 or not np.all(np.isfinite(times)) or not np.all(np.diff(times) < 0):
        raise DiffsearchError(f"spacing {name!r} produced invalid timesteps {times.tolist()} for {request.nfe} NFE")
    return times


def anchor_timesteps(name: str, source: Any, solver: str, nfe: int, t_start: float | None = None,
                     t_end: float | None = None, preset_options: dict[str, Any] | None = None) -> AnchorRecord:
    """The record (nfe + 1 times, cost) of optimised spacing ``name`` for ``solver`` on ``source`` (a Denoiser or a NoiseSchedule)."""
    model = None if isinstance(source, NoiseSchedule) else source
    ns = source if model is None else model.noise_schedule
    t_start = float(ns.t_max) if t_start is None else float(t_start)
    t_end = float(ns.default_t_end) if t_end is None else float(t_end)
    if not 0.0 < t_end < t_start:
        raise DiffsearchError(f"spacing {name!r} needs 0 < t_end < t_start, got t_end={t_end}, t_start={t_start}")
    request = AnchorRequest(ns, solver, nfe, t_start, t_end, model, dict(preset_options or {}))
    return anchor_record(name, request)
