"""What a finished search's artifact says, in words: which schedule was exported, what it is compared
with, and whether the margin is larger than the noise floor of the metric."""

from __future__ import annotations

from typing import Any


def exported_is_preset(provenance: dict[str, Any]) -> bool:
    """True when the exported finalist is one of the space's presets (they carry a ``preset:`` label)."""
    return str(provenance.get("label") or "").startswith("preset:")


def verdict(metrics: dict[str, Any], provenance: dict[str, Any]) -> str:
    """One sentence: what was exported, the margin over the best preset, and whether it is inside the noise floor."""
    objective, heldout = metrics["objective"], metrics["heldout"]
    value, samples = heldout.get(objective), heldout.get("samples")
    baseline = metrics.get("baseline") or {}
    base = (baseline.get("heldout") or {}).get(objective)
    if exported_is_preset(provenance):
        text = f"no candidate beat the presets; exporting preset {provenance['label']} ({objective} {value:.4g}, {samples} held-out samples)"
        if base is not None and baseline.get("schedule") != provenance["label"]:
            text += f"; the preset best on search noise, {baseline['schedule']}, scored {base:.4g}"
        return text + _floor_clause(metrics, None if base is None else base - value)
    failed = "".join(f"; preset {f['label']} failed on held-out noise ({f['error']})" for f in metrics.get("baselines_failed") or [])
    if base is None:
        return f"exported the searched schedule ({objective} {value:.4g}, {samples} held-out samples); no preset was re-scored beside it" + failed
    margin = base - value
    text = (f"searched schedule {objective} {value:.4g} vs best preset {baseline['schedule']} {base:.4g} "
            f"({samples} held-out samples): better by {margin:.3g} ({100 * margin / base:.1f}%)")
    return text + _floor_clause(metrics, margin) + failed


def _floor_clause(metrics: dict[str, Any], margin: float | None) -> str:
    """``; inside the noise floor ...: a tie`` when the objective stored a noise floor (``metrics["noise"]``)."""
    noise = metrics.get("noise")
    if not noise or margin is None or noise.get("floor") is None:
        return ""
    where = "inside" if abs(margin) <= noise["floor"] else "outside"
    tie = ": a tie" if where == "inside" else ""
    return (f"; {where} the noise floor {noise['floor']:.3g} (seed std {noise.get('std', float('nan')):.3g} "
            f"over {noise.get('samples')} samples){tie}")
