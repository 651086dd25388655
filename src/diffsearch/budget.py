"""Candidate budgets as users type them: ``10nfe``, ``60%macs``, ``4.5bits``, ``1.2MB`` / ``250kB`` (weight bytes)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

from diffsearch.errors import DiffsearchError

_PATTERN = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>nfe|%macs|bits|MB|kB)")
UNITS = ("nfe", "%macs", "bits", "MB", "kB")
EXAMPLES = {"nfe": "10nfe", "%macs": "60%macs", "bits": "4.5bits", "MB": "1.2MB", "kB": "250kB"}
BYTES_PER_UNIT = {"MB": 1_000_000, "kB": 1_000}  # decimal, as file sizes are reported
MAX_NFE = 1000  # one model call per train timestep of a 1000-step DDPM: more steps than that add nothing


class Budget(BaseModel):
    """A resource limit on each candidate: function evaluations, share of MACs, mean bits per weight or weight bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    value: float
    unit: Literal["nfe", "%macs", "bits", "MB", "kB"]

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
    if budget.unit == "bits" and not 2 <= budget.value <= 8:
        raise DiffsearchError(f"--budget {text!r}: a bits budget is a mean bitwidth from 2 to 8, e.g. 4.5bits")
    if budget.unit in BYTES_PER_UNIT and budget.value <= 0:
        raise DiffsearchError(f"--budget {text!r}: a weight-bytes budget must be positive, e.g. 1.2MB")
    return budget


def weight_bytes_budget(budget: Budget) -> int:
    """The bytes of a ``MB`` / ``kB`` budget (decimal units).

    Example:
        >>> weight_bytes_budget(parse_budget("1.2MB"))
        1200000
    """
    return round(budget.value * BYTES_PER_UNIT[budget.unit])


def nfe_budget(text: str) -> int:
    """The NFE of a ``Nnfe`` budget; other units are refused where only NFE makes sense."""
    return int(parse_budget(text, ("nfe",), "a solver schedule").value)
