"""Global error falls with NFE at each solver's order on the exact-epsilon ``gmm`` model.

The error is the median over 256 float64 trajectories of ||x - x_ref||, against a 2000-step
Taylor DPM-Solver++(3M) reference from the same x_T, on the same ``logsnr`` spacing and t_end.
Uniform-in-lambda steps keep the asymptotic regime clean from about 40 NFE; ``time_uniform`` only
reaches it near 300 NFE (the gmm is stiff as t -> 0). The median is used because a few
trajectories near mixture-component boundaries dominate a batch norm at low NFE.
Measured slopes (least squares over 40, 80, 160, 320 NFE): ddim -1.005, dpmpp_2m -2.015,
dpmpp_3m taylor -3.254, deis_3 -3.012, unipc_bh2 (UniP-2 + UniC, order 3) -3.087.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import diffsearch
from diffsearch.solvers.presets import preset_schedule

SPACING, T_END = "logsnr", 1e-3
NFES = (40, 80, 160, 320)
# preset -> (options, order). UniPC-2 with its UniC corrector is order 3 (UniC-p raises p by one).
SOLVERS = {
    "ddim": ({}, 1),
    "dpmpp_2m": ({}, 2),
    "dpmpp_3m": ({"third_order": "taylor"}, 3),
    "deis_3": ({}, 3),
    "unipc_bh2": ({}, 3),
}


@pytest.fixture(scope="module")
def noise_and_reference(gmm):
    x_T = torch.randn(256, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    reference = preset_schedule("dpmpp_3m", 2000, gmm.noise_schedule, SPACING, t_end=T_END, third_order="taylor")
    return x_T, diffsearch.sample(gmm, reference, x_T)


def median_error(gmm, name: str, nfe: int, options: dict, x_T: torch.Tensor, reference: torch.Tensor) -> float:
    schedule = preset_schedule(name, nfe, gmm.noise_schedule, SPACING, t_end=T_END, **options)
    x = diffsearch.sample(gmm, schedule, x_T)
    assert torch.isfinite(x).all()
    return float((x - reference).norm(dim=1).median())


@pytest.mark.parametrize("name", list(SOLVERS))
def test_error_falls_at_the_solver_order(gmm, noise_and_reference, name):
    options, order = SOLVERS[name]
    x_T, reference = noise_and_reference
    errors = [median_error(gmm, name, nfe, options, x_T, reference) for nfe in NFES]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:])), errors
    slope = np.polyfit(np.log(NFES), np.log(errors), 1)[0]
    assert -(order + 1) <= slope <= -(order - 0.6), f"{name}: slope {slope:.2f}, errors {errors}"


def test_reference_is_converged_well_below_the_smallest_error(gmm, noise_and_reference):
    x_T, reference = noise_and_reference
    half = preset_schedule("dpmpp_3m", 1000, gmm.noise_schedule, SPACING, t_end=T_END, third_order="taylor")
    gap = float((diffsearch.sample(gmm, half, x_T) - reference).norm(dim=1).median())
    assert gap < 1e-6  # the finest solver run above still has a median error near 1.7e-6
