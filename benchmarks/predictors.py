"""Predictor quality on held-out solver_schedule candidates: Kendall tau and precision@10 against the
number of expensive labels, with and without proxy pretraining, plus cross-NFE ranking.

    python benchmarks/predictor_data.py gmm digits   # label the candidates once (cached JSON)
    python benchmarks/predictors.py gmm digits       # the tables (markdown) and runs/predictor_bench/results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from diffsearch.predictors.rank import kendall_tau, precision_at_k

DATA = Path(__file__).resolve().parents[1] / "runs" / "predictor_bench"
FAMILIES = tuple(__import__("os").environ.get("FAMILIES", "mlp,xgboost,gp,ensemble").split(","))
SIZES = (10, 20, 50, 100)
REPEATS = 3
HELDOUT = 30


def load(name: str):
    """Rows of a labelled set with features, NFE, expensive value and proxy."""
    from diffsearch.budget import parse_budget
    from diffsearch.models.loading import load_model
    from diffsearch.predictors.encoders import encode
    from diffsearch.spaces.base import SPACES

    rows = json.loads((DATA / f"{name}.json").read_text())
    model, spaces = load_model(name), {}
    for row in rows:
        nfe = row["nfe"]
        if nfe not in spaces:
            spaces[nfe] = SPACES.get("solver_schedule")(model, parse_budget(f"{nfe}nfe"))
        row["x"] = encode(spaces[nfe], row["candidate"])
    return rows


def arrays(rows):
    """(features, values, nfe) of rows."""
    return np.stack([r["x"] for r in rows]), np.asarray([r.get("value") or r.get("proxy") for r in rows]), np.asarray([r["nfe"] for r in rows])


def split(rows, nfe: int):
    """Labelled rows at ``nfe``: held-out = the newest (digits: later generations) / last ``HELDOUT``; the rest train."""
    labelled = [r for r in rows if r["set"] == "labelled" and r["nfe"] == nfe and r.get("value") is not None]
    labelled.sort(key=lambda r: r.get("trial", 0))
    return labelled[:-HELDOUT], labelled[-HELDOUT:]


def proxy_pool(rows, exclude):
    """Every row with a finite proxy except the held-out candidates (pretraining data)."""
    banned = {id(r) for r in exclude}
    pool = [r for r in rows if id(r) not in banned and r.get("proxy") is not None and np.isfinite(r["proxy"])]
    return np.stack([r["x"] for r in pool]), np.asarray([r["proxy"] for r in pool]), np.asarray([r["nfe"] for r in pool])


def score(name: str, train, test, pool, seed: int) -> dict[str, float]:
    """Fit (optionally pretrained) and score on the held-out rows."""
    from diffsearch.predictors.pretrain import train_predictor

    predictor = train_predictor(name, arrays(train), pool, seed=seed)
    x, v, _ = arrays(test)
    predicted = predictor.predict(x)
    return {"tau": kendall_tau(predicted, v), "p10": precision_at_k(predicted, v, 10)}


def label_curve(rows, nfe: int) -> list[dict]:
    """Tau and precision@10 per family, label count and pretraining (mean over REPEATS label subsets)."""
    train, test = split(rows, nfe)
    pool = proxy_pool(rows, test)
    x, v, _ = arrays(test)
    proxy = np.asarray([r["proxy"] if r.get("proxy") is not None else np.inf for r in test])
    results = [{"family": "proxy alone", "labels": 0, "pretrained": False, "tau": kendall_tau(proxy, v), "p10": precision_at_k(proxy, v, 10)}]
    for family in FAMILIES:
        for size in [s for s in SIZES if s <= len(train)] + ([len(train)] if len(train) < max(SIZES) else []):
            for pretrained in (False, True):
                scores = []
                for repeat in range(REPEATS):
                    subset = [train[i] for i in np.random.default_rng(repeat).choice(len(train), size, replace=False)]
                    scores.append(score(family, subset, test, pool if pretrained else None, seed=repeat))
                results.append({"family": family, "labels": size, "pretrained": pretrained,
                                "tau": float(np.mean([s["tau"] for s in scores])), "p10": float(np.mean([s["p10"] for s in scores]))})
                print(json.dumps(results[-1]), flush=True)
    return results


def cross_nfe(rows) -> list[dict]:
    """Train at 5 and 10 NFE, rank the 6- and 8-NFE candidates (per-NFE Kendall tau)."""
    train = [r for r in rows if r["set"] == "labelled" and r["nfe"] in (5, 10) and r.get("value") is not None]
    results = []
    for family in FAMILIES:
        for pretrained in (False, True):
            test_rows = [r for r in rows if r["set"] == "labelled" and r["nfe"] in (6, 8)]
            predictor_scores = {}
            from diffsearch.predictors.pretrain import train_predictor

            predictor = train_predictor(family, arrays(train), proxy_pool(rows, test_rows) if pretrained else None, seed=0)
            for nfe in (6, 8):
                test = [r for r in test_rows if r["nfe"] == nfe and r.get("value") is not None]
                x, v, _ = arrays(test)
                predicted = predictor.predict(x)
                predictor_scores[nfe] = {"tau": kendall_tau(predicted, v), "p10": precision_at_k(predicted, v, 10)}
            results.append({"family": family, "pretrained": pretrained, **{f"tau_{n}nfe": s["tau"] for n, s in predictor_scores.items()},
                            **{f"p10_{n}nfe": s["p10"] for n, s in predictor_scores.items()}})
            print(json.dumps(results[-1]), flush=True)
    return results


def markdown(name: str, curve: list[dict]) -> str:
    """One table: rows = family x pretraining, columns = label counts."""
    sizes = sorted({r["labels"] for r in curve if r["labels"]})
    lines = [f"| {name} | pretrained | " + " | ".join(f"{s} labels tau / p@10" for s in sizes) + " |", "|---|---|" + "---|" * len(sizes)]
    for row in curve:
        if row["labels"] == 0:
            lines.append(f"| proxy alone | - | tau {row['tau']:.2f}, p@10 {row['p10']:.2f} (every column) |")
    for family in FAMILIES:
        for pretrained in (False, True):
            cells = [next((r for r in curve if r["family"] == family and r["pretrained"] == pretrained and r["labels"] == s), None) for s in sizes]
            lines.append(f"| {family} | {'yes' if pretrained else 'no'} | " + " | ".join(f"{c['tau']:.2f} / {c['p10']:.2f}" if c else "-" for c in cells) + " |")
    return "\n".join(lines)


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    results = {}
    for name in names:
        rows = load(name)
        results[name] = {"curve": label_curve(rows, 10)}
        if {6, 8} <= {r["nfe"] for r in rows}:
            results[name]["cross_nfe"] = cross_nfe(rows)
        print(markdown(name, results[name]["curve"]))
    (DATA / f"results-{'-'.join(names)}.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:] or ["gmm", "digits"])
