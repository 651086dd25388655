"""Does measured CPU time follow the MACs ratio? Block-skip and reuse plans on digits at a fixed schedule.

For each plan: the MACs of the whole sampling run over the full network's on the same schedule
(torch's FlopCounterMode per network configuration), and the measured seconds per sample over the
full network's (median of ``--repeats`` timed runs of ``--samples`` samples, one thread, after a
warm-up), plus the held-out FID of the plan's samples (one noise set, so only a sanity check).

    python benchmarks/plan_speed.py [--nfe 10] [--samples 2000] [--repeats 5] > /tmp/plan_speed.md
"""

from __future__ import annotations

import argparse

import torch

import diffsearch
from diffsearch.evaluators.cost import plan_cost, seconds_per_sample
from diffsearch.models.blocks import BlocksConfig
from diffsearch.solvers.plan import Plan

DEEP = ("down1", "mid", "up1")


def deepcache(nfe: int, interval: int, blocks: tuple[str, ...] = DEEP) -> tuple[BlocksConfig, ...]:
    """DeepCache: the full network every ``interval`` evaluations, the deep branch reused in between."""
    return tuple(BlocksConfig(modes={} if k % interval == 0 else dict.fromkeys(blocks, "reuse")) for k in range(nfe))


def every_step(nfe: int, modes: dict[str, str]) -> tuple[BlocksConfig, ...]:
    return tuple(BlocksConfig(modes=modes) for _ in range(nfe))


def plans(schedule) -> dict[str, Plan]:
    nfe = schedule.nfe
    networks = {
        "full network": (),
        "DeepCache interval 2 (reuse down1, mid, up1)": deepcache(nfe, 2),
        "DeepCache interval 3 (reuse down1, mid, up1)": deepcache(nfe, 3),
        "DeepCache interval 5 (reuse down1, mid, up1)": deepcache(nfe, 5),
        "reuse mid only, interval 2": deepcache(nfe, 2, ("mid",)),
        "skip mid every step": every_step(nfe, {"mid": "skip"}),
        "skip down1, mid, up1 every step": every_step(nfe, dict.fromkeys(DEEP, "skip")),
        "skip up0 every step": every_step(nfe, {"up0": "skip"}),
    }
    return {name: Plan(schedule=schedule, network=network) for name, network in networks.items()}


def fid(model, plan: Plan, samples: int) -> float:
    from diffsearch.evaluators import image_metrics
    from diffsearch.evaluators.noise import noise_set

    x_T, labels = noise_set(model, samples, seed=1)
    images = diffsearch.sample(model, plan, x_T, labels).clamp(-1, 1)
    return image_metrics.fid(images, image_metrics.reference_stats(model, "digits"), "digits")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = diffsearch.load_model("digits")
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=args.nfe, model=model)
    labels = torch.arange(args.samples) % 10
    print(f"### digits, dpmpp_2m at {args.nfe} NFE, {args.samples} samples per timed run, median of {args.repeats} runs, "
          f"{args.threads} thread(s); time ratio / MACs ratio within 25% counts as following\n")
    print("| plan | MACs ratio | seconds / sample (min-max) | time ratio | time / MACs | FID (held-out, 2000) |")
    print("|---|---|---|---|---|---|")
    base = None
    for name, plan in plans(schedule).items():
        macs = plan_cost(model, plan)["macs_ratio"]
        timing = seconds_per_sample(model, plan, samples=args.samples, repeats=args.repeats, cond=labels)
        base = base or timing["seconds_per_sample"]
        ratio = timing["seconds_per_sample"] / base
        print(f"| {name} | {macs:.3f} | {timing['seconds_per_sample'] * 1e6:.1f} us ({timing['min'] * 1e6:.1f}-{timing['max'] * 1e6:.1f}) "
              f"| {ratio:.3f} | {ratio / macs:.2f} | {fid(model, plan, 2000):.4f} |", flush=True)


if __name__ == "__main__":
    main()
