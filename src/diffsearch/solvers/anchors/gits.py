"""GITS (Chen et al., ICML 2024): the best K-step subsequence of a fine teacher grid by dynamic programming.

Warm-up teacher trajectories are run on a fine grid (``grid_points`` times, Karras rho = 7 as the
authors' polynomial schedule); cost[i, j] is the mean L2 (or L1) distance between a one-step
Euler (DDIM) jump from the teacher state at grid point i to grid time j and the teacher state at j.
The DP picks K = NFE jumps from the first to the last grid point minimising
cost[i, j] + coefficient * (cost of the rest), the authors' recursion with its 1.15 default.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from diffsearch.solvers.anchors import GITS_WARMUP_SEED, AnchorMethod, AnchorRequest
from diffsearch.solvers.anchors.differentiable import differentiable_sample
from diffsearch.solvers.anchors.teacher import anchor_noise

_COST_MATRICES: dict[tuple, np.ndarray] = {}


def teacher_grid_trajectory(model: Any, grid: np.ndarray, warmup: int, guidance: float | None, batch_size: int = 512):
    """States x_i and noise predictions eps_i at every grid point but the last, plus the final states."""
    from diffsearch.solvers.presets import preset_schedule

    teacher = preset_schedule("dpmpp_3m", len(grid) - 1, model.noise_schedule, timesteps=grid, third_order="taylor")
    lambdas = torch.tensor(model.noise_schedule.lambda_(grid), dtype=torch.float64)
    x_T, cond = anchor_noise(model, warmup, GITS_WARMUP_SEED)
    states, noises, finals = [], [], []
    nfe_before = model.nfe
    with torch.no_grad():
        for start in range(0, warmup, batch_size):
            trajectory: list = []
            part = None if cond is None else cond[start : start + batch_size]
            finals.append(differentiable_sample(model, teacher, lambdas, x_T[start : start + batch_size], part, guidance, trajectory=trajectory))
            states.append(torch.stack([x for x, _ in trajectory]))
            noises.append(torch.stack([eps for _, eps in trajectory]))
    model.nfe = nfe_before
    return torch.cat(states, 1), torch.cat(noises, 1), torch.cat(finals)


def cost_matrix(model: Any, grid: np.ndarray, warmup: int, metric: str, guidance: float | None) -> np.ndarray:
    """cost[i, j] (j > i): mean distance of the Euler jump i -> j to the teacher state at j."""
    states, noises, final = teacher_grid_trajectory(model, grid, warmup, guidance)
    states = torch.cat([states, final[None]])
    ns, n = model.noise_schedule, len(grid)
    alphas, sigmas = ns.alpha(grid), ns.sigma(grid)
    cost = np.full((n, n), np.inf)
    order = 1 if metric == "l1" else 2
    for i in range(n - 1):
        for j in range(i + 1, n):
            jump = (alphas[j] / alphas[i]) * states[i] + (sigmas[j] - alphas[j] * sigmas[i] / alphas[i]) * noises[i]
            cost[i, j] = float((jump - states[j]).flatten(1).norm(p=order, dim=1).mean())
    return cost


def best_path(cost: np.ndarray, jumps: int, coefficient: float) -> list[int]:
    """GITS's DP: V[i, k] = min_{i < m < last} cost[i, m] + coefficient * V[m, k - 1], V[i, 1] = cost[i, last]."""
    n = len(cost)
    last = n - 1
    value = np.full((n, jumps + 1), np.inf)
    choice = np.zeros((n, jumps + 1), dtype=int)
    value[:last, 1] = cost[:last, last]
    choice[:, 1] = last
    for k in range(2, jumps + 1):
        for i in range(last):
            candidates = cost[i, i + 1 : last] + coefficient * value[i + 1 : last, k - 1]
            if len(candidates) and np.isfinite(candidates.min()):
                m = int(np.argmin(candidates))
                value[i, k], choice[i, k] = candidates[m], i + 1 + m
    path, i = [0], 0
    for k in range(jumps, 0, -1):
        i = int(choice[i, k])
        path.append(i)
    return path


def gits_timesteps(request: AnchorRequest, grid_points: int = 61, warmup: int = 256, metric: str = "l2",
                   coefficient: float = 1.15, guidance: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """GITS times: a Karras teacher grid of ``grid_points`` times and the DP's NFE-jump subsequence."""
    from diffsearch.errors import DiffsearchError
    from diffsearch.solvers.timesteps import make_timesteps

    if metric not in ("l1", "l2"):
        raise DiffsearchError(f"gits metric {metric!r} is not one of l1, l2")
    if grid_points <= request.nfe:
        raise DiffsearchError(f"gits needs more grid points ({grid_points}) than NFE ({request.nfe})")
    grid = make_timesteps(request.noise_schedule, grid_points - 1, "karras", request.t_start, request.t_end)
    key = (request.model.fingerprint, tuple(grid), warmup, metric, guidance)
    if key not in _COST_MATRICES:
        _COST_MATRICES[key] = cost_matrix(request.model, grid, warmup, metric, guidance)
    path = best_path(_COST_MATRICES[key], request.nfe, coefficient)
    return grid[path], {"grid_indices": path, "warmup_seed": GITS_WARMUP_SEED}


GITS = AnchorMethod(gits_timesteps, needs_model=True, settings={
    "grid_points": 61, "warmup": 256, "metric": "l2", "coefficient": 1.15, "guidance": None})
