"""Search spaces: candidates as plain JSON dicts (solver_schedule, timesteps, supernet, supernet_per_step, solver_schedule+supernet)."""

from __future__ import annotations

from diffsearch.spaces.base import SPACES, Candidate, SearchSpace, candidate_fingerprint
from diffsearch.spaces import solver_schedule, supernet, timesteps  # noqa: F401  (registers the built-in spaces)

__all__ = ["SPACES", "Candidate", "SearchSpace", "candidate_fingerprint"]
