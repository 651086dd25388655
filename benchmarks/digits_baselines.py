"""Every preset at NFE 4, 5, 6, 8, 10 plus a 200-step reference on digits: FID and KID on held-out
noise, and the noise floor (real held-out digits; spread of FID over noise seeds at 1k/2k/5k).

    python benchmarks/digits_baselines.py [--samples 5000] [--spacing logsnr] > /tmp/digits_baselines.md
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import diffsearch
from diffsearch.evaluators import image_metrics
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.evaluators.reference import teacher_schedule
from diffsearch.models.digits import digits_split
from diffsearch.solvers.presets import PRESETS, preset_schedule

NFES = (4, 5, 6, 8, 10)


def presets_table(model, samples: int, spacing: str) -> None:
    print(f"### presets on digits, {spacing} spacing, held-out noise (seed 1), {samples} samples; cells FID / KID\n")
    print("| preset | " + " | ".join(f"{n} NFE" for n in NFES) + " |")
    print("|---|" + "---|" * len(NFES))
    for name in PRESETS:
        cells = []
        for nfe in NFES:
            result = evaluate(model, preset_schedule(name, nfe, model.noise_schedule, spacing), samples=samples, metrics=["fid", "kid"])
            cells.append(f"{result['fid']:.4f} / {result['kid']:.4f}" if result["status"] == "ok" else "failed")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
    reference = teacher_schedule(model, model.noise_schedule.t_max, model.noise_schedule.default_t_end, steps=200)
    result = evaluate(model, reference, samples=samples, metrics=["fid", "kid"])
    print(f"\n200-step reference (order-3 multistep, logSNR): FID {result['fid']:.4f}, KID {result['kid']:.4f}\n")


def noise_floor(model) -> None:
    split = digits_split()
    reference = image_metrics.reference_stats(model, "digits")
    train_fid = image_metrics.fid(split.train_images, reference, "digits")
    train_kid = image_metrics.kid(split.train_images, reference, "digits")[0]
    print(f"### noise floor\n\nreal train split ({len(split.train_images)} images) against the held-out reference: FID {train_fid:.4f}, KID {train_kid:.4f}\n")
    schedule = preset_schedule("unipc_bh2", 10, model.noise_schedule, "logsnr")
    print("FID of preset:unipc_bh2 at 10 NFE over 5 noise seeds:\n")
    print("| samples | mean | std | min | max |\n|---|---|---|---|---|")
    for samples in (1000, 2000, 5000):
        values = [evaluate(model, schedule, samples=samples, seed=seed, metrics=["fid"])["fid"] for seed in range(10, 15)]
        print(f"| {samples} | {np.mean(values):.4f} | {np.std(values):.4f} | {min(values):.4f} | {max(values):.4f} |", flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--spacing", default="logsnr")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = diffsearch.load_model("digits")
    noise_floor(model)
    presets_table(model, args.samples, args.spacing)


if __name__ == "__main__":
    main()
