"""``search show`` for a search over several objectives: the front as a table and quality against cost as a PNG
(matplotlib, Agg backend), with the presets on the same axes. Held-out values once the final stage ran,
search-noise values before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffsearch.errors import DiffsearchError
from diffsearch.files import atomic_path
from diffsearch.search import storage
from diffsearch.search.pareto import pareto_indices


def objectives_of(study) -> list[str] | None:
    """The study's objectives when it searched several, else None."""
    objectives = (study.user_attrs.get("config") or {}).get("objectives")
    return objectives if objectives and len(objectives) > 1 else None


def front_points(study) -> tuple[list[dict[str, Any]], str]:
    """Points (label, trial, metric, std, costs, front, preset) and where their metric was measured."""
    objectives, final = objectives_of(study), study.user_attrs.get("final") or {}
    if final.get("pareto"):
        rows = [row for row in final["rows"] if row["heldout"].get("status") == "ok"]
        points = [{"trial": row["trial"], "label": row["label"] or f"trial {row['trial']}", "metric": row["heldout"][objectives[0]],
                   "std": row["heldout"].get("std", 0.0), "costs": row["costs"], "front": row["heldout_front"], "preset": row["preset"]}
                  for row in rows]
        return points, f"held-out, {final['final_seeds']} noise sets x {final['final_samples']} samples"
    records = list({r.fingerprint: r for r in storage.history(study) if r.values is not None}.values())
    front = set(pareto_indices(np.asarray([r.values for r in records]))) if records else set()
    points = [{"trial": r.number, "label": r.tags.get("label") or f"trial {r.number}", "metric": r.values[0], "std": 0.0,
               "costs": dict(zip(objectives[1:], r.values[1:])), "front": i in front, "preset": r.tags.get("origin") == "initial"}
              for i, r in enumerate(records)]
    return points, "search noise (no final stage yet)"


def front_rows(study) -> list[dict[str, Any]]:
    """The front (then the presets off it) as table rows, cheapest first."""
    objectives = objectives_of(study)
    if objectives is None:
        return []
    points, measured = front_points(study)
    shown = sorted((p for p in points if p["front"] or (p["preset"] and measured.startswith("held-out"))),
                   key=lambda p: (not p["front"], tuple(p["costs"].get(c) or 0.0 for c in objectives[1:]), p["metric"]))
    return [{"trial": p["trial"], "schedule": p["label"], "front": "yes" if p["front"] else "", **{c: p["costs"].get(c) for c in objectives[1:]},
             objectives[0]: f"{p['metric']:.4g} +- {p['std']:.2g}" if p["std"] else f"{p['metric']:.4g}"} for p in shown]


def plot_front(study, path: Path) -> Path:
    """Metric against the first cost: every point, the front as a line, the presets as squares (error bars: seed std)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    objectives = objectives_of(study)
    if objectives is None:
        raise DiffsearchError(f"--plot: study {study.study_name!r} searched one objective; a front needs --objectives METRIC,COST")
    points, measured = front_points(study)
    cost = objectives[1]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for kind, marker, chosen in (("searched", "o", [p for p in points if not p["preset"]]), ("presets", "s", [p for p in points if p["preset"]])):
        if chosen:
            axis.errorbar([p["costs"][cost] for p in chosen], [p["metric"] for p in chosen], yerr=[p["std"] for p in chosen],
                          fmt=marker, alpha=0.6, markersize=5, label=kind, capsize=2)
    front = sorted((p for p in points if p["front"]), key=lambda p: p["costs"][cost])
    axis.plot([p["costs"][cost] for p in front], [p["metric"] for p in front], "k-", linewidth=1, label="Pareto front", drawstyle="steps-post")
    values = [p["metric"] for p in points]
    axis.set(xlabel=cost, ylabel=f"{objectives[0]} (lower is better)", title=f"{study.study_name}: {measured}",
             yscale="log" if values and min(values) > 0 and max(values) > 10 * min(values) else "linear")
    axis.title.set_fontsize(8)
    axis.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(Path(path)) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
    return Path(path)


def pareto_tables(names: list[str], storage_url: str | None, plot: str | None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Front rows of every study that searched several objectives, and the ``--plot`` PNG of the first one (checked before any work)."""
    from diffsearch.files import check_output_file

    if plot is not None:
        check_output_file(plot, "--plot", create_folder=False)
    studies = [storage.load_existing(name, storage_url) for name in names]
    rows = [{"study": study.study_name, **row} for study in studies for row in front_rows(study)]
    return rows, [] if plot is None else [plot_front(studies[0], Path(plot))]
