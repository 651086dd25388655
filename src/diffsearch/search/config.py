"""The run configuration: YAML or CLI flags, validated by pydantic (unknown keys rejected)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from diffsearch.errors import DiffsearchError

DEFAULT_MODEL = "digits"
RUN_LENGTH_FIELDS = ("evals", "time", "out", "final_samples", "final_top", "final_seeds", "final_front", "refine", "storage", "progress", "cache",
                     "executor", "workers", "gpus_per_worker", "ray_address", "max_retries", "device",
                     "max_attempts", "eval_timeout", "join")
MAX_CONFIG_BYTES = 1_000_000


class RunConfig(BaseModel):
    """Everything one search needs. Fields that only say how long to run may change on resume."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(DEFAULT_MODEL, description="model spec: registered name, diffusers:<dir>, module:factory")
    space: str = Field("solver_schedule", description="search space (`search spaces`)")
    budget: str = Field("10nfe", description="candidate budget, e.g. 10nfe")
    strategy: str = Field("s3", description="random, evolution, s3, tpe, gp, nsga2 (several objectives: default evolution)")
    evals: int | None = Field(120, ge=1, description="expensive evaluations in total (across resumes)")
    time: str | None = Field(None, description="wall-clock limit of this invocation, e.g. 30m, 90s, 1h")
    metric: str | None = Field(None, description="objective metric; default: the model's first metric")
    objectives: list[str] | None = Field(None, description="a Pareto search: METRIC,COST[,COST] with costs macs, seconds, nfe "
                                         "(e.g. teacher_error,nfe); an NFE budget becomes an upper bound; None: one objective, the metric")
    final_front: int = Field(12, ge=2, le=200, description="several objectives: front members (evenly spread over the cost) re-scored on held-out noise")
    search_samples: int | None = Field(None, ge=2, description="samples per search evaluation (model default)")
    final_samples: int | None = Field(None, ge=2, description="held-out samples in the final stage (model default)")
    final_top: int = Field(3, ge=1, description="candidates re-scored on held-out noise")
    final_seeds: int = Field(3, ge=1, le=20, description="held-out noise sets of the final stage (paired comparison, mean and 95% interval)")
    features: str | None = Field(None, description="feature space of fd_teacher / kid_teacher / fid / kid (raw, digits, digits_multi, inception); default per model and metric")
    refine: bool = Field(False, description="gradient-refine the searched finalists (LD3 loss, same NFE); kept only if better on search noise")
    seed: int = Field(0, description="seed of the strategy")
    guidance: float | None = Field(None, description="classifier-free guidance scale")
    reference: str | None = Field(None, description="real data for FID/KID (.npy/.npz samples or mu/sigma .npz)")
    solver: str = Field("dpmpp_2m", description="fixed solver of the timesteps space")
    study: str | None = Field(None, description="study name; default derived from the config")
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite in runs/")
    out: str | None = Field(None, description="where to write the best schedule; default runs/<study>/best.json")
    predictor: str = Field("ensemble", description="s3 only: predictor gating the expensive evaluations (mlp, xgboost, gp, ensemble)")
    gating: bool = Field(True, description="s3 only: proxy cascade + kill switch; false = predictor top-k only")
    strategy_options: dict[str, Any] = Field(default_factory=dict, description="strategy knobs (s3: top_k, explore, proxy_fraction, proxy_samples, ...)")
    space_options: dict[str, Any] = Field(default_factory=dict)
    progress: bool = True
    cache: bool = Field(True, description="reuse evaluations from the on-disk evaluation cache")
    executor: Literal["inline", "ray"] = Field("inline", description="where evaluations run: inline (driver) or ray actors")
    workers: int = Field(1, ge=1, description="parallel evaluations (ray executor: evaluator actors)")
    gpus_per_worker: float = Field(0.0, ge=0, description="GPUs each Ray evaluator actor reserves")
    ray_address: str | None = Field(None, description="Ray cluster to join (auto, ray://host:port); default: embedded local cluster")
    max_retries: int = Field(2, ge=0, description="re-evaluations on a fresh actor after an evaluator died")
    max_attempts: int = Field(2, ge=1, le=100, description="runs killed while evaluating one candidate before it becomes a failed trial")
    join: bool = Field(False, description="share a study another live driver is running (default: refuse, naming the holder)")
    eval_timeout: str | None = Field(None, description="longest one evaluation may run (90s, 5m); default: 10x the slowest of the first evaluations, at least 60s")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="where the model runs, in the driver and in each worker: auto (cuda if visible), cpu, cuda, cuda:N, mps")

    @field_validator("study")
    @classmethod
    def _study(cls, value: str | None) -> str | None:
        return None if value is None else validate_study_name(value)

    @field_validator("time", "eval_timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value


    @model_validator(mode="before")
    @classmethod
    def _predictor_into_s3_options(cls, data: Any) -> Any:
        """Hand ``predictor``, ``gating`` (and a proxy sample count below ``search_samples``) to s3 via ``strategy_options``;
        with several objectives and no strategy named, the strategy is ``evolution`` (NSGA-II selection; s3 ranks one value)."""
        objectives = data.get("objectives") if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("strategy") is None and len(objectives.split(",") if isinstance(objectives, str) else objectives or ()) > 1:
            data = {**data, "strategy": "evolution"}
        if isinstance(data, dict) and data.get("strategy", "s3") == "s3":
            options = dict(data.get("strategy_options") or {})
            options.setdefault("predictor", data.get("predictor", "ensemble"))
            options.setdefault("gating", data.get("gating", True))
            if data.get("search_samples"):  # the proxy stays a small fraction of an expensive evaluation
                options.setdefault("proxy_samples", max(32, int(data["search_samples"]) // 8))
            data = {**data, "strategy_options": options}
        return data

    @field_validator("objectives", mode="before")
    @classmethod
    def _objective_list(cls, value: Any) -> Any:
        return [name.strip() for name in value.split(",")] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _several_objectives(self) -> RunConfig:
        """Objectives named as METRIC,COST[,COST], agreeing with ``metric``, with a strategy that keeps a front."""
        from diffsearch.search.pareto import check_objective_names

        if self.objectives is None:
            if (self.space_options or {}).get("min_nfe") is not None:
                raise ValueError("space option min_nfe needs several objectives (e.g. --objectives teacher_error,nfe)")
            return self
        check_objective_names(self.objectives)
        if self.metric is not None and self.metric != self.objectives[0]:
            raise ValueError(f"metric {self.metric} and objectives {','.join(self.objectives)} disagree; name the metric once, first in objectives")
        from diffsearch.search.strategies import STRATEGIES

        if self.pareto and self.refine:
            raise ValueError("refine keeps a finalist only if its one metric improves; it does not run with several objectives")
        if self.pareto and self.strategy in STRATEGIES and not STRATEGIES.get(self.strategy).several_objectives:
            several = ", ".join(name for name in STRATEGIES if STRATEGIES.get(name).several_objectives)
            raise ValueError(f"strategy {self.strategy} searches one objective; with several objectives use {several}")
        return self

    @property
    def pareto(self) -> bool:
        """True for a search over several objectives (a Pareto front)."""
        return self.objectives is not None and len(self.objectives) > 1

    def objective_metric(self) -> str | None:
        """The metric the search optimises, when the config names one."""
        return self.objectives[0] if self.objectives else self.metric

    @model_validator(mode="after")
    def _parallel_needs_ray(self) -> RunConfig:
        if self.executor == "inline" and (self.workers > 1 or self.gpus_per_worker or self.ray_address):
            raise ValueError("workers > 1, gpus_per_worker and ray_address need executor: ray (--executor ray)")
        return self

    @model_validator(mode="after")
    def _typed_strategy_options(self) -> RunConfig:
        from diffsearch.search.strategies import STRATEGIES, validate_strategy_options

        if self.strategy in STRATEGIES:  # an unknown name is reported, with the valid ones, when it is resolved
            validate_strategy_options(self.strategy, self.strategy_options)
        return self

    def study_name(self) -> str:
        if self.study:
            return self.study
        model = re.sub(r"\.\.+", "_", re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model))[-64:]
        solver = f"-{self.solver}" if self.space == "timesteps" else ""
        budget = self.budget.replace("%", "pct")  # study names are file names: no % or +
        objectives = "-" + "-".join(self.objectives) if self.pareto else ""
        return validate_study_name(f"{self.space.replace('+', '-')}{solver}-{budget}-{model}-{self.strategy}{objectives}-seed{self.seed}")

    def space_settings(self) -> dict[str, Any]:
        """What ``spaces.base.build_space`` needs (JSON: it travels to Ray actors and Tune trainables). With several
        objectives an NFE budget is an upper bound: ``min_nfe`` (default half the budget) makes the space an NFE range."""
        options = dict(self.space_options)
        if self.pareto and self.budget.endswith("nfe") and options.get("min_nfe") is None:
            from diffsearch.budget import nfe_budget
            from diffsearch.spaces.nfe_range import default_min_nfe

            options["min_nfe"] = default_min_nfe(nfe_budget(self.budget))
        return {"space": self.space, "budget": self.budget, "space_options": options, "solver": self.solver}

    def identity(self) -> dict[str, Any]:
        """The fields that define the search (a resumed study must agree on them; one objective: as before objectives existed)."""
        return self.model_dump(mode="json", exclude=set(RUN_LENGTH_FIELDS) | {"study"} | ({"objectives"} if self.objectives is None else set()))


STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def validate_study_name(name: str) -> str:
    """``name`` if it is a safe study name (it becomes a file name under runs/); DiffsearchError otherwise."""
    if not isinstance(name, str) or not STUDY_NAME.fullmatch(name) or ".." in name:
        raise DiffsearchError(f"study name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
                              "starting with a letter or digit, without '..'")
    return name


def parse_duration(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``1.5h``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh])\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration; use e.g. 90s, 30m or 1h")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def load_config(path: str | None, overrides: dict[str, Any]) -> RunConfig:
    """A RunConfig from an optional YAML file, with CLI overrides (None means not given)."""
    data: dict[str, Any] = {}
    if path:
        import yaml

        data = read_yaml(Path(path))
    data.update({key: value for key, value in overrides.items() if value is not None})
    return validate_config(data)


def validate_config(data: dict[str, Any]) -> RunConfig:
    """A RunConfig from a mapping; a bad value is one DiffsearchError line naming the key."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise DiffsearchError(f"config {where}: {message}" if where else f"config: {message}") from None


def read_yaml(file: Path) -> dict[str, Any]:
    """A run config mapping from YAML: safe tags only, no aliases (no alias bombs), at most 1 MB."""
    import yaml

    if not file.is_file():
        raise DiffsearchError(f"--config {file}: no such file")
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise DiffsearchError(f"--config {file}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.load(file.read_text(), Loader=_no_alias_loader()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        raise DiffsearchError(f"--config {file}: not a plain YAML mapping ({problem}{f' at line {mark.line + 1}' if mark else ''})") from None
    if not isinstance(data, dict):
        raise DiffsearchError(f"--config {file}: expected a mapping of run settings")
    return data


def _no_alias_loader():
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """SafeLoader that refuses anchors and aliases (``&a`` / ``*a``): configs never need them."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed in a run config", event.start_mark)
            return super().compose_node(parent, index)

    return NoAliasLoader
