"""Searched block plans against DeepCache, uniform skipping and a shorter schedule at equal or lower MACs (digits).

For each space (``architecture``, ``timesteps+architecture``) and MACs budget: ``search run`` on digits at the
reference NFE with the default objective (``teacher_error``), then the exported plan and the best of each baseline
family the search evaluated first (DeepCache at every interval and depth that fits, the same blocks skipped at
every step, the full network on the longest schedule within the budget; best = lowest search-noise value) are
re-scored on the runner's held-out noise sets (seeds 1..``--final-seeds``, ``--final-samples`` each). Every
re-score reports its out-of-range share instead of failing on it (the search itself keeps the 1% gate), so each
baseline gets a value. The paired difference (plan - baseline) over the sets and the verdict: better or worse
only beyond twice the seed std (the larger of the two spreads over the sets), otherwise a tie.

    OMP_NUM_THREADS=1 python benchmarks/architecture_search.py --evals 40 --samples 500 --final-samples 1000 > /tmp/arch.md
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import diffsearch
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.evaluators.noise import heldout_seeds
from diffsearch.search import storage
from diffsearch.search.config import validate_config
from diffsearch.search.runner import paired_comparison, prepare

FAMILIES = ("deepcache", "skip", "shorter")


def heldout(run, candidate, seeds: list[int]) -> dict:
    """The objective and out-of-range share of one candidate on each held-out set (no out-of-range gate)."""
    plan = run.space.plan(candidate)
    results = [evaluate(run.model, plan, samples=run.final_samples, seed=seed, metrics=[run.metric], cache=run.cache,
                        max_out_of_range=1.0) for seed in seeds]
    values = [r[run.metric] for r in results]
    return {"values": values, "mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)),
            "out_of_range": max(r.get("out_of_range", math.nan) for r in results), "macs_ratio": run.space.cost(candidate)["macs_ratio"]}


def best_of_family(run, family: str):
    """The family's candidate with the lowest search-noise value (failed ones last, by label), or None."""
    records = [r for r in storage.history(run.study) if str(r.tags.get("label", "")).startswith(family + ":")]
    if not records:
        return None
    return min(records, key=lambda r: (r.value is None, r.value if r.value is not None else 0.0, r.tags["label"]))


def verdict(plan: dict, baseline: dict) -> str:
    std = max(plan["std"], baseline["std"])
    comparison = paired_comparison(plan["values"], baseline["values"], std)
    if comparison["beyond_two_std"]:
        return f"better by {100 * comparison['relative']:.1f}%"
    if comparison["mean_difference"] > 2.0 * std:
        return "worse"
    return "tie"


def one_budget(args, space: str, percent: int) -> list[dict]:
    """Search at ``percent``% MACs, then the plan and each baseline family on the held-out sets."""
    config = validate_config({"model": args.model, "space": space, "budget": f"{percent}%macs", "space_options": {"nfe": args.nfe},
                              "strategy": args.strategy, "evals": args.evals, "search_samples": args.samples,
                              "final_samples": args.final_samples, "final_seeds": args.final_seeds, "seed": args.seed,
                              "storage": f"sqlite:///{args.runs}/{space.replace('+', '-')}-{percent}.db",
                              "out": f"{args.runs}/{space.replace('+', '-')}-{percent}.json", "progress": False,
                              "cache": args.model == "digits"})
    started = time.perf_counter()
    try:
        result = diffsearch.run_search(config)
    except DiffsearchError as error:
        return [{"space": space, "budget": percent, "row": "searched", "error": str(error), "seconds": time.perf_counter() - started}]
    run, seeds = prepare(config), heldout_seeds(args.final_seeds)
    final = run.study.user_attrs["final"]
    best = next(row for row in final["rows"] if row["trial"] == final["best"])
    searched = heldout(run, best["candidate"], seeds)
    rows = [{"space": space, "budget": percent, "row": "searched", "label": best["label"] or f"trial {best['trial']}", **searched,
             "seconds": time.perf_counter() - started, "evaluations": storage.count_evaluations(run.study)["expensive"],
             "exported": json.loads(result.path.read_text())["schema_version"]}]
    for family in FAMILIES:
        record = best_of_family(run, family)
        if record is not None:
            baseline = heldout(run, record.candidate, seeds)
            same = record.number == best["trial"]
            rows.append({"space": space, "budget": percent, "row": family, "label": record.tags["label"], **baseline,
                         "search_failed": record.value is None, "verdict": "the same candidate" if same else verdict(searched, baseline)})
    return rows


def table(rows: list[dict], args) -> str:
    lines = [f"{args.model}, {args.nfe} NFE reference, objective teacher_error; search: {args.strategy}, {args.evals} evaluations x "
             f"{args.samples} samples (noise seed 0), strategy seed {args.seed}; held-out: {args.final_seeds} sets x "
             f"{args.final_samples} samples (seeds 1..{args.final_seeds}), mean +- std over the sets", "",
             "| space | budget | row | candidate | MACs | teacher_error | out of range (worst set) | searched vs it |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['space']} | {row['budget']}% | searched | - | - | {row['error']} | - | - |")
            continue
        note = " (failed the search's 1% gate)" if row.get("search_failed") else ""
        lines.append(f"| {row['space']} | {row['budget']}% | {row['row']} | {row['label']}{note} | {100 * row['macs_ratio']:.1f}% | "
                     f"{row['mean']:.4g} +- {row['std']:.2g} | {_share(row['out_of_range'])} | {row.get('verdict', '')} |")
    return "\n".join(lines)


def _share(value: float) -> str:
    return "- (no data range)" if math.isnan(value) else f"{100 * value:.1f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="digits", help="benchmarks/plugins/digits_unbounded.py:make: digits without the out-of-range gate")
    parser.add_argument("--spaces", nargs="+", default=["architecture", "timesteps+architecture"])
    parser.add_argument("--budgets", nargs="+", type=int, default=[40, 50, 60, 80])
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--evals", type=int, default=40)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--final-samples", type=int, default=1000)
    parser.add_argument("--final-seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="/tmp/architecture_search")
    parser.add_argument("--json", help="also write every row as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    Path(args.runs).mkdir(parents=True, exist_ok=True)
    rows = [row for space in args.spaces for percent in args.budgets for row in one_budget(args, space, percent)]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    print(table(rows, args))


if __name__ == "__main__":
    main()
