"""The search-space contract: candidates are plain JSON dicts; a space samples, mutates, crosses,
encodes, decodes and costs them, and maps a fixed set of Optuna parameter names onto them."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from diffsearch.budget import Budget
from diffsearch.errors import DiffsearchError
from diffsearch.models.denoiser import Denoiser
from diffsearch.registry import Registry
from diffsearch.solvers.schedule import Schedule

Candidate = dict[str, Any]
SPACES: Registry[type["SearchSpace"]] = Registry("space")


def candidate_fingerprint(candidate: Candidate) -> str:
    """A canonical hash of a candidate (floats rounded to 12 significant digits)."""
    canonical = json.dumps(_rounded(candidate), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def _rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(item) for item in value]
    return value


class SearchSpace(ABC):
    """What a strategy needs from a space. Subclasses register under the name users type."""

    name: str = ""
    budget_units: tuple[str, ...] = ("nfe",)  # the budget units (``diffsearch.budget.UNITS``) this space accepts

    def __init__(self, model: Denoiser, budget: Budget, **options: Any) -> None:
        self.model = model
        self.budget = budget
        self.options = options

    @abstractmethod
    def initial(self) -> list[tuple[str, Candidate]]:
        """Known-good (label, candidate) pairs at this budget (the presets); evaluated first."""

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Candidate:
        """A random valid candidate within the budget."""

    @abstractmethod
    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """A valid neighbour of ``candidate`` within the budget."""

    @abstractmethod
    def crossover(self, first: Candidate, second: Candidate, rng: np.random.Generator) -> Candidate:
        """A valid child mixing two parents."""

    @abstractmethod
    def encode(self, candidate: Candidate) -> np.ndarray:
        """A fixed-length float feature vector (shared with predictors)."""

    @abstractmethod
    def decode(self, candidate: Candidate) -> Schedule:
        """The schedule the candidate runs as."""

    @abstractmethod
    def distributions(self) -> dict[str, Any]:
        """Optuna distributions under a fixed set of parameter names."""

    @abstractmethod
    def from_params(self, params: dict[str, Any]) -> Candidate:
        """The candidate for a full assignment of ``distributions()``."""

    def from_schedule(self, schedule: Schedule) -> Candidate:
        """The candidate that decodes to ``schedule`` (used to bring refined schedules back into the space)."""
        raise DiffsearchError(f"space {self.name!r} cannot take a schedule back as a candidate")

    def anchor_spacings(self) -> tuple[str, ...]:
        """The optimised spacings (``space_options: {anchor_spacings: [gits, dmn, ld3]}``) whose presets join ``initial``."""
        from diffsearch.solvers.timesteps import OPTIMISED_SPACINGS

        names = tuple(self.options.get("anchor_spacings", ()))
        for name in names:
            OPTIMISED_SPACINGS.get(name)
        return names

    def cost(self, candidate: Candidate) -> dict[str, float]:
        """Free statistics of the candidate's cost: NFE, MACs of one sample's whole run (full network at every
        evaluation) and ``macs_ratio`` over the full network on the space's reference schedule (the budget's NFE)."""
        from diffsearch.evaluators.cost import macs_per_call

        nfe = self.decode(candidate).nfe
        return {"nfe": float(nfe), "macs": nfe * macs_per_call(self.model), "macs_ratio": 1.0}

    def validate(self, candidate: Candidate) -> Candidate:
        """Raise DiffsearchError unless the candidate decodes and honours the budget exactly."""
        nfe = self.decode(candidate).nfe
        if self.budget.unit == "nfe" and nfe != int(self.budget.value):
            raise DiffsearchError(f"candidate costs {nfe} NFE; the budget is {self.budget}")
        return candidate

    def to_json(self, candidate: Candidate) -> str:
        return json.dumps(candidate, sort_keys=True)

    def from_json(self, text: str) -> Candidate:
        return self.validate(json.loads(text))
