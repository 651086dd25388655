"""Torch intra-op threads: seconds per sampling run with 1 and with N threads, and whether the samples are bitwise equal.

One preset schedule (``unipc_bh2`` on logSNR spacing, 10 NFE) on the model's search noise set;
rounds alternate 1 and N threads; each cell is the mean of ``--repeats`` runs (wall and process CPU
seconds). The CLI uses every CPU by default because of what this measures.

    python benchmarks/threads.py --model digits --samples 1000 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import diffsearch
from diffsearch.evaluators.noise import noise_set
from diffsearch.evaluators.reference import sample_batched
from diffsearch.solvers.presets import preset_schedule


def timed(model, schedule, x_T, labels, threads: int, repeats: int) -> tuple[float, float, torch.Tensor]:
    """Mean wall and CPU seconds of one sampling run at ``threads`` threads, and its samples."""
    torch.set_num_threads(threads)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        output = sample_batched(model, schedule, x_T, labels, None, 4096)
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = diffsearch.load_model(args.model)
    x_T, labels = noise_set(model, args.samples, 0)
    labels = labels if model.num_classes else None
    schedule = preset_schedule("unipc_bh2", 10, model.noise_schedule, "logsnr", model=model)
    rows, outputs = [], {}
    for round_ in range(args.rounds):
        for threads in (1, args.threads):
            wall, cpu, outputs[threads] = timed(model, schedule, x_T, labels, threads, args.repeats)
            rows.append({"round": round_, "threads": threads, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4)})
            print(json.dumps(rows[-1]), flush=True)
    one = [r["wall_s"] for r in rows if r["threads"] == 1]
    many = [r["wall_s"] for r in rows if r["threads"] == args.threads]
    print(json.dumps({"model": args.model, "samples": args.samples, "speedup_per_round": [round(a / b, 2) for a, b in zip(one, many)],
                      "bitwise_equal": bool(torch.equal(outputs[1], outputs[args.threads])),
                      "max_abs_difference": float((outputs[1] - outputs[args.threads]).abs().max())}))


if __name__ == "__main__":
    main()
