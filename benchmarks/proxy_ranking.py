"""Which cheap proxy ranks digits solver schedules like the expensive FID? Kendall tau and precision@10
of small-sample FID / KID and teacher trajectory error against FID-1000, on the 10-NFE digits
candidates labelled by benchmarks/predictor_data.py.

    python benchmarks/predictor_data.py digits && python benchmarks/proxy_ranking.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from diffsearch.budget import parse_budget
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.evaluators.noise import SEARCH_SEED
from diffsearch.models.loading import load_model
from diffsearch.predictors.rank import kendall_tau, precision_at_k
from diffsearch.spaces.base import SPACES

DATA = Path(__file__).resolve().parents[1] / "runs" / "predictor_bench" / "digits.json"
PROXIES = (("fid", 128), ("fid", 256), ("kid", 128), ("kid", 256), ("teacher_error", 128))


def main() -> None:
    torch.set_num_threads(1)
    rows = [r for r in json.loads(DATA.read_text()) if r["set"] == "labelled" and r["nfe"] == 10 and r.get("value") is not None]
    model = load_model("digits")
    space = SPACES.get("solver_schedule")(model, parse_budget("10nfe"))
    values = np.array([r["value"] for r in rows])
    newest = np.argsort([r.get("trial", 0) for r in rows], kind="stable")[-30:]
    print(f"{len(rows)} candidates; label: FID on 1000 search-noise samples\n")
    print("| proxy | tau, all | tau, 30 newest | p@10, all | seconds |\n|---|---|---|---|---|")
    for metric, samples in PROXIES:
        started = time.perf_counter()
        results = [evaluate(model, space.decode(r["candidate"]), samples=samples, seed=SEARCH_SEED, metrics=[metric]) for r in rows]
        proxy = np.array([res.get(metric, np.nan) if res["status"] == "ok" else np.nan for res in results])
        ok = np.isfinite(proxy)
        print(f"| {metric}-{samples} | {kendall_tau(proxy[ok], values[ok]):.2f} | {kendall_tau(proxy[newest], values[newest]):.2f} | "
              f"{precision_at_k(proxy[ok], values[ok], 10):.2f} | {time.perf_counter() - started:.0f} |", flush=True)


if __name__ == "__main__":
    main()
