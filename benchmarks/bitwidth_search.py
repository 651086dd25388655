"""Mixed-precision search on digits at 10 NFE: held-out quality against mean bits, searched vs uniform vs ILP.

For each mean-bits budget, ``search run --space bitwidth`` (the runner, its final stage on held-out
noise sets 1..final_seeds) finds an allocation; the uniform allocations that fit (8 / 6 / 4 bits, or
the largest that fits) and the HAWQ-V3 ILP allocation are scored on the same held-out sets by the same
``evaluate`` call, and the searched allocation is compared with each, paired, against twice the seed
std (the larger of the metric's floor std and the baseline's own spread over the sets). Full
precision on the same schedule is scored on the same sets. ``--joint`` adds ``solver_schedule+bitwidth``
at ``--joint-budget`` against the best full-precision schedule of a ``solver_schedule`` search run
with the searched bits of the ``bitwidth`` search at that budget.

    OMP_NUM_THREADS=1 python benchmarks/bitwidth_search.py --budgets 2.5,3,4,6 --evals 40 --samples 500 --final-samples 500
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch


ERRORS: dict[str, str] = {}


def heldout(model, plan, samples: int, seeds: list[int], metric: str) -> list[float]:
    """The metric of ``plan`` on each held-out noise set (the runner's final-stage evaluation); NaN where it failed."""
    from diffsearch.evaluators.evaluate import evaluate

    values = []
    for seed in seeds:
        result = evaluate(model, plan, samples=samples, seed=seed, metrics=[metric])
        values.append(float(result[metric]) if result.get("status") == "ok" else float("nan"))
        if result.get("status") != "ok":
            ERRORS[plan.fingerprint] = result.get("error", "failed")
    return values


def search(space: str, budget: str, args, workdir: Path, **space_options: Any) -> dict[str, Any]:
    """One ``run_search``; returns its final stage (rows with per-seed held-out values) and the best candidate."""
    import optuna

    import diffsearch

    study = f"{space.replace('+', '-')}-{budget}"
    config = {"model": "digits", "space": space, "budget": budget, "strategy": args.strategy, "evals": args.evals,
              "search_samples": args.samples, "final_samples": args.final_samples, "final_seeds": args.final_seeds,
              "seed": args.seed, "study": study, "storage": f"sqlite:///{workdir}/{study}.db", "out": str(workdir / f"{study}.json"),
              "progress": False, "space_options": {key: value for key, value in {"nfe": args.nfe, **space_options}.items() if value is not None}}
    started = time.perf_counter()
    diffsearch.run_search(config)
    final = optuna.load_study(study_name=study, storage=config["storage"]).user_attrs["final"]
    best = next(row for row in final["rows"] if row["trial"] == final["best"])
    return {"final": final, "best": best, "seconds": time.perf_counter() - started}


def compare(searched: list[float], baseline: list[float], floor_std: float) -> dict[str, Any]:
    from diffsearch.search.runner import paired_comparison

    std = max(floor_std, float(np.std(baseline, ddof=1)) if len(baseline) > 1 else 0.0)
    return paired_comparison(searched, baseline, std)


def budget_row(model, budget: str, args, workdir: Path, seeds: list[int]) -> dict[str, Any]:
    """Searched, uniform and ILP allocations at one budget, on the same held-out sets."""
    from diffsearch.budget import parse_budget
    from diffsearch.spaces import SPACES

    from diffsearch.errors import DiffsearchError

    space = SPACES.get("bitwidth")(model, parse_budget(budget), nfe=args.nfe)
    try:
        outcome = search("bitwidth", budget, args, workdir)
    except DiffsearchError as error:  # every candidate failed (samples out of the data range)
        return {"budget": budget, "error": str(error), "baselines": {}}
    metric, best = model.objective, outcome["best"]
    searched = best["heldout"]["values"]
    floor_std = float((outcome["final"].get("noise") or {}).get("std", 0.0))
    from diffsearch.export.quantized import write_quantized_weights

    packed = write_quantized_weights(model, space.decode(best["candidate"]), workdir / f"packed-{budget}")
    row = {"budget": budget, "searched": {"label": best["label"], "values": searched, "cost": space.cost(best["candidate"]),
                                          "seconds": outcome["seconds"], "packed": packed}, "baselines": {}}
    for label, candidate in space.initial():
        values = heldout(model, space.decode(candidate), args.final_samples, seeds, metric)
        plan = space.decode(candidate)
        row["baselines"][label] = {"values": values, "cost": space.cost(candidate), "comparison": compare(searched, values, floor_std),
                                   "error": ERRORS.get(plan.fingerprint)}
    row["floor_std"] = floor_std
    return row


def eight_bit_weights(model, schedule):
    """8-bit weights everywhere, float activations: how much of the 8-bit loss the activations carry."""
    from diffsearch.models.bits import BitsConfig
    from diffsearch.solvers.plan import Plan

    config = BitsConfig(weights=dict.fromkeys(model.quantizer.layout.names, 8))
    return Plan(schedule=schedule, network=(config,) * schedule.nfe)


def joint_rows(model, args, workdir: Path, seeds: list[int]) -> dict[str, Any]:
    """``solver_schedule+bitwidth`` vs the best full-precision schedule with the ``bitwidth`` search's bits."""
    from diffsearch.budget import parse_budget
    from diffsearch.solvers.plan import Plan
    from diffsearch.spaces import SPACES

    metric = model.objective
    wide = argparse.Namespace(**{**vars(args), "evals": args.joint_evals})
    joint = search("solver_schedule+bitwidth", args.joint_budget, wide, workdir)
    schedule_search = search("solver_schedule", f"{args.nfe}nfe", wide, workdir, nfe=None)
    bits_search = search("bitwidth", args.joint_budget, args, workdir)
    space = SPACES.get("solver_schedule+bitwidth")(model, parse_budget(args.joint_budget), nfe=args.nfe)
    best_schedule = space.schedules.decode(schedule_search["best"]["candidate"])
    candidate = {"schedule": space.schedules.from_schedule(best_schedule), "bits": bits_search["best"]["candidate"]["bits"]}
    sequential = heldout(model, space.decode(candidate), args.final_samples, seeds, metric)
    full = heldout(model, Plan(schedule=best_schedule), args.final_samples, seeds, metric)
    floor_std = float((joint["final"].get("noise") or {}).get("std", 0.0))
    searched = joint["best"]["heldout"]["values"]
    return {"budget": args.joint_budget, "joint": {"values": searched, "label": joint["best"]["label"], "seconds": joint["seconds"]},
            "fp_schedule_with_searched_bits": {"values": sequential, "comparison": compare(searched, sequential, floor_std)},
            "fp_schedule_full_precision": {"values": full}, "floor_std": floor_std}


def markdown(report: dict[str, Any]) -> str:
    """The RESULTS.md tables."""
    def cell(values):
        return f"{np.mean(values):.4g} +- {np.std(values, ddof=1):.2g}"

    lines = [f"full precision ({report['schedule']}): {cell(report['full_precision'])}; "
             f"8-bit weights, float activations: {cell(report['weights8_float_activations'])}", "",
             "| budget | allocation | mean bits | weight bytes | held-out | searched - this (95% interval) | verdict |",
             "|---|---|---|---|---|---|---|"]
    for row in report["rows"]:
        if "error" in row:
            lines.append(f"| {row['budget']} | searched | | | {row['error']} | | |")
            continue
        s = row["searched"]
        lines_packed = f"{s['packed']['file_bytes']} B on disk ({s['packed']['payload_bytes']} B tensors)"
        lines.append(f"| {row['budget']} | searched ({s['label'] or 'trial'}) | {s['cost']['bits']:.3f} | {int(s['cost']['weight_bytes'])}; "
                     f"{lines_packed} | {cell(s['values'])} | | |")
        for label, base in row["baselines"].items():
            c = base["comparison"]
            if base.get("error"):
                lines.append(f"| | {label.removeprefix('preset:')} | {base['cost']['bits']:.3f} | {int(base['cost']['weight_bytes'])} | "
                             f"failed: {base['error']} | | searched better |")
                continue
            verdict = "searched better" if c["beyond_two_std"] else ("baseline better" if c["mean_difference"] > 2 * c["seed_std"] else "tie")
            lines.append(f"| | {label.removeprefix('preset:')} | {base['cost']['bits']:.3f} | {int(base['cost']['weight_bytes'])} | "
                         f"{cell(base['values'])} | {c['mean_difference']:.3g} [{c['interval95'][0]:.3g}, {c['interval95'][1]:.3g}] | {verdict} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="2.5,3,4,6", help="mean-bits budgets, comma separated")
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--evals", type=int, default=40)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--final-samples", type=int, default=500)
    parser.add_argument("--final-seeds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--joint", action="store_true", help="also solver_schedule+bitwidth at --joint-budget")
    parser.add_argument("--joint-budget", default="4bits")
    parser.add_argument("--joint-evals", type=int, default=60, help="evaluations of the joint and the full-precision schedule searches")
    parser.add_argument("--workdir", type=Path, default=None, help="studies folder (default: a new temporary one); reuse it to resume")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/bitwidth_search.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    import diffsearch
    from diffsearch.evaluators.noise import heldout_seeds
    from diffsearch.solvers.plan import Plan
    from diffsearch.solvers.presets import preset_schedule

    model = diffsearch.load_model("digits")
    seeds = heldout_seeds(args.final_seeds)
    schedule = preset_schedule("unipc_bh2", args.nfe, model.noise_schedule, "quadratic", model=model)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bitwidth-search-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report: dict[str, Any] = {"command": "python benchmarks/bitwidth_search.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
                              "machine": f"{platform.processor() or platform.machine()}, torch threads 1", "seeds": seeds,
                              "date": datetime.now(timezone.utc).isoformat(timespec="minutes"), "metric": model.objective,
                              "schedule": f"unipc_bh2@quadratic {args.nfe} NFE",
                              "full_precision": heldout(model, Plan(schedule=schedule), args.final_samples, seeds, model.objective),
                              "weights8_float_activations": heldout(model, eight_bit_weights(model, schedule), args.final_samples, seeds,
                                                                    model.objective),
                              "rows": []}
    for budget in (b for b in args.budgets.split(",") if b):
        report["rows"].append(budget_row(model, f"{budget}bits", args, workdir, seeds))
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # partial results survive an interrupted run
    if args.joint:
        report["joint"] = joint_rows(model, args, workdir, seeds)
    report["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(report))
    print(f"{report['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
