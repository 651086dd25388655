"""random, evolution, tpe and s3 at equal numbers of expensive evaluations, 3 seeds, on gmm and digits.

    python benchmarks/search_strategies.py [--models gmm digits] [--seeds 0 1 2] > /tmp/strategies.md

Each run is a fresh in-memory study. Cells: held-out objective of the exported best (mean over seeds,
then per seed), and the best search-noise value after each checkpoint of expensive evaluations.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from diffsearch.search.report import best_so_far
from diffsearch.search.runner import final_stage, prepare, search_loop
from diffsearch.search.config import RunConfig

SETTINGS = {  # model -> (budget, evals, search samples, final samples, checkpoints)
    "gmm": ("5nfe", 160, 4000, 20000, (40, 80, 120, 160)),
    "digits": ("5nfe", 100, 1000, 2000, (40, 60, 80, 100)),
}
STRATEGIES = ("random", "evolution", "tpe", "s3")


def one_run(model: str, strategy: str, seed: int) -> tuple[float, list[float], float]:
    budget, evals, search_samples, final_samples, _ = SETTINGS[model]
    config = RunConfig(model=model, budget=budget, strategy=strategy, seed=seed, evals=evals, search_samples=search_samples,
                       final_samples=final_samples, final_top=2, study=f"{model}-{strategy}-{seed}",
                       storage="sqlite:///:memory:", progress=False)
    started = time.perf_counter()
    run = prepare(config)
    search_loop(run)
    final = final_stage(run)
    rows = {row["trial"]: row for row in final["rows"]}
    return rows[final["best"]]["heldout"][run.metric], best_so_far(run.study), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for model in args.models:
        budget, evals, search_samples, final_samples, checkpoints = SETTINGS[model]
        print(f"### {model}, solver_schedule at {budget}: {evals} expensive evaluations, {search_samples} search samples, "
              f"held-out {final_samples} samples, seeds {args.seeds}\n")
        print("| strategy | held-out mean | per seed | " + " | ".join(f"best@{c}" for c in checkpoints) + " | seconds/run |")
        print("|---|---|---|" + "---|" * len(checkpoints) + "---|")
        for strategy in STRATEGIES:
            results = [one_run(model, strategy, seed) for seed in args.seeds]
            heldout = [r[0] for r in results]
            curves = [[np.mean([r[1][min(c, len(r[1])) - 1] for r in results])] for c in checkpoints]
            print(f"| {strategy} | {np.mean(heldout):.4g} | {', '.join(f'{v:.4g}' for v in heldout)} | "
                  + " | ".join(f"{c[0]:.4g}" for c in curves) + f" | {np.mean([r[2] for r in results]):.0f} |", flush=True)
        print()


if __name__ == "__main__":
    main()
