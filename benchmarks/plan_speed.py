"""Does measured CPU time follow the MACs ratio? Block-skip and reuse plans on digits at a fixed schedule.

For each plan: the MACs of the whole sampling run over the full network's on the same schedule
(torch's FlopCounterMode per network configuration), and the measured seconds per sample over the
full network's (process CPU time by default, ``--clock wall`` for the wall clock). Timing runs in
``--rounds`` rounds; each round times every plan once (``--samples`` samples, one thread, after a
warm-up) and divides by the full network timed in the same round, so a load change on a shared
machine shifts numerator and denominator alike. The table gives the median ratio over rounds and
its range, plus the held-out FID of the plan's samples (one noise set of 2000: a sanity check,
not a comparison).

    python benchmarks/plan_speed.py [--nfe 10] [--samples 1000] [--rounds 5] [--clock cpu|wall] > /tmp/plan_speed.md
"""

from __future__ import annotations

import argparse
import statistics

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


def timed_ratios(model, plans: dict[str, Plan], samples: int, rounds: int, clock: str) -> dict[str, tuple[list[float], list[float]]]:
    """Per round: every plan's seconds per sample over the full network's in that round (ratios, seconds)."""
    labels = torch.arange(samples) % 10
    ratios: dict[str, list[float]] = {name: [] for name in plans}
    seconds: dict[str, list[float]] = {name: [] for name in plans}
    for _ in range(rounds):
        times = {name: seconds_per_sample(model, plan, samples=samples, repeats=1, cond=labels)[clock] for name, plan in plans.items()}
        full = times["full network"]
        for name, value in times.items():
            ratios[name].append(value / full)
            seconds[name].append(value)
    return {name: (ratios[name], seconds[name]) for name in plans}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nfe", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time (default) or wall clock")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = diffsearch.load_model("digits")
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=args.nfe, model=model)
    candidates = plans(schedule)
    print(f"### digits, dpmpp_2m at {args.nfe} NFE, {args.samples} samples per timed run, {args.rounds} rounds, "
          f"{args.threads} thread(s), {args.clock} time; time ratio within 25% of the MACs ratio counts as following\n")
    print(f"| plan | MACs ratio | {args.clock} time ratio, median (range over rounds) | time / MACs | median ms / sample | FID (held-out, 2000) |")
    print("|---|---|---|---|---|---|")
    clock = "cpu_seconds_per_sample" if args.clock == "cpu" else "seconds_per_sample"
    for name, (ratios, seconds) in timed_ratios(model, candidates, args.samples, args.rounds, clock).items():
        macs, ratio = plan_cost(model, candidates[name])["macs_ratio"], statistics.median(ratios)
        print(f"| {name} | {macs:.3f} | {ratio:.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | {ratio / macs:.2f} "
              f"| {statistics.median(seconds) * 1e3:.2f} | {fid(model, candidates[name], 2000):.4f} |", flush=True)


if __name__ == "__main__":
    main()
