"""Several objectives: their names, each trial's objective vector, and the Pareto kernels of NSGA-II
(Deb, Pratap, Agarwal & Meyarivan 2002: fast non-dominated sorting and crowding distance), all minimised."""

from __future__ import annotations

from typing import Any

import numpy as np

from diffsearch.errors import DiffsearchError

#: the costs a Pareto search may trade the metric against: MACs of one sample's whole run, measured
#: sampling seconds per sample (the search evaluation's own wall clock), network evaluations.
COSTS = ("macs", "seconds", "nfe")
MAX_COSTS = 2


def check_objective_names(objectives: list[str]) -> list[str]:
    """``[METRIC, COST[, COST]]`` checked without imports: the first is a metric, the rest distinct costs."""
    if not objectives:
        raise ValueError("objectives name no metric; give one, then up to two costs, e.g. teacher_error,nfe")
    metric, costs = objectives[0], objectives[1:]
    if metric in COSTS:
        raise ValueError(f"the first objective is the quality metric, not the cost {metric!r} (e.g. teacher_error,{metric})")
    unknown = [name for name in costs if name not in COSTS]
    if unknown:
        raise ValueError(f"unknown cost {unknown[0]!r} in objectives; valid costs: {', '.join(COSTS)} (after one metric)")
    if len(set(costs)) != len(costs) or len(costs) > MAX_COSTS:
        raise ValueError(f"objectives take one metric and at most {MAX_COSTS} distinct costs ({', '.join(COSTS)}), e.g. teacher_error,macs")
    return list(objectives)


def objective_values(objectives: list[str], result: dict[str, Any], cost: dict[str, float]) -> list[float]:
    """The minimised vector of one evaluation: the metric from its result, then each cost (``seconds`` measured)."""
    values = [result.get(objectives[0])]
    for name in objectives[1:]:
        values.append(result.get("seconds_per_sample") if name == "seconds" else cost.get(name))
    return [float("nan") if value is None else float(value) for value in values]


def dominates(first: np.ndarray, second: np.ndarray) -> bool:
    """Pareto dominance (minimisation): no worse in every objective and better in one."""
    return bool(np.all(first <= second) and np.any(first < second))


def non_dominated_ranks(values: np.ndarray) -> np.ndarray:
    """Fast non-dominated sorting (Deb et al. 2002, Alg. 1): front index of each row, 0 = the Pareto front."""
    values = np.asarray(values, dtype=np.float64)
    count = len(values)
    if count == 0:
        return np.zeros(0, dtype=int)
    no_worse = np.all(values[:, None, :] <= values[None, :, :], axis=2)
    better = np.any(values[:, None, :] < values[None, :, :], axis=2)
    dominated_by = (no_worse & better).T  # [i, j]: j dominates i
    remaining = dominated_by.sum(axis=1)
    ranks, front, rank = np.full(count, -1), np.flatnonzero(remaining == 0), 0
    while front.size:
        ranks[front] = rank
        remaining = remaining - dominated_by[:, front].sum(axis=1)
        remaining[ranks >= 0] = -1
        front, rank = np.flatnonzero(remaining == 0), rank + 1
    return ranks


def crowding_distance(values: np.ndarray) -> np.ndarray:
    """Crowding distance within one front (Deb et al. 2002, Alg. 3): boundary points infinite,
    interior ones the sum over objectives of the normalised gap between their two neighbours."""
    values = np.asarray(values, dtype=np.float64)
    count, distance = len(values), np.zeros(len(values))
    if count <= 2:
        return np.full(count, np.inf)
    for column in values.T:
        order = np.argsort(column, kind="stable")
        span = column[order[-1]] - column[order[0]]
        distance[order[0]] = distance[order[-1]] = np.inf
        if span > 0:
            distance[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return distance


def nsga2_order(values: np.ndarray) -> list[int]:
    """Rows best first by the crowded comparison: lower front, then larger crowding distance (NSGA-II selection)."""
    ranks = non_dominated_ranks(values)
    crowding = np.zeros(len(values))
    for rank in np.unique(ranks):
        members = np.flatnonzero(ranks == rank)
        crowding[members] = crowding_distance(values[members])
    return sorted(range(len(values)), key=lambda i: (ranks[i], -crowding[i], i))


def pareto_indices(values: np.ndarray) -> list[int]:
    """Rows on the Pareto front (rows with a non-finite objective excluded), sorted by the first cost."""
    values = np.asarray(values, dtype=np.float64)
    finite = [i for i in range(len(values)) if np.all(np.isfinite(values[i]))]
    if not finite:
        return []
    ranks = non_dominated_ranks(values[finite])
    front = [finite[i] for i in np.flatnonzero(ranks == 0)]
    return sorted(front, key=lambda i: (tuple(values[i][1:]), values[i][0]))


def spread(indices: list[int], bound: int) -> list[int]:
    """At most ``bound`` of ``indices`` (sorted by cost), evenly spaced, both ends kept."""
    if len(indices) <= bound:
        return list(indices)
    picks = np.unique(np.round(np.linspace(0, len(indices) - 1, bound)).astype(int))
    return [indices[i] for i in picks]


def best_within(members: list[dict[str, Any]], key: str, limit: float, metric: str) -> dict[str, Any]:
    """The member with the lowest held-out ``metric`` whose ``costs[key]`` is at most ``limit``; a one-line
    error naming the cheapest available cost when none fits."""
    fitting = [m for m in members if m["costs"].get(key) is not None and m["costs"][key] <= limit * (1 + 1e-9)]
    if not fitting:
        available = [m["costs"][key] for m in members if m["costs"].get(key) is not None]
        if not available:
            raise DiffsearchError(f"--budget: the stored front records no {key} cost")
        raise DiffsearchError(f"--budget: no plan of the front costs at most {_format_cost(key, limit)}; "
                              f"the cheapest costs {_format_cost(key, min(available))}")
    return min(fitting, key=lambda m: (m["heldout"][metric], m["costs"][key]))


def _format_cost(key: str, value: float) -> str:
    return f"{100 * value:.4g}%macs" if key == "macs_ratio" else f"{value:.4g}{key}"


def search_front(history: list[Any], bound: int) -> tuple[list[Any], list[Any]]:
    """The search-noise front of distinct completed records (at most ``bound``, spread over the cost) and the
    baselines: the best preset at each cost (costs other than the measured ``seconds``; only ``seconds``: the presets' front)."""
    records = list({r.fingerprint: r for r in history if r.values is not None and all(np.isfinite(r.values))}.values())
    if not records:
        return [], []
    values = np.asarray([r.values for r in records])
    front = [records[i] for i in spread(pareto_indices(values), bound)]
    presets = [r for r in records if r.tags.get("origin") == "initial"]
    return front, _best_presets(presets, bound)


def _best_presets(presets: list[Any], bound: int) -> list[Any]:
    if not presets:
        return []
    values = np.asarray([r.values for r in presets])
    if values.shape[1] == 1:
        return [presets[int(np.argmin(values[:, 0]))]]
    groups: dict[tuple[float, ...], Any] = {}
    for record in presets:
        key = tuple(round(v, 9) for v in record.values[1:])
        if key not in groups or record.values[0] < groups[key].values[0]:
            groups[key] = record
    chosen = sorted(groups.values(), key=lambda r: tuple(r.values[1:]))
    if len(chosen) > bound:  # a measured cost: every preset costs its own; keep the presets' own front
        chosen = [presets[i] for i in spread(pareto_indices(values), bound)]
    return chosen


def heldout_vector(row: dict[str, Any], objectives: list[str]) -> list[float]:
    """A re-scored member's held-out metric mean and its costs, in the order of ``objectives``."""
    return [row["heldout"][objectives[0]], *(row["costs"][name] for name in objectives[1:])]


def heldout_front(rows: list[dict[str, Any]], objectives: list[str]) -> list[dict[str, Any]]:
    """``rows`` with measured ``seconds`` (mean over the held-out sets) in their costs and ``heldout_front`` flags."""
    for row in rows:
        seconds = [r.get("seconds_per_sample") for r in row["heldout"].get("per_seed", []) if r.get("seconds_per_sample") is not None]
        row["costs"] = {**row["costs"], "seconds": float(np.mean(seconds)) if seconds else None}
    on_front = set(pareto_indices(np.asarray([heldout_vector(row, objectives) for row in rows], dtype=np.float64))) if rows else set()
    return [{**row, "heldout_front": i in on_front} for i, row in enumerate(rows)]


def against_front(preset: dict[str, Any], rows: list[dict[str, Any]], objectives: list[str], noise_std: float, compare) -> dict[str, Any]:
    """The preset against the best searched member at equal or lower cost in every cost objective, paired on held-out noise."""
    costs = objectives[1:]
    cheaper = [row for row in rows if not row["preset"] and all(row["costs"][c] <= preset["costs"][c] * (1 + 1e-9) for c in costs)]
    entry = {"preset": preset["trial"], "label": preset["label"], "costs": {c: preset["costs"][c] for c in costs}, "member": None}
    if not cheaper:
        return entry
    member = min(cheaper, key=lambda row: row["heldout"][objectives[0]])
    std = max(noise_std, preset["heldout"]["std"])
    return {**entry, "member": member["trial"], "member_costs": {c: member["costs"][c] for c in costs},
            **compare(member["heldout"]["values"], preset["heldout"]["values"], std)}
