"""Which metric x feature space sees what the search changes (issue 18).

For each metric x feature space and NFE: the best preset (of every preset x continuous spacing, chosen
on one noise seed), its mean and std over ``--seeds`` held-out noise sets, the 200-step reference's
value, and the noise floor (a perfect sampler at the same sample count, see evaluators/floor.py).
Discrimination = (best preset - floor) / std: how many seed standard deviations separate the best
preset from a perfect sampler; the search can only show gains it can see.

    python benchmarks/discrimination.py digits --nfe 4 5 6 8 10 --samples 1000 --seeds 5
    python benchmarks/discrimination.py gmm --nfe 4 5 6 8 10 --samples 4000 --seeds 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

import diffsearch
from diffsearch.evaluators.evaluate import metric_values, out_of_range
from diffsearch.evaluators.floor import noise_floor
from diffsearch.evaluators.noise import noise_set
from diffsearch.evaluators.reference import sample_batched
from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.spaces.solver_schedule import INITIAL_SPACINGS

COMBOS = {
    "digits": [("fd_teacher", "raw"), ("fd_teacher", "digits"), ("fd_teacher", "digits_multi"), ("kid_teacher", "raw"),
               ("fid", "digits"), ("fid", "digits_multi"), ("kid", "digits"), ("teacher_error", None)],
    "gmm": [("frechet_exact", None), ("fd_teacher", "raw"), ("teacher_error", None)],
}
SEEDS0 = 20  # noise seeds 20, 21, ...: disjoint from search (0), held-out (1-3), teacher and floor seeds


def scores(model, schedule, samples: int, seed: int, combos) -> dict[str, float]:
    """Every metric x features of one (schedule, noise set), sampled once; plus the out-of-range share."""
    x_T, labels = noise_set(model, samples, seed)
    cond = labels if model.num_classes else None
    output = sample_batched(model, schedule, x_T, cond, None, 1000)
    row = {}
    for metric, features in combos:
        settings = {"seed": seed, "guidance": None, "features": features}
        row[f"{metric}/{features}"] = metric_values(model, schedule, output, x_T, cond, settings, [metric])[0][metric]
    row["out_of_range"] = (out_of_range(model, output) or {}).get("out_of_range", 0.0)
    return row


def run(model_name: str, nfes: list[int], samples: int, seeds: int) -> dict:
    model = diffsearch.load_model(model_name)
    ns, combos = model.noise_schedule, COMBOS[model_name]
    started = time.perf_counter()
    floors = {f"{m}/{f}": noise_floor(model, m, samples, features=f, seeds=seeds) for m, f in combos}
    reference = preset_schedule("dpmpp_3m", 200, ns, "logsnr", third_order="taylor")
    ref_rows = [scores(model, reference, samples, SEEDS0 + s, combos) for s in range(seeds)]
    table = {"model": model_name, "samples": samples, "seeds": seeds, "floors": floors, "nfe": {},
             "reference": {k: (float(np.mean([r[k] for r in ref_rows])), float(np.std([r[k] for r in ref_rows], ddof=1))) for k in ref_rows[0]}}
    for nfe in nfes:
        presets = {f"{name}@{sp}": preset_schedule(name, nfe, ns, sp) for sp in INITIAL_SPACINGS for name in PRESETS}
        first = {label: scores(model, schedule, samples, SEEDS0, combos) for label, schedule in presets.items()}
        rows = {}
        for key in floors:
            best = min((label for label in first if np.isfinite(first[label][key])), key=lambda label: first[label][key])
            values = [first[best][key]] + [scores(model, presets[best], samples, SEEDS0 + s, [tuple(key.split("/"))])[key] if key.split("/")[1] != "None"
                                          else scores(model, presets[best], samples, SEEDS0 + s, [(key.split("/")[0], None)])[key] for s in range(1, seeds)]
            mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
            rows[key] = {"best_preset": best, "mean": mean, "std": std, "floor": floors[key]["floor"], "floor_std": floors[key]["std"],
                         "discrimination": (mean - floors[key]["floor"]) / std if std > 0 else float("inf"),
                         "out_of_range": first[best]["out_of_range"]}
        table["nfe"][nfe] = {"rows": rows, "out_of_range": {label: first[label]["out_of_range"] for label in first}}
        print(f"{model_name} {nfe} NFE done ({time.perf_counter() - started:.0f} s)", flush=True)
    table["seconds"] = time.perf_counter() - started
    return table


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", choices=sorted(COMBOS))
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6, 8, 10])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = run(args.model, args.nfe, args.samples, args.seeds)
    out = Path(args.out or f"benchmarks/results/discrimination_{args.model}_{args.samples}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1, default=float))
    for nfe, block in table["nfe"].items():
        print(f"\n{args.model} {nfe} NFE ({args.samples} samples, {args.seeds} seeds)")
        print("| metric / features | best preset | value (mean +- std) | floor | 200-step ref | discrimination |")
        for key, row in block["rows"].items():
            ref = table["reference"][key]
            print(f"| {key} | {row['best_preset']} | {row['mean']:.4g} +- {row['std']:.2g} | {row['floor']:.4g} | {ref[0]:.4g} | {row['discrimination']:.1f} |")


if __name__ == "__main__":
    main()
