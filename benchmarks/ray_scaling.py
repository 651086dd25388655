"""Ray executor scaling: expensive evaluations per minute with 1 and 2 Ray workers, and the Ray
executor's per-evaluation overhead against inline evaluation of the same candidates.

    python benchmarks/ray_scaling.py [--candidates 12] [--samples 100000] [--cheap-samples 200] [--repeats 1]

Prints a markdown table. Evaluations: the gmm model, timesteps space (dpmpp_2m) at 10 NFE,
objective frechet_exact, no evaluation cache; the same random candidates for every executor.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch

from diffsearch.search.config import RunConfig
from diffsearch.search.runner import prepare


def make_run(executor: str, workers: int, samples: int, folder: str):
    """A prepared run (study in a temp sqlite file) whose executor we drive directly."""
    config = RunConfig(model="gmm", space="timesteps", solver="dpmpp_2m", budget="10nfe", strategy="random",
                       search_samples=samples, cache=False, progress=False, executor=executor, workers=workers,
                       study=f"bench-{executor}-{workers}-{samples}", storage=f"sqlite:///{folder}/bench.db")
    return prepare(config)


def timed(run, candidates) -> tuple[float, float]:
    """(seconds for all candidates with ``slots`` in flight, startup seconds before the first)."""
    startup = run.executor.warm_up() if hasattr(run.executor, "warm_up") else 0.0
    queue, inflight, started = list(enumerate(candidates)), 0, time.perf_counter()
    while queue or inflight:
        while queue and inflight < run.executor.slots:
            run.executor.submit(*queue.pop(0))
            inflight += 1
        _, result = run.executor.next_result()
        assert result["status"] == "ok", result
        inflight -= 1
    elapsed = time.perf_counter() - started
    run.executor.close()
    return elapsed, startup


EXECUTORS = (("inline", "inline", 1), ("ray, 1 worker", "ray", 1), ("ray, 2 workers", "ray", 2))


def measure(candidates, samples: int, folder: str, repeats: int) -> dict[str, tuple[float, float]]:
    """Fastest of ``repeats`` (seconds, startup) for inline, ray with 1 worker and ray with 2 workers (interleaved)."""
    best: dict[str, tuple[float, float]] = {}
    for _ in range(repeats):
        for name, executor, workers in EXECUTORS:
            seconds = timed(make_run(executor, workers, samples, folder), candidates)
            best[name] = min(best.get(name, seconds), seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=12)
    parser.add_argument("--samples", type=int, default=100_000, help="samples per expensive evaluation")
    parser.add_argument("--cheap-samples", type=int, default=200, help="samples per cheap evaluation (overhead)")
    parser.add_argument("--repeats", type=int, default=1, help="repeat each measurement, keep the fastest")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("DIFFSEARCH_THREADS", "1")))
    with tempfile.TemporaryDirectory() as folder:
        space = make_run("inline", 1, args.samples, folder).space
        rng = np.random.default_rng(0)
        candidates = [space.sample(rng) for _ in range(args.candidates)]
        expensive = measure(candidates, args.samples, folder, args.repeats)
        cheap = measure(candidates, args.cheap_samples, folder, args.repeats)
    n = len(candidates)
    print(f"\n{n} candidates (fastest of {args.repeats}), gmm timesteps 10 NFE; expensive = {args.samples} samples, cheap = {args.cheap_samples} samples; "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}, {platform.platform()}\n")
    print("| executor | expensive evals/min | s per expensive eval | vs 1 ray worker | s per cheap eval | overhead vs inline per eval | startup s |")
    print("|---|---|---|---|---|---|---|")
    for name, (seconds, startup) in expensive.items():
        ratio = expensive["ray, 1 worker"][0] / seconds
        overhead = (cheap[name][0] - cheap["inline"][0]) / n
        print(f"| {name} | {60 * n / seconds:.1f} | {seconds / n:.3f} | {ratio:.2f}x | {cheap[name][0] / n:.4f} | "
              f"{1000 * overhead:+.1f} ms | {startup:.1f} |")


if __name__ == "__main__":
    main()
