"""Align Your Steps (Sabour, Fidler, Kreis; ICML 2024): the published 10-step schedules.

The numbers are the authors' published timesteps as diffusers ships them
(``diffusers.schedulers.scheduling_utils.AysSchedules``: ``StableDiffusionTimesteps`` and
``StableDiffusionXLTimesteps``, integer train steps of the 1000-step ``scaled_linear`` schedule,
beta 0.00085 to 0.012, sampled with a final sigma of 0). They were published for that noise
schedule and 10 steps only; any other noise schedule or step count is refused, never invented.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from diffsearch.errors import DiffsearchError
from diffsearch.models.noise_schedules import DiscreteSpec, noise_schedule_from
from diffsearch.solvers.anchors import AnchorMethod, AnchorRequest

STABLE_DIFFUSION = DiscreteSpec(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
PUBLISHED: dict[str, tuple[DiscreteSpec, tuple[int, ...]]] = {
    "stable_diffusion": (STABLE_DIFFUSION, (999, 850, 736, 645, 545, 455, 343, 233, 124, 24)),
    "stable_diffusion_xl": (STABLE_DIFFUSION, (999, 845, 730, 587, 443, 310, 193, 116, 53, 13)),
}


def ays_timesteps(request: AnchorRequest, variant: str = "stable_diffusion_xl") -> tuple[np.ndarray, dict[str, Any]]:
    """The published schedule ``variant`` as continuous times t = (k + 1) / N, then t = 0."""
    if variant not in PUBLISHED:
        raise DiffsearchError(f"ays variant {variant!r} is not published; published: {', '.join(PUBLISHED)}")
    spec, steps = PUBLISHED[variant]
    ns = request.noise_schedule
    if ns.fingerprint != noise_schedule_from(spec).fingerprint:
        supported = {f"{name} ({spec.beta_schedule} {spec.beta_start}-{spec.beta_end}, {spec.num_train_timesteps} steps)"
                     for name, (spec, _) in PUBLISHED.items()}
        raise DiffsearchError(f"spacing 'ays' has no published schedule for noise schedule {ns.describe()}; "
                              f"published for: {', '.join(sorted(supported))}")
    if request.nfe != len(steps):
        raise DiffsearchError(f"spacing 'ays' ({variant}) is published for {len(steps)} NFE only, not {request.nfe}")
    return np.append(ns.t_from_timestep(np.asarray(steps)), 0.0), {"variant": variant, "train_steps": list(steps)}


AYS = AnchorMethod(ays_timesteps, needs_model=False, settings={"variant": "stable_diffusion_xl"})
