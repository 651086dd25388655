"""The held-out front of a Pareto search against the best preset at each cost, as a markdown table.

Usage: python benchmarks/pareto_table.py runs/<study>/best.json

Reads the artifact's ``metrics.pareto`` (written by ``search run --objectives METRIC,COST``): for every
re-scored preset, the best searched member at the same or lower cost and the paired comparison over the
held-out noise sets (mean difference, 95% interval, whether it is beyond twice the seed std).
"""

from __future__ import annotations

import json
import sys


def table(artifact: dict) -> str:
    """Markdown rows: cost, preset mean +- std, searched member mean +- std, paired difference, verdict."""
    pareto, metric = artifact["metrics"]["pareto"], artifact["metrics"]["objective"]
    members = {m["trial"]: m for m in pareto["members"]}
    costs = pareto["objectives"][1:]
    lines = [f"| {' | '.join(costs)} | best preset | preset {metric} | searched member ({', '.join(costs)}) | searched {metric} | "
             "paired difference [95% interval] | verdict |", "|" + "---|" * (len(costs) + 6)]
    for comparison in sorted(pareto["comparisons"], key=lambda c: tuple(c["costs"].values())):
        preset = members[comparison["preset"]]
        cells = [f"{comparison['costs'][c]:.4g}" for c in costs] + [comparison["label"], _mean(preset, metric)]
        if comparison["member"] is None:
            cells += ["none at this cost or below", "", "", "no searched member to compare"]
        else:
            member, (low, high) = members[comparison["member"]], comparison["interval95"]
            verdict = "searched better beyond 2 seed std" if comparison["beyond_two_std"] else "tie (within 2 seed std)"
            cells += [", ".join(f"{member['costs'][c]:.4g}" for c in costs), _mean(member, metric),
                      f"{comparison['mean_difference']:+.4g} [{low:+.4g}, {high:+.4g}]", verdict]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _mean(member: dict, metric: str) -> str:
    return f"{member['heldout'][metric]:.4g} +- {member['heldout']['std']:.2g}"


if __name__ == "__main__":
    with open(sys.argv[1]) as handle:
        print(table(json.load(handle)))
