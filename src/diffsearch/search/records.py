"""Values the search engine passes between its parts: trial records, strategy state, one resolved run.

The lowest module of ``diffsearch.search``: storage, strategies, executors and the runner import it;
it imports none of them (no import cycles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from diffsearch.models.denoiser import Denoiser
    from diffsearch.spaces.base import SearchSpace

Candidate = dict[str, Any]


class DeadlineReached(Exception):
    """The ``--time`` deadline stopped an evaluation of a proxy batch (the batch is not recorded; the search stops)."""


@dataclass(frozen=True)
class Record:
    """One finished or running trial as strategies see it."""

    number: int
    candidate: Candidate
    value: float | None  # the metric (the first objective)
    fingerprint: str
    tags: dict[str, Any]
    values: tuple[float, ...] | None = None  # every objective (the metric, then the costs) of a completed trial


class StudyState:
    """Key-value state a strategy keeps in the study (a dict in memory; Optuna user attrs on disk)."""

    def __init__(self, get: Callable[[str], Any], set_: Callable[[str, Any], None], claim: Callable[[str], bool] | None = None) -> None:
        self.get, self.set = get, set_
        self.claim = claim or (lambda key: True)  # True when this driver may build the work named ``key`` (claim-once)


@dataclass
class Run:
    """The pieces of one search, resolved from its config."""

    config: Any  # search.config.RunConfig (not imported: config validates strategy options, strategies import records)
    model: Denoiser
    space: SearchSpace
    strategy: Any
    study: Any
    metric: str
    search_samples: int
    final_samples: int
    cache: Any = None
    executor: Any = None
    lease: Any = None  # storage.Lease while the search loop holds the study
