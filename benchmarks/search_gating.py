"""Search efficiency of the gated s3 search: does it reach the final held-out quality of an ungated
evolution run (within its seed std) with at most a quarter of its expensive evaluations? Wall time
includes the gate (proxy and predictor seconds).

    python benchmarks/search_gating.py gmm 6nfe 80 0 1 2    # model, budget, evolution evals, seeds
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parents[1] / "runs" / "gating_bench"


def one(model: str, budget: str, strategy: str, evals: int, seed: int) -> dict:
    """Run one search; its held-out objective, expensive evaluations and wall time."""
    from diffsearch.search.runner import run_search

    OUT.mkdir(parents=True, exist_ok=True)
    study = f"{model}-{budget}-{strategy}-{evals}-seed{seed}"
    started = time.perf_counter()
    result = run_search({"model": model, "budget": budget, "strategy": strategy, "evals": evals, "seed": seed, "study": study,
                         "final_samples": 8000 if model == "gmm" else 1000, "storage": f"sqlite:///{OUT}/{study}.db",
                         "out": str(OUT / f"{study}.json"), "progress": False})
    metrics = result.schedule.metrics
    cost = result.schedule.provenance["search_cost"]
    return {"strategy": strategy, "seed": seed, "evals": cost["evaluations"]["expensive"], "heldout": metrics["heldout"][metrics["objective"]],
            "heldout_std": metrics["heldout"].get("std"), "seed_std": (metrics.get("noise") or {}).get("std"),
            "baseline": (metrics.get("baseline") or {}).get("heldout", {}).get(metrics["objective"]), "wall_s": time.perf_counter() - started,
            "gate_s": cost["predictor_s"]}


def main(model: str, budget: str, evals: int, seeds: list[int]) -> None:
    torch.set_num_threads(1)
    for seed in seeds:
        ungated = one(model, budget, "evolution", evals, seed)
        gated = one(model, budget, "s3", max(evals // 4, 1), seed)
        tolerance = max(ungated["heldout_std"] or 0.0, ungated["seed_std"] or 0.0)  # "within its seed std"
        print(json.dumps({"model": model, "budget": budget, "ungated": ungated, "gated": gated, "tolerance": tolerance,
                          "gated_reaches": gated["heldout"] <= ungated["heldout"] + tolerance}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(s) for s in sys.argv[4:]])
