"""Search spaces: candidates as plain JSON dicts (solver_schedule, timesteps, bitwidth, bitwidth_per_step, supernet, supernet_per_step, solver_schedule+supernet)."""

from __future__ import annotations

from diffsearch.spaces.base import SPACES, Candidate, SearchSpace, build_space, candidate_fingerprint
from diffsearch.spaces import architecture, bitwidth, solver_schedule, supernet, timesteps  # noqa: F401  (registers the built-in spaces)
from diffsearch.spaces.nfe_range import NfeRangeSpace

__all__ = ["SPACES", "Candidate", "NfeRangeSpace", "SearchSpace", "build_space", "candidate_fingerprint"]
