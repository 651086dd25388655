"""The search's acceptance numbers: the default `search run` on digits at NFE 4, 5, 6, 8, 10 (gap to a
200-step reference closed), gmm at 5 NFE (exact Frechet), and a plug-in model searched on teacher_error.

    python benchmarks/search_acceptance.py digits [--nfe 4 5 6 8 10]
    python benchmarks/search_acceptance.py gmm [--seeds 0 1 2]
    python benchmarks/search_acceptance.py plugin
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import diffsearch
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.evaluators.noise import HELDOUT_SEED
from diffsearch.evaluators.reference import teacher_schedule
from diffsearch.search.config import RunConfig
from diffsearch.search.runner import run_search

PLUGIN = Path(__file__).with_name("plugins") / "gmm_plugin.py"


def row(result, label: str, extra: str = "") -> str:
    metrics = result.schedule.metrics
    objective = metrics["objective"]
    searched, preset = metrics["heldout"][objective], metrics["baseline"]["heldout"][objective]
    cost = result.schedule.provenance["search_cost"]
    return (f"| {label} | {result.schedule.nfe} | {metrics['baseline']['schedule']} | {preset:.4g} | {searched:.4g} | "
            f"{100 * (preset - searched) / preset:.1f}% | {extra}{cost['evaluations']['expensive']} | "
            f"{cost['sampling_s'] + cost['metric_and_overhead_s'] + cost['predictor_s'] + cost['final_s']:.0f} |")


def reference_fid(model, samples: int) -> float:
    """FID of the 200-step reference (order-3 multistep, logSNR to t = 1/N) on the held-out noise."""
    reference = teacher_schedule(model, model.noise_schedule.t_max, model.noise_schedule.default_t_end, steps=200)
    return evaluate(model, reference, samples=samples, seed=HELDOUT_SEED, metrics=["fid"])["fid"]


def digits(nfes: list[int], known_reference: float | None = None) -> None:
    model = diffsearch.load_model("digits")
    floors: dict[int, float] = {5000: known_reference} if known_reference is not None else {}
    print("| run | NFE | best preset | preset FID | searched FID | better by | 200-step FID | gap closed | evals | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for nfe in nfes:
        started = time.perf_counter()
        result = run_search(RunConfig(budget=f"{nfe}nfe", progress=False, study=f"acceptance-digits-{nfe}nfe",
                                      storage="sqlite:///runs/acceptance.db", out=f"runs/acceptance/digits-{nfe}nfe.json"))
        samples = result.schedule.metrics["heldout"]["samples"]
        if samples not in floors:
            floors[samples] = reference_fid(model, samples)
        floor = floors[samples]
        metrics = result.schedule.metrics
        preset, searched = metrics["baseline"]["heldout"]["fid"], metrics["heldout"]["fid"]
        closed = (preset - searched) / (preset - floor) if preset > floor else float("nan")
        print(row(result, f"digits {nfe}nfe").replace(f"| {result.schedule.provenance['search_cost']['evaluations']['expensive']} |",
              f"| {floor:.4g} | {100 * closed:.0f}% | {result.schedule.provenance['search_cost']['evaluations']['expensive']} |")
              + f" ({time.perf_counter() - started:.0f} s wall)", flush=True)


def gmm(seeds: list[int]) -> None:
    print("| run | NFE | best preset | preset | searched | better by | evals | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for seed in seeds:
        config = RunConfig.model_validate({**_yaml("configs/gmm_solver_schedule_5nfe.yaml"), "seed": seed,
                                           "storage": "sqlite:///:memory:", "progress": False, "out": f"/tmp/gmm5-{seed}.json"})
        print(row(run_search(config), f"gmm 5nfe seed {seed} (frechet_exact)"), flush=True)


def plugin() -> None:
    print("| run | NFE | best preset | preset | searched | better by | evals | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    config = RunConfig(model=f"{PLUGIN}:make", budget="5nfe", evals=160, final_samples=5000, progress=False,
                       storage="sqlite:///:memory:", out="/tmp/plugin5.json")
    print(row(run_search(config), "file.py:factory 5nfe (teacher_error)"), flush=True)


def _yaml(path: str) -> dict:
    import yaml

    return yaml.safe_load(Path(path).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("which", choices=["digits", "gmm", "plugin"])
    parser.add_argument("--nfe", nargs="+", type=int, default=[4, 5, 6, 8, 10])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--reference-fid", type=float, default=None, help="reuse a measured 200-step FID (5000 samples)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"digits": lambda: digits(args.nfe, args.reference_fid), "gmm": lambda: gmm(args.seeds), "plugin": plugin}[args.which]()


if __name__ == "__main__":
    main()
