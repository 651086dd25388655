"""Does the teacher objective measure the right thing? On gmm, where frechet_exact is exact (issue 18).

100 random solver_schedule candidates (and the presets) at one NFE: fd_teacher (raw features,
teacher reference on its own noise) against frechet_exact, both on the same held-out noise;
Kendall tau (scipy) between the two rankings.

    python benchmarks/objective_validity.py --nfe 5 --candidates 100 --samples 4000
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch
from scipy import stats

import diffsearch
from diffsearch.budget import parse_budget
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.spaces import SPACES


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nfe", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = diffsearch.load_model("gmm")
    space = SPACES.get("solver_schedule")(model, parse_budget(f"{args.nfe}nfe"))
    rng = np.random.default_rng(args.seed)
    candidates = [space.sample(rng) for _ in range(args.candidates)]
    pairs = []
    for candidate in candidates:
        result = evaluate(model, space.decode(candidate), samples=args.samples, metrics=["frechet_exact", "fd_teacher"])
        if result["status"] == "ok" and all(math.isfinite(result[m]) for m in ("frechet_exact", "fd_teacher")):
            pairs.append((result["frechet_exact"], result["fd_teacher"]))
    exact, teacher = np.asarray(pairs).T
    tau = stats.kendalltau(exact, teacher).statistic
    report = {"nfe": args.nfe, "candidates": args.candidates, "finite": len(pairs), "samples": args.samples,
              "kendall_tau": float(tau), "spearman": float(stats.spearmanr(exact, teacher).statistic)}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
