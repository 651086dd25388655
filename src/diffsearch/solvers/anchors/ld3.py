"""LD3 (Tong et al., ICLR 2025): timesteps learned by back-propagating through the sampler to a teacher.

The parameters are the logSNR gaps (a softmax over the span, so times stay strictly decreasing
between fixed endpoints) and, for ``refine``, t_end and the derivative scaling coefficients. The
loss is LD3's soft (slack-ball) surrogate: the student from x_T' in a ball of radius
``radius * sigma_T * sqrt(dim)`` around x_T should hit the teacher's sample from x_T; each x_T' is a
parameter projected back onto its ball. After each epoch the plain (hard) loss on the validation
half decides: better parameters are kept, otherwise training restarts from the best ones with
half the learning rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffsearch.errors import DiffsearchError
from diffsearch.solvers.anchors import LD3_SEED, AnchorMethod, AnchorRequest
from diffsearch.solvers.anchors.differentiable import differentiable_sample, initial_coefficients
from diffsearch.solvers.anchors.teacher import anchor_noise, teacher_final
from diffsearch.solvers.schedule import Schedule


@dataclass
class Pairs:
    """Noise, labels and the teacher's samples from that noise."""

    noise: torch.Tensor
    cond: Any
    target: torch.Tensor

    def rows(self, index: Any) -> Pairs:
        """The pairs at ``index`` (a slice or index tensor)."""
        return Pairs(self.noise[index], None if self.cond is None else self.cond[index], self.target[index])


class ScheduleParameters(torch.nn.Module):
    """lambda_i = lambda_0 + cumsum(softmax(gaps)) * (lambda_end - lambda_0); optional t_end and coefficients."""

    def __init__(self, schedule: Schedule, ns: Any, t_end_range: tuple[float, float] | None, coefficients: bool) -> None:
        super().__init__()
        lambdas = torch.tensor(ns.lambda_(np.asarray(schedule.timesteps)), dtype=torch.float64)
        if not torch.all(torch.isfinite(lambdas)):
            raise DiffsearchError("gradient refinement needs a schedule that ends at t > 0")
        self.lambda_start = lambdas[0]
        self.gaps = torch.nn.Parameter(torch.log(torch.diff(lambdas)))
        self.bounds = None if t_end_range is None else torch.tensor(ns.lambda_(np.asarray(t_end_range[::-1])), dtype=torch.float64)
        fraction = 0.5 if self.bounds is None else float((lambdas[-1] - self.bounds[0]) / (self.bounds[1] - self.bounds[0]))
        self.end_logit = torch.nn.Parameter(torch.tensor(math.log(max(fraction, 1e-3) / max(1 - fraction, 1e-3)), dtype=torch.float64),
                                            requires_grad=self.bounds is not None)
        self.lambda_end_fixed = lambdas[-1]
        learnable = {k: v for k, v in initial_coefficients(schedule).items() if _scale_of(schedule, k) in ("linear", "exp", "constant")}
        self.keys = sorted(learnable) if coefficients else []
        self.coefficient_values = torch.nn.Parameter(torch.stack([learnable[k] for k in self.keys]) if self.keys else torch.zeros(0, dtype=torch.float64))
        self.fixed = initial_coefficients(schedule)

    def lambdas(self) -> torch.Tensor:
        """The nfe + 1 logSNR points, increasing (times decreasing)."""
        end = self.lambda_end_fixed if self.bounds is None else self.bounds[0] + torch.sigmoid(self.end_logit) * (self.bounds[1] - self.bounds[0])
        fractions = torch.cumsum(torch.softmax(self.gaps, 0), 0)[:-1]
        return torch.cat([self.lambda_start[None], self.lambda_start + fractions * (end - self.lambda_start), end[None]])

    def coefficients(self) -> dict[tuple, torch.Tensor]:
        """Every derivative's coefficient; the learned ones as parameters."""
        return {**self.fixed, **{k: self.coefficient_values[i] for i, k in enumerate(self.keys)}}


def _scale_of(schedule: Schedule, key: tuple) -> str:
    step, corrector, k = key
    spec = schedule.steps[step].corrector.derivatives if corrector else schedule.steps[step].derivatives
    return spec[k].scale


def to_schedule(schedule: Schedule, parameters: ScheduleParameters, ns: Any, label: str) -> Schedule:
    """The schedule with the parameters' times and coefficients (same steps, same NFE)."""
    with torch.no_grad():
        times = ns.inverse_lambda(parameters.lambdas().numpy())
        values = {k: float(v) for k, v in parameters.coefficients().items()}
    times[0] = schedule.timesteps[0]
    if parameters.bounds is None:
        times[-1] = schedule.timesteps[-1]
    steps = []
    for i, step in enumerate(schedule.steps):
        derivatives = tuple(d.model_copy(update={"coefficient": values[(i, False, k)]}) for k, d in enumerate(step.derivatives))
        corrector = step.corrector
        if corrector is not None:
            corrector = corrector.model_copy(update={"derivatives": tuple(
                d.model_copy(update={"coefficient": values[(i, True, k)]}) for k, d in enumerate(corrector.derivatives))})
        steps.append(step.model_copy(update={"derivatives": derivatives, "corrector": corrector}))
    provenance = {**schedule.provenance, "refined": label}
    return schedule.model_copy(update={"timesteps": tuple(float(t) for t in times), "steps": tuple(steps), "provenance": provenance})


def hard_loss(model: Any, schedule: Schedule, parameters: ScheduleParameters, pairs: Pairs, guidance: float | None, batch_size: int) -> float:
    """Mean squared distance to the teacher over ``pairs`` (no slack), without gradients."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(pairs.noise), batch_size):
            part = pairs.rows(slice(start, start + batch_size))
            out = differentiable_sample(model, schedule, parameters.lambdas(), part.noise, part.cond, guidance, parameters.coefficients())
            total += float(((out - part.target) ** 2).sum())
    return total / pairs.target.numel()


def fit_schedule(model: Any, schedule: Schedule, train: Pairs, validation: Pairs, *, guidance: float | None = None,
                 t_end_range: tuple[float, float] | None = None, coefficients: bool = False, epochs: int = 10,
                 batch_size: int = 10, learning_rate: float = 0.05, radius: float = 0.05, seed: int = 0) -> tuple[Schedule, dict[str, Any]]:
    """LD3's soft-loss training (Adam on the schedule parameters and the slack noise); best by validation loss."""
    ns = model.noise_schedule
    parameters = ScheduleParameters(schedule, ns, t_end_range, coefficients)
    nfe_before, trainable = model.nfe, [p for module in model.modules for p in module.parameters() if p.requires_grad]
    for weight in trainable:  # gradients flow through the network, never into its weights
        weight.requires_grad_(False)
    try:
        fitted, details = _train(model, schedule, parameters, train, validation, guidance, epochs, batch_size, learning_rate, radius, seed)
    finally:
        for weight in trainable:
            weight.requires_grad_(True)
        model.nfe = nfe_before
    return fitted, details


def _train(model, schedule, parameters, train, validation, guidance, epochs, batch_size, learning_rate, radius, seed):
    """The Adam loop of ``fit_schedule``."""
    ns = model.noise_schedule
    slack = torch.nn.Parameter(torch.zeros_like(train.noise))
    ball = radius * float(ns.sigma(schedule.timesteps[0])) * math.sqrt(train.noise[0].numel())
    optimiser = torch.optim.Adam([{"params": parameters.parameters(), "lr": learning_rate}, {"params": [slack], "lr": ball / 4}])
    generator = torch.Generator().manual_seed(seed)
    best = hard_loss(model, schedule, parameters, validation, guidance, 50)
    initial, best_state, history = best, {k: v.clone() for k, v in parameters.state_dict().items()}, []
    for _ in range(epochs):
        for index in torch.randperm(len(train.noise), generator=generator).split(batch_size):
            part = train.rows(index)
            out = differentiable_sample(model, schedule, parameters.lambdas(), part.noise + slack[index], part.cond, guidance, parameters.coefficients())
            loss = ((out - part.target) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(parameters.parameters()), 1.0)
            optimiser.step()
            with torch.no_grad():
                norms = slack.flatten(1).norm(dim=1).clamp(min=1e-12)
                slack.mul_((ball / norms).clamp(max=1.0).view(-1, *[1] * (slack.ndim - 1)))
        history.append(hard_loss(model, schedule, parameters, validation, guidance, 50))
        if history[-1] < best:
            best, best_state = history[-1], {k: v.clone() for k, v in parameters.state_dict().items()}
        else:  # backtrack: restart from the best parameters with half the step
            parameters.load_state_dict(best_state)
            optimiser.param_groups[0]["lr"] /= 2
    parameters.load_state_dict(best_state)
    details = {"validation_loss": best, "initial_validation_loss": initial, "validation_history": history}
    return to_schedule(schedule, parameters, ns, "ld3"), details


def split_pairs(pairs: Pairs, train_fraction: float) -> tuple[Pairs, Pairs]:
    """The first ``train_fraction`` of the rows for training, the rest for validation."""
    cut = int(round(len(pairs.noise) * train_fraction))
    if cut < 1 or cut >= len(pairs.noise):
        raise DiffsearchError(f"need at least one training and one validation sample, got {len(pairs.noise)} samples")
    return pairs.rows(slice(0, cut)), pairs.rows(slice(cut, None))


def refine(model: Any, schedule: Schedule, teacher_samples: torch.Tensor, noise: torch.Tensor, cond: Any = None,
           guidance: float | None = None, t_end_range: tuple[float, float] | None = None, train_fraction: float = 0.5,
           **options: Any) -> Schedule:
    """Gradient refinement of a schedule's times, t_end and scaling coefficients (LD3 loss), same NFE.

    ``teacher_samples`` are the teacher's samples from ``noise``; the first ``train_fraction`` train,
    the rest validate. Returns the input schedule unchanged unless the validation loss improved.

    Example:
        >>> import diffsearch, torch
        >>> from diffsearch.solvers.anchors.teacher import anchor_noise, teacher_final
        >>> model = diffsearch.load_model("gmm")
        >>> schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=model)
        >>> x_T, _ = anchor_noise(model, 20, seed=5)
        >>> target = teacher_final(model, x_T, None, None, schedule.timesteps[0], schedule.timesteps[-1], steps=200)
        >>> refine(model, schedule, target, x_T, epochs=2).nfe
        4
    """
    train, validation = split_pairs(Pairs(noise, cond, teacher_samples), train_fraction)
    refined, details = fit_schedule(model, schedule, train, validation, guidance=guidance, t_end_range=t_end_range,
                                    coefficients=True, **options)
    if details["validation_loss"] >= details["initial_validation_loss"]:
        return schedule
    return refined.model_copy(update={"provenance": {**refined.provenance, "refinement": details}})


def ld3_timesteps(request: AnchorRequest, samples: int = 100, train_fraction: float = 0.5, epochs: int = 20,
                  batch_size: int = 10, learning_rate: float = 0.1, radius: float = 0.05, teacher_steps: int = 1000,
                  initial: str = "logsnr", guidance: float | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """LD3 timesteps for the request's solver, trained on ``samples`` teacher pairs from the LD3 noise seed."""
    from diffsearch.solvers.timesteps import make_timesteps

    model = request.model
    x_T, cond = anchor_noise(model, samples, LD3_SEED)
    target = teacher_final(model, x_T, cond, guidance, request.t_start, request.t_end, teacher_steps)
    train, validation = split_pairs(Pairs(x_T, cond, target), train_fraction)
    start = request.base_schedule(make_timesteps(request.noise_schedule, request.nfe, initial, request.t_start, request.t_end))
    fitted, details = fit_schedule(model, start, train, validation, guidance=guidance, epochs=epochs,
                                   batch_size=batch_size, learning_rate=learning_rate, radius=radius)
    return np.asarray(fitted.timesteps), {**details, "noise_seed": LD3_SEED}


LD3 = AnchorMethod(ld3_timesteps, needs_model=True, settings={
    "samples": 100, "train_fraction": 0.5, "epochs": 20, "batch_size": 10, "learning_rate": 0.1, "radius": 0.05,
    "teacher_steps": 1000, "initial": "logsnr", "guidance": None})
