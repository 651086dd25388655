"""The search-space contract: candidates are plain JSON dicts; a space samples, mutates, crosses,
encodes, decodes and costs them, and maps a fixed set of Optuna parameter names onto them."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from diffsearch.budget import Budget, parse_budget
from diffsearch.errors import DiffsearchError, validation_message
from diffsearch.models.denoiser import Denoiser
from diffsearch.registry import Registry
from diffsearch.solvers.plan import Plan, as_plan
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


def candidate_problem(error: Exception) -> str:
    """One line naming what is wrong in a candidate: the first pydantic error, a missing key, or the message."""
    from pydantic import ValidationError

    if isinstance(error, ValidationError):
        return validation_message(error)
    if isinstance(error, KeyError):
        return f"missing key {error.args[0]!r}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


class SearchSpace(ABC):
    """What a strategy needs from a space. Subclasses register under the name users type."""

    name: str = ""
    budget_units: tuple[str, ...] = ("nfe",)  # the budget units (``diffsearch.budget.UNITS``) this space accepts
    takes_solver: bool = False  # True: the run's ``solver`` setting (``--solver``) is the space's ``solver`` option
    #: the settings (``build_space``) the shared contract test (``diffsearch.testing.spaces``) builds this space with.
    example: dict[str, Any] = {"model": "gmm", "budget": "5nfe", "space_options": {}}

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
    def decode(self, candidate: Candidate) -> Plan | Schedule:
        """The plan (or, for schedule-only spaces, the schedule: the full network) the candidate runs as."""

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

    def plan(self, candidate: Candidate) -> Plan:
        """The sampling plan the candidate runs as (``decode`` through ``as_plan``)."""
        return as_plan(self.decode(candidate))

    def reference_nfe(self) -> int | None:
        """The NFE of the space's reference schedule, whose full-network MACs ``macs_ratio`` divides by (None: the candidate's own)."""
        return int(self.budget.value) if self.budget.unit == "nfe" else None

    def cost(self, candidate: Candidate) -> dict[str, float]:
        """Free statistics of the candidate's cost: ``nfe``, ``macs`` (one sample's whole run, measured per network
        configuration) and ``macs_ratio`` (over the full network on the space's reference schedule)."""
        from diffsearch.evaluators.cost import plan_cost

        plan = self.plan(candidate)
        cost = {"nfe": float(plan.nfe)}
        if self.model.data_shape is None:
            return cost
        measured = plan_cost(self.model, plan, reference_nfe=self.reference_nfe())
        return {**cost, "macs": measured["macs_per_sample"], "macs_ratio": measured["macs_ratio"]}

    def validate(self, candidate: Candidate) -> Candidate:
        """Raise DiffsearchError unless the candidate decodes and honours the budget exactly (one line, never
        pydantic's or a KeyError)."""
        try:
            nfe = self.decode(candidate).nfe
        except DiffsearchError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
            raise DiffsearchError(f"space {self.name}: invalid candidate ({candidate_problem(error)})") from None
        if self.budget.unit == "nfe" and nfe != int(self.budget.value):
            raise DiffsearchError(f"candidate costs {nfe} NFE; the budget is {self.budget}")
        return candidate

    def to_json(self, candidate: Candidate) -> str:
        return json.dumps(candidate, sort_keys=True)

    def from_json(self, text: str) -> Candidate:
        return self.validate(json.loads(text))


def build_space(model: Denoiser, settings: dict[str, Any]) -> SearchSpace:
    """The one function that turns settings (``space``, ``budget``, ``space_options``, ``solver``: ``RunConfig.space_settings``)
    into a space: the driver, Ray actors and Tune trainables all build theirs here."""
    space_class = SPACES.get(settings["space"])
    budget = parse_budget(settings["budget"], space_class.budget_units, f"space {settings['space']}")
    options = dict(settings.get("space_options") or {})
    if space_class.takes_solver and settings.get("solver") is not None:
        options.setdefault("solver", settings["solver"])
    if budget.unit != "nfe":  # the block spaces take their own min_nfe / max_nfe (steps under a MACs budget)
        return space_class(model, budget, **options)
    if options.get("min_nfe") is not None:  # several objectives: every NFE from min_nfe to the budget
        from diffsearch.spaces.nfe_range import NfeRangeSpace

        return NfeRangeSpace(space_class, model, budget, **options)
    options.pop("min_nfe", None)
    return space_class(model, budget, **options)
