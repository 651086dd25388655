"""``search show``: a study's candidates and s3 stages (two tables) and its plots (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffsearch.files import atomic_path
from diffsearch.search import storage


def origin(tags: dict[str, Any]) -> str:
    """Where a candidate came from: its preset label, or the operator (mutation, crossover, random ...)."""
    if tags.get("origin") == "initial":
        return tags.get("label") or "preset"
    return tags.get("operator") or tags.get("origin", "")


def _finalists(study) -> dict[int, dict[str, Any]]:
    final = study.user_attrs.get("final") or {}
    return {row["trial"]: row for row in final.get("rows", [])}


def metric_of(study) -> str:
    """The study's objective: its config's metric, else the one its final stage scored."""
    config = study.user_attrs.get("config") or {}
    final = study.user_attrs.get("final") or {}
    if config.get("metric") or (study.user_attrs.get("objective") or {}).get("metric"):
        return config.get("metric") or study.user_attrs["objective"]["metric"]
    for row in final.get("rows", []):
        for key, value in row.get("heldout", {}).items():
            if isinstance(value, float) and key not in ("wall_time_s", "seconds_per_sample", "std"):
                return key
    return "objective"


def search_samples(study) -> int | None:
    """Samples behind each search-noise value (from the first completed trial's result)."""
    for trial in study.get_trials(deepcopy=False):
        samples = (trial.user_attrs.get("result") or {}).get("samples")
        if samples:
            return int(samples)
    return None


def top_rows(study, top: int) -> list[dict[str, Any]]:
    """The best distinct candidates by search-noise ``value``, their origin, and ``held_out`` when a finalist."""
    metric, finalists = metric_of(study), _finalists(study)
    seen, rows = set(), []
    for record in sorted((r for r in storage.history(study) if r.value is not None), key=lambda r: r.value):
        if record.fingerprint in seen:
            continue
        seen.add(record.fingerprint)
        heldout = (finalists.get(record.number) or {}).get("heldout", {}).get(metric)
        rows.append({"study": study.study_name, "trial": record.number, "value": record.value,
                     "held_out": "" if heldout is None else heldout, "origin": origin(record.tags),
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


def legend(study) -> str:
    """What the candidate table's value columns hold: the metric and the samples behind each."""
    final = study.user_attrs.get("final") or {}
    return (f"{metric_of(study)}; value: {search_samples(study)} search-noise samples, "
            f"held_out: {final.get('final_samples', '-')} held-out samples, finalists only")


def study_report(names: list[str], storage_url: str | None, top: int, plots: str | None) -> tuple[dict[str, list[dict[str, Any]]], list[Path], str]:
    """The two tables (``candidates``, ``stages``), the PNG files written, and the value columns' legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = [storage.load_existing(name, storage_url) for name in names]
    folder = Path(plots) if plots else storage.RUNS_DIR / names[0]
    folder.mkdir(parents=True, exist_ok=True)
    tables = {"candidates": [row for study in studies for row in top_rows(study, top)],
              "stages": [row for study in studies for row in gating_rows(study)]}
    written = [plot_best_so_far(studies, folder / "best_so_far.png", plt)]
    points = final_by_nfe(studies)
    if len(points) > 1:
        written.append(plot_metric_vs_nfe(points, metric_of(studies[0]), folder / "metric_vs_nfe.png", plt))
    return tables, written, legend(studies[0])


def plot_best_so_far(studies, path: Path, plt) -> Path:
    """Best search-noise value per evaluation, the best preset's search-noise level, the finalists' held-out
    values and (when the objective stored one) the held-out seed-spread band."""
    figure, axis = plt.subplots(figsize=(7, 4.2 + 0.5 * len(studies)))
    for study in studies:
        _draw_study(axis, study, len(studies) > 1)
    metric = metric_of(studies[0])
    axis.set(xlabel="expensive evaluations", ylabel=f"{metric} (lower is better)", title=f"best {metric} so far")
    axis.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2 if len(studies) == 1 else 1, frameon=False)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
    return path


def _draw_study(axis, study, named: bool) -> None:
    prefix = f"{study.study_name}: " if named else ""
    completed = [r for r in storage.history(study) if r.value is not None]
    position = {record.number: index for index, record in enumerate(completed, 1)}
    samples = search_samples(study)
    line = axis.plot(range(1, len(completed) + 1), best_so_far(study), drawstyle="steps-post", label=f"{prefix}best so far (search noise, {samples} samples)")[0]
    presets = [r.value for r in completed if r.tags.get("origin") == "initial"]
    if presets:
        axis.axhline(min(presets), color=line.get_color(), linestyle="--", linewidth=1,
                     label=f"{prefix}best preset (search noise, {samples} samples)")
    final = study.user_attrs.get("final") or {}
    rows = [row for row in final.get("rows", []) if row["heldout"].get(metric_of(study)) is not None and row["trial"] in position]
    if rows:
        metric = metric_of(study)
        axis.scatter([position[row["trial"]] for row in rows], [row["heldout"][metric] for row in rows], marker="o",
                     facecolors="none", edgecolors=line.get_color(), label=f"{prefix}finalists (held-out, {final.get('final_samples')} samples)")
        best = next((row for row in rows if row["trial"] == final.get("best")), None)
        noise = final.get("noise") or {}
        if best is not None and noise.get("std") is not None:
            value = best["heldout"][metric]
            axis.axhspan(value - noise["std"], value + noise["std"], color=line.get_color(), alpha=0.15,
                         label=f"{prefix}held-out seed spread (±1 std, {noise.get('samples')} samples)")


def final_by_nfe(studies) -> list[tuple[int, float, float | None, bool, int]]:
    """(NFE, held-out best, held-out best preset, tie, held-out samples) of studies with a final stage; ``tie`` when the
    paired comparison (``final["comparison"]``) finds the margin within twice the seed std."""
    points = []
    for study in studies:
        final = study.user_attrs.get("final")
        if not final:
            continue
        rows, metric = {row["trial"]: row for row in final["rows"]}, metric_of(study)
        baseline = rows.get(final["baseline"])
        points.append((rows[final["best"]]["heldout"]["nfe"], rows[final["best"]]["heldout"][metric],
                       baseline["heldout"].get(metric) if baseline else None,
                       (final.get("comparison") or {}).get("beyond_two_std") is False,
                       final.get("final_samples")))
    return sorted(points)


def plot_metric_vs_nfe(points, metric: str, path: Path, plt) -> Path:
    """Held-out searched and best-preset values against NFE; a point whose margin is within twice the seed std is marked 'tie'."""
    figure, axis = plt.subplots(figsize=(7, 4.2))
    samples = "/".join(str(n) for n in dict.fromkeys(p[4] for p in points))
    axis.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"searched (held-out, {samples} samples)")
    baseline = [(p[0], p[2]) for p in points if p[2] is not None]
    if baseline:
        axis.plot(*zip(*baseline), "s--", label=f"best preset (held-out, {samples} samples)")
    for nfe, value, *_ in (p for p in points if p[3]):
        axis.annotate("tie (within 2 seed std)", (nfe, value), textcoords="offset points", xytext=(4, 6), fontsize=8)
    values = [p[1] for p in points] + [p[2] for p in points if p[2] is not None]
    axis.set(xlabel="NFE", ylabel=f"held-out {metric} (lower is better)", title=f"{metric} against NFE",
             yscale="log" if max(values) > 10 * min(values) > 0 else "linear")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=110, format="png")
    plt.close(figure)
    return path
