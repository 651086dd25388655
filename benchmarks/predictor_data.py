"""Labelled candidate sets for benchmarks/predictors.py (expensive metric + cheap proxies), cached as JSON.

    python benchmarks/predictor_data.py gmm      # writes runs/predictor_bench/gmm.json
    python benchmarks/predictor_data.py digits   # 10 NFE: reuses runs/solver_schedule-10nfe-digits-s3-seed0.db labels
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).resolve().parents[1] / "runs" / "predictor_bench"
PLAN = {"gmm": {10: 130, 5: 60, 6: 30, 8: 30}, "digits": {10: 0, 5: 60, 6: 30, 8: 30}}
POOL = {"gmm": {10: 200, 5: 100}, "digits": {10: 120, 5: 100}}
PROXY_SAMPLES = {"gmm": 256, "digits": 128}


def candidates(space, count: int, seed: int) -> list[dict]:
    """Half random samples, half mutants of the presets (a realistic mix of good and bad)."""
    from diffsearch.spaces.base import candidate_fingerprint

    rng = np.random.default_rng(seed)
    presets = [c for _, c in space.initial()]
    seen, result = set(), []
    while len(result) < count:
        if rng.random() < 0.5:
            child = space.sample(rng)
        else:
            child = presets[int(rng.integers(len(presets)))]
            for _ in range(int(rng.integers(1, 4))):
                child = space.mutate(child, rng)
        if candidate_fingerprint(child) not in seen:
            seen.add(candidate_fingerprint(child))
            result.append(child)
    return result


def label(model, space, candidate, name: str, expensive: bool) -> dict:
    """Expensive metric on the search noise (optional) and the proxy (small-sample metric)."""
    from diffsearch.evaluators.evaluate import default_metrics, evaluate

    metric = default_metrics(model)[0]
    schedule = space.decode(candidate)
    row = {"candidate": candidate, "nfe": schedule.nfe}
    proxy = evaluate(model, schedule, samples=PROXY_SAMPLES[name], seed=0, metrics=[metric])
    row["proxy"] = proxy.get(metric) if proxy["status"] == "ok" else None
    if expensive:
        samples = 4000 if name == "gmm" else 1000
        result = evaluate(model, schedule, samples=samples, seed=0, metrics=[metric])
        row["value"] = result.get(metric) if result["status"] == "ok" else None
    return row


def digits_labelled() -> list[dict]:
    """The 10-NFE digits candidates (FID on 1000 search samples) of a finished s3 study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(__file__).resolve().parents[1] / "runs" / "solver_schedule-10nfe-digits-s3-seed0.db"
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{path}")
    return [{"candidate": t.user_attrs["candidate"], "value": t.value, "trial": t.number}
            for t in study.trials if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]


def build(name: str) -> Path:
    """Label every planned candidate and write the JSON file."""
    from diffsearch.budget import parse_budget
    from diffsearch.models.loading import load_model
    from diffsearch.spaces.base import SPACES

    torch.set_num_threads(1)
    model, rows, started = load_model(name), [], time.perf_counter()
    for nfe in sorted(set(PLAN[name]) | set(POOL[name])):
        space = SPACES.get("solver_schedule")(model, parse_budget(f"{nfe}nfe"))
        labelled = digits_labelled() if (name, nfe) == ("digits", 10) else [{"candidate": c} for c in candidates(space, PLAN[name].get(nfe, 0), seed=nfe)]
        for item in labelled:
            row = label(model, space, item["candidate"], name, expensive="value" not in item)
            rows.append({**row, **{k: v for k, v in item.items() if k != "candidate"}, "set": "labelled"})
        for candidate in candidates(space, POOL[name].get(nfe, 0), seed=1000 + nfe):
            rows.append({**label(model, space, candidate, name, expensive=False), "set": "pool"})
        print(f"{name} {nfe}nfe: {len(rows)} rows, {time.perf_counter() - started:.0f}s", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(rows))
    return path


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print(build(name))
