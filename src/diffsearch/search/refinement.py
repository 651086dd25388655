"""The optional refinement of the final stage (``--refine``): each searched finalist's timesteps, t_end
and scaling coefficients go through LD3-style gradient refinement at the same NFE, and the refined
schedule replaces its parent only if it scores better on the search noise."""

from __future__ import annotations

import dataclasses
from typing import Any

from diffsearch.search.executors import evaluate_candidate, evaluation_settings
from diffsearch.search.records import Record
from diffsearch.solvers.anchors import LD3_SEED
from diffsearch.solvers.anchors.ld3 import refine
from diffsearch.solvers.anchors.teacher import anchor_noise, teacher_final

REFINE_SAMPLES = 100  # teacher pairs, split 50/50 train/validation as LD3


def refine_finalists(run: Any, finalists: list[Record]) -> list[Record]:
    """Refined finalists where refinement won on the search noise; presets and losers are kept as they were."""
    x_T, cond = anchor_noise(run.model, REFINE_SAMPLES, LD3_SEED)
    targets: dict[tuple[float, float], Any] = {}
    result = []
    for record in finalists:
        plan = run.space.plan(record.candidate)
        schedule = plan.schedule
        if record.tags.get("origin") == "initial" or schedule.timesteps[-1] == 0.0 or not plan.full_network:
            result.append(record)
            continue
        ends = (schedule.timesteps[0], schedule.timesteps[-1])
        if ends not in targets:
            targets[ends] = teacher_final(run.model, x_T, cond, run.config.guidance, *ends)
        t_end_range = getattr(run.space, "t_end_range", None)
        refined = refine(run.model, schedule, targets[ends], x_T, cond, run.config.guidance, t_end_range=t_end_range)
        if refined is not schedule:  # back through the space, so that what is scored is what the candidate runs
            refined = run.space.plan(run.space.from_schedule(refined)).schedule
        result.append(_better(run, record, refined) if refined is not schedule else record)
    return result


def _better(run: Any, record: Record, refined) -> Record:
    """The refined record if its objective on the search noise (the search's own evaluation) beats the parent's."""
    candidate = run.space.from_schedule(refined)
    settings = evaluation_settings(run.config, run.space, run.metric, run.search_samples)
    scores = evaluate_candidate(run.model, run.space, candidate, settings)
    value = scores.get(run.metric)
    if scores.get("status") != "ok" or value is None or not value < record.value:
        return record
    tags = {**record.tags, "refined": True, "label": f"{record.tags.get('label') or record.number}+refined",
            "parent_search_value": record.value}
    return dataclasses.replace(record, candidate=candidate, value=value, tags=tags)
