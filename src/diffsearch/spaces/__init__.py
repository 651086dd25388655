"""Search spaces: candidates as plain JSON dicts (solver_schedule, timesteps)."""

from __future__ import annotations

from diffsearch.spaces.base import SPACES, Candidate, SearchSpace, candidate_fingerprint
from diffsearch.spaces import architecture, solver_schedule, timesteps  # noqa: F401  (registers the built-in spaces)

__all__ = ["SPACES", "Candidate", "SearchSpace", "candidate_fingerprint"]
