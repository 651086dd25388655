"""Deploy a ``diffsearch.schedule/v1`` artifact in diffusers: ``USFScheduler`` and stock-scheduler exports.

The only export module that imports diffusers; import it only when deploying. ``USFScheduler`` runs
every per-step decision of the artifact (solver order, prediction, derivative estimates, correctors)
inside any diffusers denoising loop; ``to_diffusers_timesteps`` / ``to_diffusers_sigmas`` export only
the times, for stock schedulers that accept a custom ``timesteps=`` or ``sigmas=`` list.
``apply_plan(pipe, path)`` installs a ``diffsearch.plan/v1`` artifact (the USFScheduler plus the
per-evaluation block modes on the pipeline's UNet); ``remove_plan(pipe)`` restores both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput

from diffsearch.errors import DiffsearchError
from diffsearch.export.artifact import is_finite_tree, load_schedule, parse_schedule
from diffsearch.models.denoiser import PREDICTION_TYPES
from diffsearch.models.noise_schedules import DiscreteVP, NoiseSchedule, noise_schedule_from
from diffsearch.solvers.coefficients import compile_schedule
from diffsearch.solvers.kernels import apply_update
from diffsearch.solvers.sampler import oldest_needed
from diffsearch.solvers.schedule import Schedule

NOISE_KEYS = ("beta_schedule", "beta_start", "beta_end", "num_train_timesteps")
TIMESTEP_SCHEDULERS = ("DDPMScheduler", "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler")
SIGMA_SCHEDULERS = ("EulerDiscreteScheduler",)
FINAL_SIGMA_SCHEDULERS = ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EulerDiscreteScheduler")
_GRID_TOLERANCE = 1e-6


def _config_dict(source: Any) -> dict[str, Any]:
    """A plain dict from a pipeline, a scheduler, a FrozenDict config or a mapping."""
    if hasattr(source, "scheduler"):
        source = source.scheduler
    if hasattr(source, "config"):
        source = source.config
    if not isinstance(source, Mapping):
        raise DiffsearchError(f"expected a pipeline, scheduler or scheduler config, got {type(source).__name__}")
    return dict(source)


def model_times(schedule: Schedule, noise_schedule: NoiseSchedule) -> np.ndarray:
    """The network's time input at each artifact time (diffusers' N t - 1 for discrete schedules)."""
    return np.asarray(noise_schedule.model_time(np.asarray(schedule.timesteps, dtype=np.float64)), dtype=np.float64)


def _as_timestep_tensor(values: np.ndarray) -> torch.Tensor:
    """int64 when every value sits on the integer grid, float32 otherwise."""
    rounded = np.round(values)
    if np.all(np.abs(values - rounded) < _GRID_TOLERANCE):
        return torch.tensor(rounded.astype(np.int64))
    return torch.tensor(values, dtype=torch.float32)


class USFScheduler(SchedulerMixin, ConfigMixin):
    """Executes a ``diffsearch.schedule/v1`` artifact step by step inside a diffusers loop.

    One ``step`` call per model evaluation: ``len(scheduler.timesteps) == artifact NFE``. Pseudo and
    implicit correctors are supported (an implicit corrector's re-evaluation is one more entry of
    ``timesteps`` at the same time); analytical first steps (``zero_x0`` / ``mean_x0``) are refused.
    ``init_noise_sigma`` is 1 and ``scale_model_input`` is the identity (VP, x_T ~ N(0, I)).

    Args:
        artifact: the schedule as its JSON dict (stored in ``scheduler_config.json``).
        prediction_type: what the network predicts: ``epsilon``, ``sample`` or ``v_prediction``.
        beta_schedule, beta_start, beta_end, num_train_timesteps: the pipeline's noise schedule;
            left ``None``, the artifact's own noise schedule is used. Given, they must match the
            artifact's fingerprint.

    Example:
        >>> import diffsearch
        >>> gmm = diffsearch.load_model("gmm")
        >>> s = USFScheduler.from_artifact(diffsearch.load_schedule("preset:dpmpp_2m", nfe=4, model=gmm))
        >>> s.set_timesteps(4); len(s.timesteps)
        4
    """

    config_name = "scheduler_config.json"
    _compatibles: list[str] = []
    order = 1

    @register_to_config
    def __init__(
        self,
        artifact: dict[str, Any] | None = None,
        prediction_type: str = "epsilon",
        beta_schedule: str | None = None,
        beta_start: float | None = None,
        beta_end: float | None = None,
        num_train_timesteps: int | None = None,
    ) -> None:
        if artifact is None:
            raise DiffsearchError("USFScheduler needs an artifact: use USFScheduler.from_artifact(path_or_schedule, ...)")
        if prediction_type not in PREDICTION_TYPES:
            raise DiffsearchError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        self.schedule = parse_schedule(dict(artifact), source="USFScheduler artifact")
        if self.schedule.first_step != "model":
            raise DiffsearchError(
                f"USFScheduler: first_step {self.schedule.first_step!r} is not supported in diffusers loops "
                "(the loop evaluates the model at every timestep); use an artifact with first_step 'model'"
            )
        keys = {"beta_schedule": beta_schedule, "beta_start": beta_start, "beta_end": beta_end, "num_train_timesteps": num_train_timesteps}
        self.noise_schedule = self._resolve_noise_schedule({k: v for k, v in keys.items() if v is not None})
        self.plans = compile_schedule(self.schedule, self.noise_schedule)
        self.init_noise_sigma = 1.0
        self.timesteps = torch.empty(0)
        self.num_inference_steps: int | None = None
        self._events: list[tuple[int, bool]] = []
        self._reset_state()

    def _resolve_noise_schedule(self, keys: dict[str, Any]) -> NoiseSchedule:
        reference = self.schedule.noise_schedule
        if not keys:
            if reference is None:
                raise DiffsearchError("USFScheduler: the artifact names no noise schedule; pass scheduler_config=pipe.scheduler.config")
            return noise_schedule_from(reference.spec)
        noise_schedule = noise_schedule_from(keys)
        _check_fingerprint(self.schedule, noise_schedule)
        return noise_schedule

    @classmethod
    def from_artifact(
        cls, source: str | Path | Schedule, scheduler_config: Any = None, prediction_type: str | None = None
    ) -> USFScheduler:
        """A scheduler for the artifact at ``source`` (JSON path or Schedule).

        ``scheduler_config`` (a pipeline, its scheduler or its config) supplies the noise schedule,
        checked against the artifact's fingerprint, and the prediction type.
        """
        schedule = load_schedule(source)
        config = _config_dict(scheduler_config) if scheduler_config is not None else {}
        if config.get("trained_betas") is not None:
            raise DiffsearchError("USFScheduler: scheduler configs with trained_betas are not supported")
        keys = {key: config[key] for key in NOISE_KEYS if config.get(key) is not None}
        if scheduler_config is not None and not keys:
            raise DiffsearchError(f"scheduler config names no noise schedule (expected {', '.join(NOISE_KEYS)})")
        prediction = prediction_type or config.get("prediction_type", "epsilon")
        return cls(artifact=schedule.model_dump(mode="json"), prediction_type=prediction, **keys)

    def check_compatible(self, other: Any) -> None:
        """Refuse a pipeline / scheduler (config) with another noise schedule or prediction type."""
        config = _config_dict(other)
        keys = {key: config[key] for key in NOISE_KEYS if config.get(key) is not None}
        if config.get("trained_betas") is not None or not keys:
            raise DiffsearchError(f"cannot check compatibility: the config has no beta schedule ({', '.join(NOISE_KEYS)})")
        _check_fingerprint(self.schedule, noise_schedule_from(keys))
        prediction = config.get("prediction_type", "epsilon")
        if prediction != self.config.prediction_type:
            raise DiffsearchError(f"prediction_type mismatch: the pipeline predicts {prediction!r}, this scheduler expects {self.config.prediction_type!r}")

    def _reset_state(self) -> None:
        self._cursor = 0
        self._xs: dict[int, torch.Tensor] = {}
        self._outputs: dict[str, dict[int, torch.Tensor]] = {"noise": {}, "data": {}}

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None, **kwargs: Any) -> None:
        """Model-evaluation times of the artifact; ``num_inference_steps`` must equal its NFE."""
        if kwargs.get("timesteps") is not None or kwargs.get("sigmas") is not None:
            raise DiffsearchError("USFScheduler takes its timesteps from the artifact; do not pass timesteps= or sigmas=")
        nfe = self.schedule.nfe
        if num_inference_steps is not None and num_inference_steps != nfe:
            raise DiffsearchError(
                f"set_timesteps({num_inference_steps}): this artifact makes exactly {nfe} model evaluations; "
                f"use num_inference_steps={nfe}"
            )
        self._events = [(0, False)]
        for index, plan in enumerate(self.plans[:-1]):
            self._events.append((index + 1, False))
            if plan.implicit:
                self._events.append((index + 1, True))
        times = model_times(self.schedule, self.noise_schedule)
        self.timesteps = _as_timestep_tensor(np.array([times[point] for point, _ in self._events])).to(device)
        self.num_inference_steps = nfe
        self._reset_state()

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """Identity: the network takes x_t unscaled (VP)."""
        return sample

    def _predictions(self, output: torch.Tensor, sample: torch.Tensor, point: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0) from the raw output, as ``Denoiser.predict`` converts it."""
        t = self.schedule.timesteps[point]
        alpha, sigma = float(self.noise_schedule.alpha(t)), float(self.noise_schedule.sigma(t))
        if self.config.prediction_type == "epsilon":
            return output, (sample - sigma * output) / alpha
        if self.config.prediction_type == "sample":
            return (sample - alpha * output) / sigma, output
        return alpha * output + sigma * sample, alpha * sample - sigma * output

    def _check_call(self, timestep: Any) -> None:
        if not self._events:
            raise DiffsearchError("USFScheduler.step: call set_timesteps first")
        if self._cursor >= len(self._events):
            raise DiffsearchError(f"USFScheduler.step: called more than the artifact's {len(self._events)} evaluations")
        expected = float(self.timesteps[self._cursor])
        given = float(timestep)
        if abs(given - expected) > 1e-4 * max(1.0, abs(expected)):
            raise DiffsearchError(f"USFScheduler.step: expected timestep {expected} (evaluation {self._cursor}), got {given}")

    def _prune(self, step_index: int) -> None:
        oldest = oldest_needed(self.plans)[step_index]
        for store in (self._xs, self._outputs["noise"], self._outputs["data"]):
            for j in [j for j in store if j < oldest]:
                del store[j]

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True, **kwargs: Any):
        """Record the evaluation at ``timestep``, apply a pending corrector, then the next predictor."""
        self._check_call(timestep)
        point, reevaluation = self._events[self._cursor]
        self._cursor += 1
        self._outputs["noise"][point], self._outputs["data"][point] = self._predictions(model_output, sample, point)
        corrector = self.plans[point - 1].corrector if point > 0 and not reevaluation else None
        x = sample
        if corrector is not None:
            x = apply_update(corrector, {**self._xs, point: sample}, self._outputs)
            if self.plans[point - 1].implicit:
                return SchedulerOutput(prev_sample=x) if return_dict else (x,)
        self._xs[point] = x
        self._prune(point)
        x = apply_update(self.plans[point].predictor, self._xs, self._outputs)
        return SchedulerOutput(prev_sample=x) if return_dict else (x,)

    def __len__(self) -> int:
        return self.noise_schedule.num_train_timesteps if isinstance(self.noise_schedule, DiscreteVP) else 1000


def _check_fingerprint(schedule: Schedule, noise_schedule: NoiseSchedule) -> None:
    reference = schedule.noise_schedule
    if reference is not None and reference.fingerprint != noise_schedule.fingerprint:
        raise DiffsearchError(
            f"noise schedule mismatch: the artifact was searched on {reference.fingerprint} ({reference.spec}), "
            f"the pipeline has {noise_schedule.fingerprint} ({noise_schedule.describe()})"
        )


def _stock_noise_schedule(schedule: Schedule, class_name: str, allowed: tuple[str, ...], kind: str) -> DiscreteVP:
    if class_name not in allowed:
        raise DiffsearchError(f"{class_name} does not accept custom {kind}; schedulers that do: {', '.join(allowed)}")
    if schedule.noise_schedule is None:
        raise DiffsearchError("stock export needs an artifact with a noise_schedule")
    noise_schedule = noise_schedule_from(schedule.noise_schedule.spec)
    if not isinstance(noise_schedule, DiscreteVP):
        raise DiffsearchError(f"stock diffusers schedulers need a discrete noise schedule, not {noise_schedule.spec.kind!r}")
    if schedule.first_step != "model" or schedule.nfe != len(schedule.steps):
        raise DiffsearchError("stock export needs one model evaluation per step (first_step 'model', no implicit correctors)")
    return noise_schedule


def _overrides(schedule: Schedule, noise_schedule: DiscreteVP, class_name: str) -> dict[str, Any]:
    """Noise-schedule keys plus the terminal: final_sigmas_type 'zero' (t = 0) or 'sigma_min' (t = 1/N)."""
    overrides = {key: value for key, value in noise_schedule.describe().items() if key != "kind"}
    last = schedule.timesteps[-1]
    if last == 0.0:
        terminal = "zero"
    elif abs(last - noise_schedule.t_min) < _GRID_TOLERANCE and class_name.startswith("DPMSolver"):
        terminal = "sigma_min"
    else:
        raise DiffsearchError(f"timesteps[-1]: {class_name} cannot end at t = {last}; it ends at 0 (or 1/N for DPM-Solver)")
    if class_name in FINAL_SIGMA_SCHEDULERS:
        overrides["final_sigmas_type"] = terminal
    return overrides


def to_diffusers_timesteps(schedule: Schedule | str | Path, class_name: str) -> dict[str, Any]:
    """``{"class_name", "config_overrides", "timesteps"}`` for a stock scheduler's ``timesteps=`` argument.

    Only the times are exported (the stock scheduler's own solver runs them). Integers in [0, N),
    strictly decreasing, one per step; refuses times off the integer grid, naming the value.
    """
    schedule = load_schedule(schedule)
    noise_schedule = _stock_noise_schedule(schedule, class_name, TIMESTEP_SCHEDULERS, "timesteps")
    values = model_times(schedule, noise_schedule)[:-1]
    timesteps = []
    for index, value in enumerate(values):
        if abs(value - round(value)) >= _GRID_TOLERANCE:
            raise DiffsearchError(f"timesteps[{index}]: t = {schedule.timesteps[index]} is diffusers timestep {value:.6g}, not an integer; use to_diffusers_sigmas or USFScheduler")
        timesteps.append(int(round(value)))
    _validate_timesteps(timesteps, noise_schedule.num_train_timesteps, len(schedule.steps))
    return {"class_name": class_name, "config_overrides": _overrides(schedule, noise_schedule, class_name), "timesteps": timesteps}


def to_diffusers_sigmas(schedule: Schedule | str | Path, class_name: str = "EulerDiscreteScheduler") -> dict[str, Any]:
    """``{"class_name", "config_overrides", "sigmas"}``: sigma_t / alpha_t per step time plus a trailing 0."""
    schedule = load_schedule(schedule)
    noise_schedule = _stock_noise_schedule(schedule, class_name, SIGMA_SCHEDULERS, "sigmas")
    if schedule.timesteps[-1] != 0.0:
        raise DiffsearchError(f"timesteps[-1]: sigmas= exports need a schedule ending at t = 0, got {schedule.timesteps[-1]}")
    times = np.asarray(schedule.timesteps[:-1], dtype=np.float64)
    sigmas = [float(s) for s in noise_schedule.sigma(times) / noise_schedule.alpha(times)] + [0.0]
    _validate_sigmas(sigmas, len(schedule.steps))
    return {"class_name": class_name, "config_overrides": _overrides(schedule, noise_schedule, class_name), "sigmas": sigmas}


def _validate_timesteps(timesteps: list[int], num_train_timesteps: int, steps: int) -> None:
    if len(timesteps) != steps:
        raise DiffsearchError(f"timesteps: {len(timesteps)} values for {steps} steps")
    for index, value in enumerate(timesteps):
        if not 0 <= value < num_train_timesteps:
            raise DiffsearchError(f"timesteps[{index}]: {value} is outside [0, {num_train_timesteps})")
        if index and value >= timesteps[index - 1]:
            raise DiffsearchError(f"timesteps[{index}]: {value} is not strictly below {timesteps[index - 1]}")


def _validate_sigmas(sigmas: list[float], steps: int) -> None:
    if len(sigmas) != steps + 1 or sigmas[-1] != 0.0:
        raise DiffsearchError(f"sigmas: {steps} steps need {steps + 1} sigmas ending in 0")
    if not is_finite_tree(sigmas):
        raise DiffsearchError("sigmas: only finite numbers are allowed")
    for index in range(1, len(sigmas)):
        if not sigmas[index] < sigmas[index - 1]:
            raise DiffsearchError(f"sigmas[{index}]: {sigmas[index]} is not strictly below {sigmas[index - 1]}")


def stock_scheduler(export: Mapping[str, Any], base_config: Any = None, device: str | None = None):
    """The diffusers scheduler an export describes, with its timesteps or sigmas already set."""
    import diffusers

    config = {**(_config_dict(base_config) if base_config is not None else {}), **export["config_overrides"]}
    scheduler = getattr(diffusers, export["class_name"]).from_config(config)
    kind = "timesteps" if "timesteps" in export else "sigmas"
    scheduler.set_timesteps(device=device, **{kind: list(export[kind])})
    return scheduler


class _InstalledPlan:
    """What ``apply_plan`` changed on a pipeline, so that ``remove_plan`` can undo exactly that."""

    def __init__(self, scheduler: Any, handle: Any, installed_hooks: bool) -> None:
        self.scheduler, self.handle, self.installed_hooks = scheduler, handle, installed_hooks


def apply_plan(pipe: Any, source: str | Path | Any) -> USFScheduler:
    """Install a plan on a diffusers pipeline: its schedule as ``pipe.scheduler``, its block modes on ``pipe.unet``.

    Evaluation k of a run (the USFScheduler's step counter) gets the plan's configuration k; the
    blocks' reuse cache is reset at the first evaluation of each run. Returns the new scheduler.

    Example:
        >>> # apply_plan(pipe, "best.json"); images = pipe(...); remove_plan(pipe)
    """
    from diffsearch.export.plan import load_plan
    from diffsearch.models.diffusers_adapter import install_block_hooks
    from diffsearch.solvers.plan import check_blocks

    if getattr(pipe, "_diffsearch_plan", None) is not None:
        raise DiffsearchError("apply_plan: this pipeline already has a plan; call remove_plan(pipe) first")
    plan = load_plan(source)
    scheduler = USFScheduler.from_artifact(plan.schedule, scheduler_config=pipe.scheduler)
    handle, installed = None, False
    if not plan.full_network:
        installed = getattr(pipe.unet, "_diffsearch_blocks", None) is None
        runner = install_block_hooks(pipe.unet)
        check_blocks(plan, runner.names, type(pipe.unet).__name__)
        handle = pipe.unet.register_forward_pre_hook(_configure_hook(scheduler, runner, plan.evaluation_configs()))
    pipe._diffsearch_plan = _InstalledPlan(pipe.scheduler, handle, installed)
    pipe.scheduler = scheduler
    return scheduler


def _configure_hook(scheduler: USFScheduler, runner: Any, configs: tuple[Any, ...]):
    """A UNet forward pre-hook: configure the blocks for the scheduler's next evaluation."""
    from diffsearch.models.blocks import config_modes

    def hook(module: Any, args: Any) -> None:
        index = scheduler._cursor
        if index == 0:
            runner.reset()
        if index >= len(configs):
            raise DiffsearchError(f"apply_plan: the UNet ran more than the plan's {len(configs)} evaluations")
        runner.configure(config_modes(configs[index]))

    return hook


def remove_plan(pipe: Any) -> None:
    """Undo ``apply_plan``: the original scheduler, and the UNet without the plan's hooks."""
    from diffsearch.models.diffusers_adapter import remove_block_hooks

    installed = getattr(pipe, "_diffsearch_plan", None)
    if installed is None:
        raise DiffsearchError("remove_plan: this pipeline has no plan installed (apply_plan first)")
    if installed.handle is not None:
        installed.handle.remove()
        pipe.unet._diffsearch_blocks.reset()
        if installed.installed_hooks:
            remove_block_hooks(pipe.unet)
    pipe.scheduler = installed.scheduler
    del pipe._diffsearch_plan
