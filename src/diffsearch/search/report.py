"""``search show``: the top candidates of a study and its plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffsearch.files import atomic_path
from diffsearch.search import storage


def top_rows(study, top: int) -> list[dict[str, Any]]:
    """The best distinct candidates by search value."""
    seen, rows = set(), []
    for record in sorted((r for r in storage.history(study) if r.value is not None), key=lambda r: r.value):
        if record.fingerprint in seen:
            continue
        seen.add(record.fingerprint)
        rows.append({"study": study.study_name, "trial": record.number, "value": record.value,
                     "origin": record.tags.get("label") or record.tags.get("origin", ""),
                     "gate": record.tags.get("gate", ""),
                     "steps": len(record.candidate.get("steps", record.candidate.get("timesteps", [])[1:]))})
        if len(rows) == top:
            break
    return rows


def gating_rows(study) -> list[dict[str, Any]]:
    """One row per s3 stage: gate mode, online Kendall tau (labels), offspring, proxied, promoted+explorers."""
    gates = sorted((v for k, v in study.user_attrs.items() if k.startswith("s3:gate:") and v), key=lambda g: g["stage"])
    return [{"study": study.study_name, "stage": g["stage"], "gate": g.get("mode", ""),
             "online_tau": "-" if g.get("online_tau") is None else f"{g['online_tau']:.2f} ({g.get('tau_labels', 0)})",
             "offspring": g.get("offspring", 0), "proxied": g.get("proxied", 0),
             "promoted": f"{g.get('promoted', 0)}+{g.get('explorers', 0)}"} for g in gates]


def best_so_far(study) -> list[float]:
    """Best search value after each completed evaluation."""
    values, best = [], float("inf")
    for record in storage.history(study):
        if record.value is not None:
            best = min(best, record.value)
            values.append(best)
    return values


def study_report(names: list[str], storage_url: str | None, top: int, plots: str | None) -> tuple[list[dict[str, Any]], list[Path]]:
    """Rows for the table and the PNG files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = [storage.load_existing(name, storage_url) for name in names]
    folder = Path(plots) if plots else storage.RUNS_DIR / names[0]
    folder.mkdir(parents=True, exist_ok=True)
    rows = [row for study in studies for row in top_rows(study, top)]
    rows += [row for study in studies for row in gating_rows(study)]
    figure, axis = plt.subplots(figsize=(6, 4))
    for study in studies:
        axis.plot(range(1, len(best_so_far(study)) + 1), best_so_far(study), label=study.study_name)
    metric = (studies[0].user_attrs.get("config") or {}).get("metric") or "objective"
    axis.set(xlabel="expensive evaluations", ylabel=f"best {metric} (search noise)", yscale="log", title="best so far")
    axis.legend(fontsize=7)
    written = [folder / "best_so_far.png"]
    figure.tight_layout()
    with atomic_path(written[0]) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    points = _final_by_nfe(studies)
    if len(points) > 1:
        written.append(_plot_nfe(points, folder, plt))
    return rows, written


def _final_by_nfe(studies) -> list[tuple[int, float, float | None]]:
    """(NFE, held-out best, held-out best preset) of studies with a final stage."""
    points = []
    for study in studies:
        final, config = study.user_attrs.get("final"), study.user_attrs.get("config") or {}
        if not final:
            continue
        rows = {row["trial"]: row for row in final["rows"]}
        metric = config.get("metric") or next(k for k in rows[final["best"]]["heldout"] if k not in ("status", "nfe", "samples", "seed", "wall_time_s", "seconds_per_sample"))
        baseline = rows.get(final["baseline"])
        points.append((rows[final["best"]]["heldout"]["nfe"], rows[final["best"]]["heldout"][metric],
                       baseline["heldout"].get(metric) if baseline else None))
    return sorted(points)


def _plot_nfe(points, folder: Path, plt) -> Path:
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot([p[0] for p in points], [p[1] for p in points], "o-", label="searched")
    baseline = [(p[0], p[2]) for p in points if p[2] is not None]
    if baseline:
        axis.plot(*zip(*baseline), "s--", label="best preset")
    axis.set(xlabel="NFE", ylabel="held-out metric", yscale="log", title="metric against NFE")
    axis.legend()
    path = folder / "metric_vs_nfe.png"
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return path
