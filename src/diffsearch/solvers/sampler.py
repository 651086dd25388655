"""The USF sampling loop (s3_spec.md 3.3): evaluate, combine, correct. Small on purpose.

A ``Plan`` adds one network configuration per model evaluation; the loop hands configuration k
to evaluation k and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.coefficients import StepPlan, compile_schedule
from diffsearch.solvers.kernels import apply_update
from diffsearch.solvers.plan import Plan, as_plan, check_blocks, check_subnets
from diffsearch.solvers.schedule import Schedule


def first_evaluation(
    model: Denoiser, first_step: str, x_T: torch.Tensor, t: float, cond: Any, guidance: float | None, config: Any = None
):
    """(eps, x0) at t_0: the model, or an analytical first step (zero_x0: eps = x_T; mean_x0: x0 = data mean)."""
    if first_step == "model":
        return evaluate_model(model, x_T, t, cond, guidance, config)
    alpha, sigma = float(model.noise_schedule.alpha(t)), float(model.noise_schedule.sigma(t))
    if first_step == "zero_x0":
        return x_T, (x_T - sigma * x_T) / alpha
    if model.data_mean is None:
        raise DiffsearchError(f"first_step 'mean_x0' needs a model with data_mean; {model.name!r} has none")
    x0 = model.data_mean.to(x_T.device, x_T.dtype).expand_as(x_T)
    return (x_T - alpha * x0) / sigma, x0


def evaluate_model(model: Denoiser, x: torch.Tensor, t: float, cond: Any, guidance: float | None, config: Any):
    """One ``predict``; the full network calls it without ``config`` (Denoiser subclasses may predate it)."""
    if config is None:
        return model.predict(x, t, cond, guidance)
    return model.predict(x, t, cond, guidance, config)


def oldest_needed(plans: tuple[StepPlan, ...]) -> list[int]:
    """For each step, the oldest point index that this or any later step still reads."""
    oldest, running = [], float("inf")
    for plan in reversed(plans):
        updates = [plan.predictor] + ([plan.corrector] if plan.corrector else [])
        indices = [u.start for u in updates] + [j for u in updates for j, _ in u.weights]
        running = min(running, *indices)
        oldest.append(int(running))
    return oldest[::-1]


def check_compatible(model: Denoiser, schedule: Schedule) -> None:
    """Refuse a schedule searched for another noise schedule."""
    reference = schedule.noise_schedule
    if reference is not None and reference.fingerprint != model.noise_schedule.fingerprint:
        raise DiffsearchError(
            f"schedule {schedule.name or ''} belongs to noise schedule {reference.fingerprint} "
            f"({reference.spec}); model {model.name!r} has {model.noise_schedule.fingerprint}"
        )


def sample(
    model: Denoiser, plan: Plan | Schedule, x_T: torch.Tensor, cond: Any = None, guidance: float | None = None,
    callback: Callable[[int, float, torch.Tensor, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Run a plan (or a schedule: the full network) on ``model`` from noise ``x_T``; the sample at the final time.

    ``callback(i, t_i, x_i, denoised_i)`` observes the loop after each evaluation at an interior time
    (k-diffusion's callback): the state there and the model's data prediction at it.

    Example:
        >>> import torch, diffsearch
        >>> model = diffsearch.load_model("gmm")
        >>> schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=10, model=model)
        >>> diffsearch.sample(model, schedule, torch.randn(4, 8)).shape
        torch.Size([4, 8])
    """
    plan = as_plan(plan)
    schedule = plan.schedule
    check_compatible(model, schedule)
    check_blocks(plan, model.blocks.names if model.blocks is not None else None, model.name)
    check_subnets(plan, model)
    plans = compile_schedule(schedule, model.noise_schedule)
    t, configs = schedule.timesteps, iter(plan.evaluation_configs())
    model.begin_sample()

    def evaluate(x: torch.Tensor, time: float):
        return evaluate_model(model, x, time, cond, guidance, next(configs))

    first = next(configs) if schedule.first_step == "model" else None
    eps, x0 = first_evaluation(model, schedule.first_step, x_T, t[0], cond, guidance, first)
    xs, outputs = {0: x_T}, {"noise": {0: eps}, "data": {0: x0}}
    oldest = oldest_needed(plans)
    for i, step in enumerate(plans):
        for store in (xs, outputs["noise"], outputs["data"]):
            for j in [j for j in store if j < oldest[i]]:
                del store[j]
        x = apply_update(step.predictor, xs, outputs)
        if i == len(plans) - 1:
            return x
        outputs["noise"][i + 1], outputs["data"][i + 1] = evaluate(x, t[i + 1])
        if callback is not None:
            callback(i + 1, t[i + 1], x, outputs["data"][i + 1])
        if step.corrector is not None:
            x = apply_update(step.corrector, {**xs, i + 1: x}, outputs)
            if step.implicit:
                outputs["noise"][i + 1], outputs["data"][i + 1] = evaluate(x, t[i + 1])
        xs[i + 1] = x
    raise AssertionError("unreachable: a schedule has at least one step")
