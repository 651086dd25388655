"""The final stage compares with a preset that passes on held-out noise: when the best preset by search value
fails there (diverged, out of range), the next ones are re-scored, and the failure is named in the summary."""

from __future__ import annotations

from diffsearch.search import runner
from diffsearch.search.records import Record
from diffsearch.search.summary import verdict


def _preset(number: int, label: str) -> Record:
    return Record(number=number, candidate={"n": number}, value=0.1 * number, fingerprint=str(number), tags={"origin": "initial", "label": label})


def test_failed_best_preset_falls_back_to_the_next_ones(monkeypatch):
    failing = {"preset:a", "preset:b"}

    def finalist(run, record, seeds, index, total):
        status = "failed" if record.tags["label"] in failing else "ok"
        return {"trial": record.number, "label": record.tags["label"], "heldout": {"status": status, "error": "1.2% out of range"}}

    monkeypatch.setattr(runner, "_finalist", finalist)
    presets = [_preset(1, "preset:a"), _preset(2, "preset:b"), _preset(3, "preset:c"), _preset(4, "preset:d")]
    first = finalist(None, presets[0], [1], 1, 1)
    extra = runner._fallback_presets(None, presets, [first], [1])
    assert [row["label"] for row in extra] == ["preset:b", "preset:c"]  # stops at the first that passes; d never runs
    failing |= {"preset:c", "preset:d"}
    assert len(runner._fallback_presets(None, presets, [first], [1])) == runner.FALLBACK_PRESETS


def test_summary_names_a_preset_that_failed_on_heldout_noise():
    metrics = {"objective": "teacher_error", "heldout": {"teacher_error": 0.027, "samples": 2000},
               "baseline": {"schedule": "preset:c", "heldout": {"teacher_error": 0.07}},
               "baselines_failed": [{"label": "preset:a", "error": "1.2% of samples lie outside the data range"}]}
    text = verdict(metrics, {"label": None})
    assert "preset:c" in text and "preset preset:a failed on held-out noise (1.2% of samples lie outside the data range)" in text
