"""The page's PNG plots of one study (matplotlib, Agg backend), by kind."""

from __future__ import annotations

import io
import threading
from typing import Any

from diffsearch.registry import Registry

PLOTS: Registry = Registry("plot")
LOCK = threading.Lock()  # matplotlib (pyplot state, mathtext parser) is not thread-safe; requests are


def render(kind: str, detail: dict[str, Any]) -> bytes:
    """The PNG of plot ``kind``, one at a time."""
    draw = PLOTS.get(kind)
    with LOCK:
        return draw(detail)


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(5.5, 3.4))


def _png(plt, figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()


@PLOTS.register("best_so_far")
def best_so_far_png(detail: dict[str, Any]) -> bytes:
    """Best search value after each expensive evaluation."""
    plt, figure, axis = _figure()
    curve = detail["best_so_far"]
    axis.plot(range(1, len(curve) + 1), curve, "o-", markersize=3)
    positive = all(value > 0 for value in curve)
    axis.set(xlabel="expensive evaluations", ylabel=f"best {detail.get('metric') or 'objective'} (search noise)",
             yscale="log" if curve and positive else "linear", title=f"{detail['name']}: best so far")
    return _png(plt, figure)


@PLOTS.register("pareto")
def pareto_png(detail: dict[str, Any]) -> bytes:
    """Objective against measured seconds per sample: every evaluation, the non-dominated front joined."""
    plt, figure, axis = _figure()
    points = [(cost * 1e6, value) for cost, value in detail["points"] if cost is not None and value is not None]
    front = detail["pareto"]
    if points:
        axis.scatter(*zip(*points), s=10, color="tab:blue", alpha=0.5, label="evaluated")
    axis.plot([p["seconds_per_sample"] * 1e6 for p in front], [p["value"] for p in front], "o-", color="tab:red", label="Pareto front")
    axis.set(xlabel="seconds per sample (x1e-6)", ylabel=detail.get("metric") or "objective",
             yscale="log" if front and all(p["value"] > 0 for p in front) else "linear", title=f"{detail['name']}: objective against cost")
    axis.legend(fontsize=8)
    return _png(plt, figure)
