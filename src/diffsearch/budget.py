"""Candidate budgets as users type them: ``10nfe``, ``60%macs``, ``4.5bits``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from diffsearch.errors import DiffsearchError

_PATTERN = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>nfe|%macs|bits)")
UNITS = ("nfe", "%macs", "bits")
EXAMPLES = {"nfe": "10nfe", "%macs": "60%macs", "bits": "4.5bits"}
MAX_NFE = 1000  # one model call per train timestep of a 1000-step DDPM: more steps than that add nothing


class Budget(BaseModel):
    """A resource limit on each candidate: function evaluations, share of MACs, or mean bits per weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float
    unit: Literal["nfe", "%macs", "bits"]

    def __str__(self) -> str:
        value = int(self.value) if self.value == int(self.value) else self.value
        return f"{value}{self.unit}"


def parse_budget(text: str, units: tuple[str, ...] = UNITS, where: str = "") -> Budget:
    """Parse ``10nfe`` / ``60%macs`` / ``4.5bits`` exactly (no spaces, lower case), in one of ``units``.

    NFE budgets are whole numbers from 1 to ``MAX_NFE``; ``where`` (e.g. "space timesteps") names
    who restricts ``units`` in the error.

    Example:
        >>> parse_budget("10nfe").value
        10.0
    """
    match = _PATTERN.fullmatch(text)
    hint = " or ".join(EXAMPLES[unit] for unit in units)
    if match is None:
        raise DiffsearchError(f"--budget {text!r} is not a budget; use e.g. {hint} (a number and its unit, no space)")
    if match["unit"] not in units:
        raise DiffsearchError(f"--budget {text!r}: {where or 'this command'} accepts only {', '.join(units)} budgets, e.g. {hint}")
    budget = Budget(value=float(match["value"]), unit=match["unit"])
    if budget.unit == "nfe" and (budget.value != int(budget.value) or not 1 <= budget.value <= MAX_NFE):
        raise DiffsearchError(f"--budget {text!r}: an NFE budget is a whole number from 1 to {MAX_NFE}, e.g. 10nfe")
    return budget


def nfe_budget(text: str) -> int:
    """The NFE of a ``Nnfe`` budget; other units are refused where only NFE makes sense."""
    return int(parse_budget(text, ("nfe",), "a solver schedule").value)
