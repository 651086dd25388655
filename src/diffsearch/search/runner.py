"""The ask/tell search loop, the final held-out stage, and the exported artifact."""

from __future__ import annotations

import logging
import math
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from diffsearch.budget import parse_budget
from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.evaluate import METRICS, default_metrics, evaluate
from diffsearch.evaluators.noise import SEARCH_SEED
from diffsearch.export.artifact import save_schedule
from diffsearch.models.denoiser import Denoiser
from diffsearch.models.loading import load_model
from diffsearch.search import storage
from diffsearch.search.config import RunConfig, parse_duration, validate_config
from diffsearch.search.records import Run
from diffsearch.search.strategies import STRATEGIES, Strategy
from diffsearch.spaces.base import SPACES, Candidate, SearchSpace, build_space, candidate_fingerprint
from diffsearch.solvers.plan import Plan
from diffsearch.solvers.schedule import Schedule

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    """What ``run_search`` returns: the exported schedule (its metrics and provenance) and where it was written;
    ``plan`` is the exported plan when the best candidate changes the network (a ``diffsearch.plan/v1`` file)."""

    study: str
    schedule: Schedule
    path: Path
    plan: Plan | None = None


def sample_counts(model: Denoiser, config: RunConfig) -> tuple[int, int]:
    """Search and final sample counts (per held-out set): cheap exact models get more samples."""
    search, final = (4000, 20000) if model.truth is not None else (1000, 2000)
    return config.search_samples or search, config.final_samples or final


def check_budget(config: RunConfig):
    """The config's budget, parsed strictly in the units its space accepts (before any other check or work)."""
    return parse_budget(config.budget, SPACES.get(config.space).budget_units, f"space {config.space}")


def check_objectives(config: RunConfig) -> None:
    """The objective metric is registered (costs are checked with the config): before any model is loaded."""
    if config.objectives:
        METRICS.get(config.objectives[0])


def resolve(config: RunConfig) -> tuple[Denoiser, SearchSpace, str]:
    """The model (on ``config.device``), the search space and the objective metric a config names."""
    check_budget(config)
    model = load_model(config.model).to(config.device)
    space = build_space(model, config.space_settings())
    metric = config.objective_metric() or default_metrics(model, config.reference)[0]
    METRICS.get(metric)
    if config.features:
        from diffsearch.evaluators.features import FEATURE_EXTRACTORS

        FEATURE_EXTRACTORS.get(config.features)
    return model, space, metric


def output_path(config: RunConfig) -> Path:
    """Where the artifact goes: ``--out``, else runs/<study>/best.json."""
    return Path(config.out) if config.out else storage.RUNS_DIR / config.study_name() / "best.json"


def preflight(config: RunConfig) -> None:
    """Check, before any model is loaded, that the study name is safe and the study and artifact can be written."""
    from diffsearch.files import check_output_file

    storage.check_storage(config.study_name(), config.storage)
    check_output_file(output_path(config), "--out", create_folder=config.out is None)


def prepare(config: RunConfig) -> Run:
    """Resolve names to objects and open (or resume) the study."""
    model, space, metric = resolve(config)
    strategy = STRATEGIES.get(config.strategy)(space, seed=config.seed, **config.strategy_options)
    objectives = len(config.objectives) if config.pareto else 1
    study = storage.open_study(config.study_name(), config.storage, strategy.optuna_sampler(), config.identity(), objectives)
    stored = (study.user_attrs.get("objective") or {}).get("metric")
    if config.objective_metric() is None and stored is not None:  # a resumed study keeps the objective it was searched with
        metric = stored
    from diffsearch.evaluators.cache import cache_for
    from diffsearch.search.executors import make_executor

    run = Run(config, model, space, strategy, study, metric, *sample_counts(model, config), cache=cache_for(model, config.cache))
    run.executor = make_executor(run)
    if hasattr(strategy, "attach"):
        strategy.attach(_proxy_runner(run), config.max_attempts)
    return run


def _proxy_runner(run: Run):
    """``run_batch(candidates, samples, metric)`` for the s3 proxies: through the run's executor, like every evaluation."""
    from diffsearch.search.executors import evaluate_batch, proxy_settings

    def run_batch(candidates: list[Candidate], samples: int, metric: str) -> list[dict[str, Any]]:
        run.executor.timeout = eval_timeout(run)
        return evaluate_batch(run.executor, candidates, proxy_settings(samples, metric))

    run_batch.slots = run.executor.slots
    return run_batch


FIRST_EVALUATIONS, TIMEOUT_FACTOR, MIN_TIMEOUT_S, UNMEASURED_TIMEOUT_S = 5, 10.0, 60.0, 900.0


def eval_timeout(run: Run) -> float:
    """``--eval-timeout``, else 10x the slowest of the first 5 completed evaluations (at least 60 s; 900 s before any)."""
    if run.config.eval_timeout:
        return parse_duration(run.config.eval_timeout)
    walls = [t.user_attrs["result"].get("wall_time_s") or 0.0 for t in run.study.get_trials(deepcopy=False)
             if t.values is not None and isinstance(t.user_attrs.get("result"), dict)][:FIRST_EVALUATIONS]
    return max(MIN_TIMEOUT_S, TIMEOUT_FACTOR * max(walls)) if walls else UNMEASURED_TIMEOUT_S


def phase(run: Run, message: str) -> None:
    """One line saying which long phase starts: on stderr via ``search.progress`` (when progress is shown)."""
    _log.info(message)


def prepare_objective(run: Run) -> dict[str, Any]:
    """Teacher resolution, teacher reference and noise floors of the objective, computed once (cached) before the search."""
    from diffsearch.evaluators.evaluate import TEACHER_METRICS, TEACHER_REFERENCE_SAMPLES, default_features, teacher_reference
    from diffsearch.evaluators.floor import RUN_FLOOR_SEEDS, noise_floor
    from diffsearch.evaluators.teacher import converged_steps

    started, guidance = time.perf_counter(), run.config.guidance
    features = run.config.features or default_features(run.model, run.metric)
    info: dict[str, Any] = {"metric": run.metric, "features": None if run.metric in ("teacher_error", "frechet_exact") else features}
    if run.metric in (*TEACHER_METRICS, "teacher_error"):
        phase(run, "teacher: choosing its resolution (two resolutions must agree)")
        info["teacher"] = converged_steps(run.model, guidance).as_dict()
    if run.metric in TEACHER_METRICS:
        phase(run, f"teacher reference: {TEACHER_REFERENCE_SAMPLES} samples at {info['teacher']['steps']} steps")
        teacher_reference(run.model, features, TEACHER_REFERENCE_SAMPLES, guidance)
    floors = {}
    for label, count in (("search", run.search_samples), ("final", run.final_samples)):
        phase(run, f"noise floor of {run.metric} at {count} samples")
        floors[label] = noise_floor(run.model, run.metric, count, features=run.config.features, guidance=guidance,
                                    reference=run.config.reference, seeds=RUN_FLOOR_SEEDS)
    info.update(floors=floors, seconds=time.perf_counter() - started)
    return info



def start_trial(run: Run, trial, candidate: Candidate, tags: dict[str, Any]) -> bool:
    """Record the candidate on its trial; False when an identical one's value was reused (told)."""
    fingerprint = candidate_fingerprint(candidate)
    if run.lease is not None:
        trial.set_user_attr("driver", run.lease.id)
    for key, value in (("candidate", candidate), ("fingerprint", fingerprint), ("tags", tags)):
        trial.set_user_attr(key, storage.json_safe(value))
    return not _told_duplicate(run, trial, fingerprint)


def _told_duplicate(run: Run, trial, fingerprint: str) -> bool:
    previous = storage.completed_value(run.study, fingerprint)
    if previous is None:
        return False
    trial.set_user_attr("duplicate_of", previous[0])
    run.study.tell(trial, previous[1])
    return True


def tell_result(run: Run, trial, result: dict[str, Any]) -> None:
    """Tell an executor's result: finite objective -> complete, anything else -> failed trial."""
    if run.executor.slots > 1 and _told_duplicate(run, trial, trial.user_attrs["fingerprint"]):
        return  # a parallel twin finished first
    if result["status"] == "interrupted":  # stopped at the --time deadline: re-queued on resume, not an attempt
        storage.mark_interrupted(run.study, trial, result["error"])
        return
    trial.set_user_attr("result", storage.json_safe(result))
    values = objective_values(run, trial.user_attrs["candidate"], result) if result["status"] == "ok" else [math.nan]
    if not all(math.isfinite(value) for value in values):
        trial.set_user_attr("error", result.get("error", f"{', '.join(run.config.objectives or [run.metric])} not finite"))
        run.study.tell(trial, state=_failed())
        return
    run.study.tell(trial, values)


def objective_values(run: Run, candidate: Candidate, result: dict[str, Any]) -> list[float]:
    """What the study minimises for one evaluation: the metric, then (several objectives) each cost."""
    if not run.config.pareto:
        value = result.get(run.metric)
        return [math.nan if value is None else float(value)]
    from diffsearch.search.pareto import objective_values as vector

    return vector(run.config.objectives, result, run.space.cost(candidate))


def _tell_owned(run: Run, trial, result: dict[str, Any]) -> None:
    """``tell_result``, unless another driver already finished the trial (it judged this driver's lease expired)."""
    from optuna.exceptions import UpdateFinishedTrialError

    try:
        tell_result(run, trial, result)
    except UpdateFinishedTrialError:
        pass


def _failed():
    import optuna

    return optuna.trial.TrialState.FAIL


def next_trial(run: Run, pending: list[dict[str, Any]]):
    """Ask the study for a trial and the strategy (or the re-queue) for its candidate."""
    if pending:
        item = pending.pop(0)
        return _ask(run), item["candidate"], {**item["tags"], "requeued": True}
    history = storage.history(run.study)
    distributions = run.strategy.distributions(history)
    trial = _ask(run, distributions)
    rng = np.random.default_rng([run.config.seed, len(history)])  # proposals so far: killed attempts do not shift it
    params = trial.params if distributions else None
    from diffsearch.search.executors import INTERRUPTED, DeadlineReached

    try:
        candidate, tags = run.strategy.propose(history, params, rng, storage.state_of(run.study, run.lease))
    except DeadlineReached:  # the deadline stopped the proposal's proxies: nothing to evaluate, the loop ends
        storage.mark_interrupted(run.study, trial, INTERRUPTED)
        return None
    return trial, candidate, tags


def _ask(run: Run, distributions: dict[str, Any] | None = None):
    """A new trial, marked with this driver's lease at once: a joined driver never takes it (or its proposal) for stale."""
    trial = run.study.ask(distributions) if distributions else run.study.ask()
    if run.lease is not None:
        trial.set_user_attr("driver", run.lease.id)
    return trial


def search_loop(run: Run) -> None:
    """Ask, evaluate, tell until ``evals`` expensive evaluations exist or ``time`` is up.

    Up to ``executor.slots`` trials are in flight at once; results are told as they complete.
    """
    pending = storage.recover_stale(run.study, run.config.max_attempts, run.lease)
    deadline = time.monotonic() + parse_duration(run.config.time) if run.config.time else math.inf
    evals = run.config.evals or 10**9
    budget_of_trials = len(run.study.trials) + 5 * evals + 100
    inflight: dict[int, Any] = {}
    run.executor.deadline = deadline  # running evaluations stop there too (interrupted, re-queued)
    failures = FailFast(storage.count_evaluations(run.study))

    def may_ask() -> bool:
        return (len(inflight) < run.executor.slots and time.monotonic() < deadline and len(run.study.trials) < budget_of_trials
                and storage.count_evaluations(run.study)["expensive"] + len(inflight) < evals)

    with _progress(run, evals) as update:
        try:
            while True:
                while may_ask():
                    proposed = next_trial(run, pending)
                    if proposed is None:
                        break
                    trial, candidate, tags = proposed
                    if start_trial(run, trial, candidate, tags):
                        run.executor.timeout = eval_timeout(run)
                        run.executor.submit(trial.number, candidate)
                        inflight[trial.number] = trial
                    else:
                        update()
                if not inflight:
                    break
                number, result = run.executor.next_result()
                _tell_owned(run, inflight.pop(number), result)
                failures.check(result, run.metric)
                update()
        finally:
            run.executor.close()


FAIL_FAST = 20


class FailFast:
    """Stop a search whose first ``FAIL_FAST`` evaluations all failed (a broken model, an infeasible budget), naming
    their most common reason in one line, instead of running every remaining trial into the same failure."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.succeeded, self.reasons = counts["expensive"] > 0, [] if counts["expensive"] else ["(earlier)"] * counts["failed"]

    def check(self, result: dict[str, Any], metric: str) -> None:
        value = result.get(metric)
        if result.get("status") == "ok" and value is not None and math.isfinite(value):
            self.succeeded = True
        if self.succeeded:
            return
        self.reasons.append(str(result.get("error") or f"{metric} is not finite").splitlines()[0])
        if len(self.reasons) >= FAIL_FAST:
            known = [reason for reason in self.reasons if reason != "(earlier)"] or self.reasons
            reason = max(set(known), key=known.count)
            raise DiffsearchError(f"the first {len(self.reasons)} evaluations all failed ({known.count(reason)} of them: {reason}); "
                                  "stopping the search")


class _progress:
    """The search's progress (``search.progress``): best so far, evaluations by fidelity, ETA."""

    def __init__(self, run: Run, evals: int) -> None:
        from diffsearch.search.progress import SearchProgress

        self.run, self.bar = run, SearchProgress(run.study.study_name, evals, run.metric, run.config.progress)

    def __enter__(self):
        self.bar.__enter__()
        self()
        return self

    def __call__(self) -> None:
        if not self.bar.enabled:
            return
        counts = storage.count_evaluations(self.run.study)
        predicted = sum((v or {}).get("predicted", 0) for k, v in self.run.study.user_attrs.items() if k.startswith("s3:stats:"))
        detail = f"predicted {predicted} failed {counts['failed']} dup {counts['duplicates']}"
        self.bar.update(counts["expensive"], _best_value(self.run.study), detail)

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)


def _best_value(study) -> float:
    """The best metric so far (with several objectives: the lowest first objective)."""
    if len(study.directions) > 1:
        values = [t.values[0] for t in study.get_trials(deepcopy=False) if t.values is not None]
        return min(values) if values else math.nan
    try:
        return study.best_value
    except ValueError:
        return math.nan


def _ranked(run: Run) -> list[storage.Record]:
    """Completed, distinct candidates, best search value first."""
    seen, ranked = set(), []
    for record in sorted((r for r in storage.history(run.study) if r.value is not None), key=lambda r: r.value):
        if record.fingerprint not in seen:
            seen.add(record.fingerprint)
            ranked.append(record)
    return ranked


def _heldout(run: Run, candidate: Candidate, seed: int) -> dict[str, Any]:
    """``_heldout_now``, stored in the study as it completes: a resumed final stage reuses it (same candidate, seed, samples)."""
    from diffsearch.evaluators.evaluate import OBJECTIVE_VERSION

    spec = {"candidate": candidate_fingerprint(candidate), "seed": seed, "samples": run.final_samples, "metric": run.metric,
            "reference": run.config.reference, "features": run.config.features, "guidance": run.config.guidance,
            "objective": OBJECTIVE_VERSION}
    return storage.remembered(run.study, storage.heldout_key(spec), lambda: _heldout_now(run, candidate, seed))


def _heldout_now(run: Run, candidate: Candidate, seed: int) -> dict[str, Any]:
    """Held-out scores on one noise set: the objective plus real-data FID and fd_teacher (the costly teacher error only if it
    is the objective); a side metric that cannot be computed for this model is dropped, never the finalist."""
    others = [m for m in default_metrics(run.model, run.config.reference) if m not in ("teacher_error", "kid", "kid_teacher")]
    for metrics in (list(dict.fromkeys([run.metric, *others])), [run.metric]):
        try:
            return evaluate(run.model, run.space.plan(candidate), samples=run.final_samples, seed=seed, guidance=run.config.guidance,
                            metrics=metrics, reference=run.config.reference, features=run.config.features, cache=run.cache)
        except Exception as error:
            failure = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
    return failure


def _summarise(results: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """A finalist's held-out record over several noise sets: per-seed results, mean, std, worst out-of-range share."""
    ok = all(r.get("status") == "ok" and r.get(metric) is not None for r in results)
    values = [r.get(metric) for r in results]
    summary: dict[str, Any] = {"status": "ok" if ok else "failed", "per_seed": results, "seeds": [r.get("seed") for r in results],
                               "samples": results[0].get("samples") if results else None}
    if ok:
        summary.update({metric: float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                        "values": values, "nfe": results[0]["nfe"]})
        if "out_of_range" in results[0]:
            summary.update(out_of_range=max(r["out_of_range"] for r in results), max_excursion=max(r["max_excursion"] for r in results))
        for key in results[0]:
            if key in METRICS and key != metric:
                summary[key] = float(np.mean([r[key] for r in results]))
    else:
        summary["error"] = next((r.get("error") for r in results if r.get("status") != "ok"), f"{metric} missing")
    return summary


def paired_comparison(best: list[float], baseline: list[float], std: float) -> dict[str, Any]:
    """Mean paired difference (searched - preset) over the held-out sets, its 95% t-interval, and whether it beats twice ``std``."""
    from scipy import stats

    differences = np.asarray(best) - np.asarray(baseline)
    mean = float(differences.mean())
    if len(differences) > 1 and differences.std(ddof=1) > 0:
        low, high = stats.t.interval(0.95, len(differences) - 1, loc=mean, scale=stats.sem(differences))
    else:
        low = high = mean
    return {"mean_difference": mean, "interval95": [float(low), float(high)], "sets": len(differences), "seed_std": std,
            "beyond_two_std": bool(-mean > 2.0 * std), "relative": float(-mean / np.mean(baseline)) if np.mean(baseline) else None}


def _finalist(run: Run, record: storage.Record, seeds: list[int], index: int, total: int) -> dict[str, Any]:
    """One finalist's held-out record over ``seeds``, logged as it finishes."""
    heldout = storage.json_safe(_summarise([_heldout(run, record.candidate, seed) for seed in seeds], run.metric))
    value = heldout.get(run.metric)
    _log.info(f"final stage: {index}/{total} {record.tags.get('label') or 'trial ' + str(record.number)} {run.metric} "
              f"{'-' if value is None else format(value, '.4g')} ({len(seeds)} x {run.final_samples} samples)")
    return {"trial": record.number, "label": record.tags.get("label"), "search_value": record.value,
            "candidate": record.candidate, "heldout": heldout}


def final_stage(run: Run) -> dict[str, Any]:
    """Re-score the top candidates and the best preset on ``final_seeds`` held-out noise sets; pick by the mean."""
    from diffsearch.evaluators.noise import heldout_seeds

    counts = storage.count_evaluations(run.study)
    settings = {"expensive": counts["expensive"], "final_samples": run.final_samples, "final_top": run.config.final_top,
                "final_seeds": run.config.final_seeds, "refine": run.config.refine}
    if run.config.pareto:
        settings["final_front"] = run.config.final_front
    cached = run.study.user_attrs.get("final")
    if cached and all(cached.get(key) == value for key, value in settings.items()):
        return cached
    if run.config.pareto:
        return _store_final(run, pareto_stage(run, settings))
    ranked = _ranked(run)
    if not ranked:
        raise DiffsearchError(f"study {run.study.study_name}: no candidate evaluated successfully; nothing to export")
    presets = [r for r in ranked if r.tags.get("origin") == "initial"]
    chosen = ranked[: run.config.final_top] + ([presets[0]] if presets and presets[0] not in ranked[: run.config.final_top] else [])
    started, seeds = time.perf_counter(), heldout_seeds(run.config.final_seeds)
    phase(run, f"final stage: {len(chosen)} finalists on {len(seeds)} held-out noise sets of {run.final_samples} samples")
    if run.config.refine:  # seconds count into final_s
        from diffsearch.search.refinement import refine_finalists

        chosen = refine_finalists(run, chosen)
    rows = [_finalist(run, r, seeds, i, len(chosen)) for i, r in enumerate(chosen, 1)]
    rows += _fallback_presets(run, presets, rows, seeds)
    ok = [row for row in rows if row["heldout"].get("status") == "ok"]
    if not ok:
        raise DiffsearchError("every finalist failed on held-out noise; nothing to export")
    best = min(ok, key=lambda row: row["heldout"][run.metric])
    by_trial, preset_trials = {row["trial"]: row for row in ok}, {p.number for p in presets}
    baseline = next((by_trial[p.number] for p in presets if p.number in by_trial), None)
    objective = run.study.user_attrs.get("objective") or {}
    noise = (objective.get("floors") or {}).get("final")
    restored = sum(bool(r.get("restored")) for row in rows for r in row["heldout"].get("per_seed", []))
    final = {**settings, "rows": rows, "heldout_evaluations": {"computed": len(rows) * len(seeds) - restored, "restored": restored},
             "best": best["trial"], "baseline": baseline["trial"] if baseline else None,
             "baselines_failed": [{"label": row["label"], "error": row["heldout"].get("error")} for row in rows
                                  if row["trial"] in preset_trials and row["heldout"].get("status") != "ok"],
             "presets_evaluated": len(presets), "final_s": time.perf_counter() - started, "noise": noise,
             "device": str(run.model.device)}
    if baseline is not None:
        std = max((noise or {}).get("std", 0.0), baseline["heldout"]["std"])
        final["comparison"] = paired_comparison(best["heldout"]["values"], baseline["heldout"]["values"], std)
        final["comparison"]["same_candidate"] = best["trial"] == baseline["trial"]
    return _store_final(run, final)


#: presets re-scored after the best one when it fails on held-out noise (diverged, out of range), until one passes.
FALLBACK_PRESETS = 3


def _fallback_presets(run: Run, presets: list, rows: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Held-out rows of the next presets by search value while every preset scored so far failed there."""
    scored = {row["trial"]: row for row in rows}
    extra: list[dict[str, Any]] = []
    for record in presets[: FALLBACK_PRESETS + 1]:
        row = scored.get(record.number)
        if row is None:
            row = _finalist(run, record, seeds, len(rows) + len(extra) + 1, len(rows) + len(extra) + 1)
            extra.append(row)
        if row["heldout"].get("status") == "ok":
            break
    return extra


def _store_final(run: Run, final: dict[str, Any]) -> dict[str, Any]:
    run.study.set_user_attr("final", storage.json_safe(final))
    return final


def pareto_stage(run: Run, settings: dict[str, Any]) -> dict[str, Any]:
    """Several objectives: re-score the search front (at most ``final_front`` members, spread over the cost) and the
    best preset at each cost on held-out noise; the held-out front and each preset against the front at its cost."""
    from diffsearch.evaluators.noise import heldout_seeds
    from diffsearch.search import pareto

    front, presets = pareto.search_front(storage.history(run.study), run.config.final_front)
    if not front:
        raise DiffsearchError(f"study {run.study.study_name}: no candidate evaluated successfully; nothing to export")
    chosen = front + [r for r in presets if r.number not in {f.number for f in front}]
    started, seeds = time.perf_counter(), heldout_seeds(run.config.final_seeds)
    phase(run, f"final stage: {len(front)} front members and {len(chosen) - len(front)} presets on {len(seeds)} "
               f"held-out noise sets of {run.final_samples} samples")
    on_front = {r.number for r in front}
    rows = [{**_finalist(run, r, seeds, i, len(chosen)), "search_values": list(r.values), "search_front": r.number in on_front,
             "preset": r.tags.get("origin") == "initial", "costs": run.space.cost(r.candidate)} for i, r in enumerate(chosen, 1)]
    ok = pareto.heldout_front([row for row in rows if row["heldout"].get("status") == "ok"], run.config.objectives)
    rows = ok + [row for row in rows if row["heldout"].get("status") != "ok"]
    if not ok:
        raise DiffsearchError("every front member failed on held-out noise; nothing to export")
    objective = run.study.user_attrs.get("objective") or {}
    noise = (objective.get("floors") or {}).get("final")
    comparisons = [pareto.against_front(row, ok, run.config.objectives, (noise or {}).get("std", 0.0), paired_comparison)
                   for row in ok if row["preset"]]
    best = min(ok, key=lambda row: row["heldout"][run.metric])
    return {**settings, "rows": rows, "best": best["trial"], "baseline": None, "presets_evaluated": sum(r.tags.get("origin") == "initial" for r in _ranked(run)),
            "final_s": time.perf_counter() - started, "noise": noise, "device": str(run.model.device),
            "pareto": {"objectives": run.config.objectives, "comparisons": [c for c in comparisons if c is not None]}}


def _versions() -> dict[str, str]:
    import importlib.metadata as metadata

    versions = {"python": platform.python_version()}
    for package in ("diffsearch", "torch", "numpy", "scipy", "optuna", "pydantic"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def search_cost(run: Run, final: dict[str, Any]) -> dict[str, Any]:
    """Seconds spent sampling, on metrics and on the predictor; evaluations per fidelity."""
    attrs = run.study.user_attrs
    stats = [v for k, v in attrs.items() if k.startswith("s3:stats:") and v]
    sampling = metric = 0.0
    for trial in run.study.get_trials(deepcopy=False):
        result = trial.user_attrs.get("result") or {}
        wall = result.get("wall_time_s") or 0.0
        sampling += wall
        metric += max((trial.datetime_complete - trial.datetime_start).total_seconds() - wall, 0.0) if trial.datetime_complete and trial.datetime_start else 0.0
    counts = storage.count_evaluations(run.study)
    return {"sampling_s": sampling, "metric_and_overhead_s": metric, "predictor_s": sum(s.get("predictor_s", 0.0) for s in stats),
            "final_s": final["final_s"], "evaluations": {**counts, "predicted": sum(s.get("predicted", 0) for s in stats),
                                                          "final": len(final["rows"]),
                                                          "final_heldout": final.get("heldout_evaluations")}}


def build_artifact(run: Run, final: dict[str, Any], trial: int | None = None) -> Schedule:
    """The best finalist (or finalist ``trial``) as a diffsearch.schedule/v1 artifact with metrics (floor and spread
    beside each value), the Pareto front of a search over several objectives, and provenance."""
    from diffsearch.evaluators.noise import heldout_seeds

    rows = {row["trial"]: row for row in final["rows"]}
    best, baseline = rows[final["best"] if trial is None else trial], rows.get(final["baseline"])
    heldout = {key: value for key, value in best["heldout"].items() if key not in ("status", "per_seed")}
    objective = run.study.user_attrs.get("objective") or {}
    metrics = {"objective": run.metric, "features": objective.get("features"), "heldout": heldout,
               "noise": final.get("noise"), "search_value": best["search_value"], "search_samples": run.search_samples,
               "search_noise": (objective.get("floors") or {}).get("search"), "teacher": objective.get("teacher"),
               "metric_info": ((best["heldout"].get("per_seed") or [{}])[0]).get("metric_info"),
               "comparison": final.get("comparison"),
               "baseline": None if baseline is None else {"schedule": baseline["label"],
                                                          "heldout": {k: v for k, v in baseline["heldout"].items() if k != "per_seed"},
                                                          "presets_evaluated": final.get("presets_evaluated"),
                                                          "presets_in_space": len(run.space.initial())},
               "baselines_failed": final.get("baselines_failed") or []}
    if final.get("pareto"):
        metrics["pareto"] = pareto_record(run, final)
    provenance = {
        "study": run.study.study_name, "trial": best["trial"], "label": best["label"],
        "config": run.config.model_dump(mode="json", exclude={*EXECUTION_FIELDS, "device"}),
        "executions": run.study.user_attrs.get("executions", []), "final_device": final.get("device"),
        "seeds": {"strategy": run.config.seed, "search_noise": SEARCH_SEED, "heldout_noise": heldout_seeds(final.get("final_seeds", 1))},
        "model": {"spec": run.config.model, "name": run.model.name, "fingerprint": run.model.fingerprint,
                  "device": run.model.device},
        "versions": _versions(), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "search_cost": {**search_cost(run, final), "objective_s": objective.get("seconds", 0.0)},
    }
    schedule = run.space.plan(best["candidate"]).schedule
    return Schedule.model_validate({**schedule.model_dump(), "name": f"{run.study.study_name}:best",
                                    "metrics": storage.json_safe(metrics), "provenance": storage.json_safe(provenance)})


def pareto_record(run: Run, final: dict[str, Any]) -> dict[str, Any]:
    """The artifact's front: every re-scored member with its schedule, held-out metric mean +- std, costs and flags."""
    members = [{"trial": row["trial"], "label": row["label"], "schedule": run.space.decode(row["candidate"]).model_dump(mode="json"),
                "heldout": {key: row["heldout"].get(key) for key in (run.metric, "std", "values", "samples", "seeds")},
                "costs": row["costs"], "search_values": row["search_values"], "heldout_front": row.get("heldout_front", False),
                "preset": row["preset"]} for row in final["rows"] if row["heldout"].get("status") == "ok"]
    return {**final["pareto"], "members": members}


def run_search(config: RunConfig | dict[str, Any]) -> SearchResult:
    """Run (or resume) a search and export its best schedule.

    Example:
        >>> import diffsearch
        >>> result = diffsearch.run_search({"model": "gmm", "budget": "4nfe", "strategy": "random",
        ...     "evals": 3, "search_samples": 200, "final_samples": 400, "study": "doctest",
        ...     "storage": "sqlite:///:memory:", "out": "/tmp/doctest-best.json", "progress": False,
        ...     "space_options": {}})
        >>> result.schedule.nfe
        4
    """
    from diffsearch.search.progress import log_lines

    config = config if isinstance(config, RunConfig) else validate_config(config)
    check_budget(config)
    check_objectives(config)
    preflight(config)
    with log_lines(config.progress):
        run = prepare(config)
        run.study.set_user_attr("objective", storage.json_safe(prepare_objective(run)))  # cached on disk: cheap on resume
        before = storage.count_evaluations(run.study)["expensive"]
        with storage.Lease(run.study, config.join) as run.lease:
            search_loop(run)
            record_execution(run, before)
            final = final_stage(run)
        schedule = build_artifact(run, final)
        path = output_path(config)
        plan = save_artifact(run, final, schedule, path)
        _log.info(f"exported {path}")
    return SearchResult(config.study_name(), schedule, path, None if plan.full_network else plan)


def save_artifact(run: Run, final: dict[str, Any], schedule: Schedule, path: str | Path, trial: int | None = None) -> Plan:
    """Write the best finalist (or finalist ``trial``): ``diffsearch.schedule/v1`` when it runs the full network (unchanged
    for schedule spaces), else ``diffsearch.plan/v1`` with the same metrics and provenance; returns the plan."""
    from diffsearch.export.plan import save_plan

    best = next(row for row in final["rows"] if row["trial"] == (final["best"] if trial is None else trial))
    plan = run.space.plan(best["candidate"])
    if plan.full_network:
        save_schedule(schedule, path)
        return Plan(schedule=schedule)
    bare = schedule.model_copy(update={"metrics": None, "provenance": None})
    plan = Plan(schedule=bare, network=plan.network, metrics=schedule.metrics, provenance=schedule.provenance)
    save_plan(plan, path)
    return plan


EXECUTION_FIELDS = ("executor", "workers", "gpus_per_worker", "ray_address")


def record_execution(run: Run, before: int) -> None:
    """Append this invocation's executor and device to the study's ``executions`` when it evaluated anything."""
    added = storage.count_evaluations(run.study)["expensive"] - before
    if added > 0:
        execution = {**{key: getattr(run.config, key) for key in EXECUTION_FIELDS}, "device": str(run.model.device), "evaluations": added}
        run.study.set_user_attr("executions", [*run.study.user_attrs.get("executions", []), storage.json_safe(execution)])


def is_plugin(spec: str) -> bool:
    """True for ``module:factory`` / ``file.py:factory`` specs: loading them runs their code."""
    return ":" in spec and not spec.startswith("diffusers:")


def export_study(name: str, storage_url: str | None, out: str | Path, model: str | None = None, trust_study: bool = False,
                 budget: str | None = None) -> Path:
    """Write the best schedule of an existing, finished study (``search export``); with ``budget`` (``8nfe``,
    ``50%macs``), the front member with the best held-out metric at or under that cost.

    A plug-in model named inside the study is imported only when ``model`` names it again or
    ``trust_study`` is set: a received study file must not run code on its own."""
    from diffsearch.files import check_output_file

    check_output_file(out, "--out", create_folder=False)
    limit = parse_budget(budget, ("nfe", "%macs"), "search export") if budget is not None else None
    study = storage.load_existing(name, storage_url)
    identity = study.user_attrs.get("config")
    if not identity or not study.user_attrs.get("final"):
        raise DiffsearchError(f"study {name!r} has no final stage yet; run the search to completion first")
    stored = str(identity.get("model", ""))
    if model is not None and model != stored:
        raise DiffsearchError(f"--model {model}: study {name!r} was searched with model {stored!r}")
    if is_plugin(stored) and model is None and not trust_study:
        raise DiffsearchError(f"study {name!r} uses the plug-in model {stored!r}, which is code: pass --model {stored} "
                              "(or --trust-study) to import it")
    try:
        config = RunConfig.model_validate({**identity, "study": name, "storage": storage_url, "progress": False})
    except Exception as error:
        raise DiffsearchError(f"study {name!r}: its stored config is not valid ({type(error).__name__})") from None
    final = study.user_attrs["final"]
    trial = None if limit is None else _member_within(name, final, limit, config)
    run = prepare(config)
    save_artifact(run, final, build_artifact(run, final, trial), out, trial)
    return Path(out)


def _member_within(name: str, final: dict[str, Any], limit, config: RunConfig) -> int:
    """The trial of the best re-scored member at or under ``limit`` (an NFE or a share of the full network's MACs)."""
    from diffsearch.search.pareto import best_within

    if not final.get("pareto"):
        raise DiffsearchError(f"--budget {limit}: study {name!r} searched one objective; --budget picks a point of a Pareto front "
                              "(search with --objectives METRIC,COST)")
    rows = [row for row in final["rows"] if row["heldout"].get("status") == "ok"]
    key, value = ("nfe", limit.value) if limit.unit == "nfe" else ("macs_ratio", limit.value / 100)
    return best_within(rows, key, value, config.objective_metric())["trial"]
