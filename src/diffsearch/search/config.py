"""The run configuration: YAML or CLI flags, validated by pydantic (unknown keys rejected)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from diffsearch.errors import DiffsearchError

DEFAULT_MODEL = "digits"
RUN_LENGTH_FIELDS = ("evals", "time", "out", "final_samples", "final_top", "storage", "progress", "cache")


class RunConfig(BaseModel):
    """Everything one search needs. Fields that only say how long to run may change on resume."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(DEFAULT_MODEL, description="model spec: registered name, diffusers:<dir>, module:factory")
    space: str = Field("solver_schedule", description="search space (`search spaces`)")
    budget: str = Field("10nfe", description="candidate budget, e.g. 10nfe")
    strategy: str = Field("s3", description="random, evolution, s3, tpe, gp, nsga2")
    evals: int | None = Field(120, ge=1, description="expensive evaluations in total (across resumes)")
    time: str | None = Field(None, description="wall-clock limit of this invocation, e.g. 30m, 90s, 1h")
    metric: str | None = Field(None, description="objective metric; default: the model's first metric")
    search_samples: int | None = Field(None, ge=2, description="samples per search evaluation (model default)")
    final_samples: int | None = Field(None, ge=2, description="held-out samples in the final stage (model default)")
    final_top: int = Field(3, ge=1, description="candidates re-scored on held-out noise")
    seed: int = Field(0, description="seed of the strategy")
    guidance: float | None = Field(None, description="classifier-free guidance scale")
    reference: str | None = Field(None, description="real data for FID/KID (.npy/.npz samples or mu/sigma .npz)")
    solver: str = Field("dpmpp_2m", description="fixed solver of the timesteps space")
    study: str | None = Field(None, description="study name; default derived from the config")
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite in runs/")
    out: str | None = Field(None, description="where to write the best schedule; default runs/<study>/best.json")
    strategy_options: dict[str, Any] = Field(default_factory=dict)
    space_options: dict[str, Any] = Field(default_factory=dict)
    progress: bool = True
    cache: bool = Field(True, description="reuse evaluations from the on-disk evaluation cache")

    @field_validator("time")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    def study_name(self) -> str:
        if self.study:
            return self.study
        model = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.model)
        solver = f"-{self.solver}" if self.space == "timesteps" else ""
        return f"{self.space}{solver}-{self.budget}-{model}-{self.strategy}-seed{self.seed}"

    def identity(self) -> dict[str, Any]:
        """The fields that define the search (a resumed study must agree on them)."""
        return self.model_dump(mode="json", exclude=set(RUN_LENGTH_FIELDS) | {"study"})


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

        file = Path(path)
        if not file.is_file():
            raise DiffsearchError(f"--config {path}: no such file")
        data = yaml.safe_load(file.read_text()) or {}
        if not isinstance(data, dict):
            raise DiffsearchError(f"--config {path}: expected a mapping of run settings")
    data.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return RunConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise DiffsearchError(f"config {where}: {first['msg']}") from None
