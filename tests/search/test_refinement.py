"""`refine: true`: the final stage refines searched finalists and keeps a refined one only if it wins on search noise."""

from __future__ import annotations

from diffsearch.search.config import RunConfig
from diffsearch.search.runner import final_stage, prepare, search_loop


def _final(tmp_path, refine: bool) -> dict:
    config = RunConfig.model_validate({
        "model": "gmm", "space": "timesteps", "solver": "unipc_bh2", "budget": "4nfe", "strategy": "random",
        "evals": 6, "search_samples": 400, "final_samples": 800, "final_top": 2, "metric": "teacher_error",
        "storage": "sqlite:///:memory:", "progress": False, "cache": False, "refine": refine})
    run = prepare(config)
    search_loop(run)
    return final_stage(run)


def test_refine_replaces_a_finalist_only_when_better_on_search_noise(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFSEARCH_CACHE", str(tmp_path))
    plain, refined = _final(tmp_path, False), _final(tmp_path, True)
    assert refined["refine"] is True and plain["refine"] is False
    before = {row["trial"]: row for row in plain["rows"]}
    replaced = [row for row in refined["rows"] if row["label"] and row["label"].endswith("+refined")]
    assert replaced, [row["label"] for row in refined["rows"]]
    for row in replaced:
        assert row["search_value"] < before[row["trial"]]["search_value"]
        assert len(row["candidate"]["timesteps"]) == 5
