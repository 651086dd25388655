"""Candidate budgets as users type them: ``10nfe``, ``60%macs``, ``4.5bits``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from diffsearch.errors import DiffsearchError

_PATTERN = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>nfe|%macs|bits)\s*$", re.IGNORECASE)


class Budget(BaseModel):
    """A resource limit on each candidate: function evaluations, share of MACs, or mean bits per weight."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float
    unit: Literal["nfe", "%macs", "bits"]

    def __str__(self) -> str:
        value = int(self.value) if self.value == int(self.value) else self.value
        return f"{value}{self.unit}"


def parse_budget(text: str) -> Budget:
    """Parse ``10nfe`` / ``60%macs`` / ``4.5bits``.

    Example:
        >>> parse_budget("10nfe").value
        10.0
    """
    match = _PATTERN.match(text)
    if match is None:
        raise DiffsearchError(f"--budget {text!r} is not a budget; use e.g. 10nfe, 60%macs or 4.5bits")
    budget = Budget(value=float(match["value"]), unit=match["unit"].lower())
    if budget.unit == "nfe" and (budget.value != int(budget.value) or budget.value < 1):
        raise DiffsearchError(f"--budget {text!r}: an NFE budget is a whole number >= 1, e.g. 10nfe")
    return budget


def nfe_budget(text: str) -> int:
    """The NFE of a ``Nnfe`` budget; other units are refused where only NFE makes sense."""
    budget = parse_budget(text)
    if budget.unit != "nfe":
        raise DiffsearchError(f"--budget {text!r}: solver schedules take an NFE budget, e.g. 10nfe")
    return int(budget.value)
