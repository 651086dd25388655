"""digits without a declared data range: no sample is out of range, so no candidate fails the search's 1% gate.

The architecture benchmark uses it to score plans below the budgets where every candidate of the default
model fails that gate (``benchmarks/architecture_search.py --model benchmarks/plugins/digits_unbounded.py:make``).
Its evaluations must not share digits' evaluation cache (a result that digits fails would be served as passing):
the benchmark turns the cache off for any model but ``digits``.
"""

from __future__ import annotations

from diffsearch.models.digits import build_digits


def make():
    model = build_digits()
    model.data_range = None  # same network, name and fingerprint: digits' teacher is its teacher
    return model
