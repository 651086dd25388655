"""Optimised-timestep anchors against the search: the best preset on {logsnr, quadratic, karras, gits,
dmn, ld3} vs the searched (and gradient-refined) schedule, on 3 held-out noise sets, with seconds.

    python benchmarks/schedule_anchors.py gmm --nfe 4 5 6 8 10
    python benchmarks/schedule_anchors.py digits --nfe 5 10 --samples 2000 --evals 60
    python benchmarks/schedule_anchors.py gmm --nfe 5 --per-solver unipc_bh2 dpmpp_2m dpmpp_3m   # spacings per solver

The search is the default s3 solver_schedule search (gmm: configs/gmm_solver_schedule_5nfe.yaml
with its budget replaced) with the gits/dmn/ld3 presets added to its initial population
(``space_options.anchor_spacings``). Refinement: ``refine`` on 100 LD3-seed teacher pairs; the
refined schedule replaces the searched one only if it is better on the search noise (seed 0).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
import yaml

import diffsearch
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.evaluators.noise import SEARCH_SEED
from diffsearch.search.config import RunConfig
from diffsearch.search.runner import run_search
from diffsearch.solvers.anchors import LD3_SEED
from diffsearch.solvers.anchors.ld3 import refine
from diffsearch.solvers.anchors.teacher import anchor_noise, teacher_final
from diffsearch.solvers.presets import PRESETS, preset_schedule

SPACINGS = ("logsnr", "quadratic", "karras", "gits", "dmn", "ld3")
HELDOUT_SETS = (1, 2, 3)
T_95_2DOF = 4.303  # Student t quantile for a 95% interval from 3 values


def summary(values: list[float]) -> str:
    """mean ± half-width of the 95% t interval over the held-out sets."""
    mean, half = float(np.mean(values)), T_95_2DOF * float(np.std(values, ddof=1)) / np.sqrt(len(values))
    return f"{mean:.4g} ± {half:.2g}"


def heldout(model, schedule, metric: str, samples: int) -> list[float]:
    return [evaluate(model, schedule, samples=samples, seed=seed, metrics=[metric])[metric] for seed in HELDOUT_SETS]


def best_presets(model, nfe: int, metric: str, samples: int, presets: list[str]) -> tuple[dict[str, tuple[str, list[float]]], dict[str, float]]:
    """Per spacing: the best of ``presets`` (mean over the held-out sets) and the spacing's total compute seconds."""
    best, seconds = {}, {}
    for spacing in SPACINGS:
        rows, seconds[spacing] = [], 0.0
        for name in presets:
            started = time.perf_counter()
            schedule = preset_schedule(name, nfe, model.noise_schedule, spacing, model=model)
            seconds[spacing] += time.perf_counter() - started
            values = heldout(model, schedule, metric, samples)
            if all(np.isfinite(values)):
                rows.append((float(np.mean(values)), name, values))
        _, name, values = min(rows)
        best[spacing] = (name, values)
    return best, seconds


def search(model_name: str, nfe: int, evals: int | None, metric: str, seeds: list[str]) -> tuple[object, float]:
    base = yaml.safe_load(open("configs/gmm_solver_schedule_5nfe.yaml")) if model_name == "gmm" else {"model": "digits"}
    config = {**base, "budget": f"{nfe}nfe", "storage": "sqlite:///:memory:", "progress": False,
              "out": f"/tmp/anchors-{model_name}-{nfe}.json", "metric": metric,
              "space_options": {"anchor_spacings": seeds}}
    if evals:
        config["evals"] = evals
    started = time.perf_counter()
    result = run_search(RunConfig.model_validate(config))
    return result.schedule, time.perf_counter() - started


def refined(model, schedule, metric: str, search_samples: int) -> tuple[object, float, bool]:
    """``refine`` on LD3-seed teacher pairs; kept only if better on the search noise."""
    started = time.perf_counter()
    x_T, cond = anchor_noise(model, 100, LD3_SEED)
    target = teacher_final(model, x_T, cond, None, schedule.timesteps[0], schedule.timesteps[-1])
    end = model.noise_schedule.default_t_end
    candidate = refine(model, schedule, target, x_T, cond, t_end_range=(end, 3 * end))
    seconds = time.perf_counter() - started
    if candidate is schedule:
        return schedule, seconds, False
    before, after = (evaluate(model, s, samples=search_samples, seed=SEARCH_SEED, metrics=[metric])[metric] for s in (schedule, candidate))
    return (candidate, seconds, True) if after < before else (schedule, seconds, False)


def per_solver(model, solvers: list[str], nfes: list[int], metric: str, samples: int) -> None:
    """One row per (solver, NFE): the metric on every spacing, to compare spacings for the same solver."""
    print(f"{metric} on held-out seeds {HELDOUT_SETS}, {samples} samples each; mean ± 95% t interval (seconds to compute the spacing)")
    print("| solver | NFE | " + " | ".join(SPACINGS) + " |")
    print("|---|---|" + "---|" * len(SPACINGS))
    for solver, nfe in ((solver, nfe) for nfe in nfes for solver in solvers):
        cells = []
        for spacing in SPACINGS:
            schedule = preset_schedule(solver, nfe, model.noise_schedule, spacing, model=model)
            seconds = schedule.provenance.get("spacing_seconds", 0.0)
            cells.append(f"{summary(heldout(model, schedule, metric, samples))} ({seconds:.1f} s)")
        print(f"| {solver} | {nfe} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=["gmm", "digits"])
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6, 8, 10])
    parser.add_argument("--samples", type=int, default=None, help="held-out samples per set (gmm 20000, digits 2000)")
    parser.add_argument("--evals", type=int, default=None, help="expensive evaluations of the search (config default)")
    parser.add_argument("--presets", nargs="+", default=None, help="presets of the baseline table (default: all)")
    parser.add_argument("--per-solver", nargs="+", default=None, help="only the spacing table for these solvers")
    parser.add_argument("--seed-spacings", nargs="*", default=["gits", "dmn", "ld3"], help="optimised spacings seeding the search")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(1)  # small tensors: more threads only contend (as in the test suite)
    model = diffsearch.load_model(args.model)
    metric = "frechet_exact" if args.model == "gmm" else "fid"
    samples = args.samples or (20000 if args.model == "gmm" else 2000)
    search_samples = 4000 if args.model == "gmm" else 1000
    if args.per_solver:
        return per_solver(model, args.per_solver, args.nfe, metric, samples)
    print(f"{args.model}: {metric} on held-out seeds {HELDOUT_SETS}, {samples} samples each; mean ± 95% t interval; "
          f"presets: {', '.join(args.presets or PRESETS.names())}; search seeded with {args.seed_spacings}")
    print("| NFE | " + " | ".join(f"best on {s}" for s in SPACINGS) + " | searched | searched + refined | searched / best |")
    print("|---|" + "---|" * (len(SPACINGS) + 3))
    for nfe in args.nfe:
        best, seconds = best_presets(model, nfe, metric, samples, args.presets or PRESETS.names())
        schedule, search_seconds = search(args.model, nfe, args.evals, metric, args.seed_spacings)
        searched = heldout(model, schedule, metric, samples)
        final, refine_seconds, kept = refined(model, schedule, metric, search_samples)
        final_values = heldout(model, final, metric, samples) if kept else searched
        strongest = min(float(np.mean(values)) for _, values in best.values())
        cells = [f"{summary(values)} ({name}, {seconds[s]:.0f} s)" for s, (name, values) in best.items()]
        print(f"| {nfe} | " + " | ".join(cells) + f" | {summary(searched)} ({search_seconds:.0f} s) | "
              f"{summary(final_values)} ({refine_seconds:.0f} s, {'kept' if kept else 'not kept'}) | "
              f"{np.mean(final_values) / strongest:.2f} |", flush=True)


if __name__ == "__main__":
    main()
