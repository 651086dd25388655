"""The ``search`` command line. Heavy imports (torch, diffusers) happen inside commands only."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(
    name="search",
    no_args_is_help=True,
    add_completion=False,
    help="diffsearch: find the fastest way to sample a pretrained diffusion model.",
    pretty_exceptions_enable=False,
)

DEFAULT_MODEL = "digits"
DEFAULT_EVAL_SAMPLES = 2000
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Registered name (see `search models`), diffusers:<dir>, or module:factory / file.py:factory.")]
ScheduleOption = Annotated[str, typer.Option("--schedule", "-s", help="preset:NAME or a schedule JSON file.")]
PresetBudgetOption = Annotated[Optional[str], typer.Option("--budget", "-b", help="NFE budget, e.g. 10nfe (needed for presets).")]
ReferenceOption = Annotated[Optional[str], typer.Option("--reference", help="Real data for FID/KID: .npy/.npz samples, or .npz with mu/sigma.")]
BudgetOption = Annotated[str, typer.Option("--budget", "-b", help="NFE budget, e.g. 10nfe (1 to 1000, no space).")]
SpacingOption = Annotated[str, typer.Option("--spacing", help="Timestep family for presets: logsnr, time_uniform, quadratic, karras, linspace, leading, trailing; optimised for the preset: gits, dmn, ld3, ays (cached).")]
SamplesOption = Annotated[int, typer.Option("--samples", "-n", min=2, help="Held-out samples to evaluate.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the held-out noise set.")]
GuidanceOption = Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance scale (conditional models).")]
MetricOption = Annotated[Optional[list[str]], typer.Option("--metric", help="Metric(s) to compute (repeatable); default depends on the model.")]
FeaturesOption = Annotated[Optional[str], typer.Option("--features", help="Feature space of fd_teacher/kid_teacher/fid/kid: raw, digits, digits_multi, inception (default per model and metric).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
DeviceOption = Annotated[str, typer.Option("--device", help="Where the model runs: auto (cuda if available), cpu, cuda, cuda:N, mps.")]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _setup_torch() -> None:
    """As many intra-op threads as this process has CPUs, unless DIFFSEARCH_THREADS says otherwise.

    Sampling is bitwise the same with 1 or 2 threads and 1.4-2.0x faster with 2 (benchmarks/threads.py);
    Ray evaluator actors and service workers keep 1 each, since they run side by side.
    """
    import os

    import torch

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(int(os.environ.get("DIFFSEARCH_THREADS") or available))


def _load_model(model: str, device: str):
    """Set up torch and load the model onto ``device``."""
    from diffsearch.models.loading import load_model

    _setup_torch()
    return load_model(model).to(device)


def _model_and_schedule(model: str, schedule: str, budget: str | None, spacing: str, device: str):
    """Load the model and resolve ``preset:NAME`` (needs a budget) or a schedule file."""
    from diffsearch.budget import nfe_budget
    from diffsearch.export.artifact import load_schedule

    if schedule.startswith("preset:") and not budget:
        _fail(f"--schedule {schedule} needs --budget (the NFE to build it at), e.g. --budget 10nfe")
    nfe = nfe_budget(budget) if budget else None
    denoiser = _load_model(model, device)
    return denoiser, load_schedule(schedule, nfe=nfe, model=denoiser, spacing=spacing)


def _model_and_plan(model: str, schedule: str, budget: str | None, spacing: str, device: str):
    """Load the model and resolve ``preset:NAME``, a schedule file or a plan file as a plan (its blocks checked)."""
    from diffsearch.budget import nfe_budget
    from diffsearch.export.plan import load_plan
    from diffsearch.solvers.plan import check_blocks

    if schedule.startswith("preset:") and not budget:
        _fail(f"--schedule {schedule} needs --budget (the NFE to build it at), e.g. --budget 10nfe")
    denoiser = _load_model(model, device)
    plan = load_plan(schedule, nfe=nfe_budget(budget) if budget else None, model=denoiser, spacing=spacing)
    check_blocks(plan, denoiser.blocks.names if denoiser.blocks is not None else None, denoiser.name)
    return denoiser, plan


@app.command("eval")
def eval_command(
    schedule: ScheduleOption,
    model: ModelOption = DEFAULT_MODEL,
    budget: PresetBudgetOption = None,
    spacing: SpacingOption = "logsnr",
    samples: Annotated[Optional[int], typer.Option("--samples", "-n", min=2, help="Held-out samples to evaluate (default: the artifact's own held-out count, else 2000).")] = None,
    seed: SeedOption = 1,
    guidance: GuidanceOption = None,
    metric: MetricOption = None,
    reference: ReferenceOption = None,
    features: FeaturesOption = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Evaluate even if the evaluation cache has this result.")] = False,
    as_json: JsonOption = False,
    device: DeviceOption = "auto",
    no_floor: Annotated[bool, typer.Option("--no-floor", help="Skip the noise floor and seed spread (measured once per model and count, then cached).")] = False,
) -> None:
    """Evaluate one schedule: metrics on held-out noise (with their noise floor and seed spread), NFE, MACs and wall time."""
    from diffsearch.evaluators.cache import cache_for
    from diffsearch.evaluators.cost import cost_statistics
    from diffsearch.evaluators.evaluate import evaluate

    denoiser, resolved = _model_and_plan(model, schedule, budget, spacing, device)
    name = resolved.schedule.name or schedule
    samples = samples or (resolved.metrics or resolved.schedule.metrics or {}).get("heldout", {}).get("samples") or DEFAULT_EVAL_SAMPLES
    with _bar(samples, f"sampling {samples} with {name}", not as_json) as advance:
        result = evaluate(denoiser, resolved, samples=samples, seed=seed, guidance=guidance, metrics=metric,
                          reference=reference, features=features, cache=cache_for(denoiser, not no_cache), batch_size=500, on_batch=advance,
                          max_out_of_range=1.0)  # eval reports the out-of-range share; only a search fails on it
    row = {"schedule": name, **result, **cost_statistics(denoiser, resolved.nfe, guidance)}
    if "macs" in result:  # a plan that skips or reuses blocks costs what it runs
        row["macs_per_sample"] = result["macs"]
    if result["status"] == "ok" and not no_floor:
        row["noise"] = _floors(denoiser, [m for m in result if m in _metric_names()], samples, guidance, reference, features, not as_json)
    title = f"{row['schedule']} on {denoiser.name} ({samples} samples of held-out noise seed {seed})"
    _print_rows([row], as_json, title=title)
    if not as_json and row.get("noise"):
        typer.echo(_floor_lines(row))
    if result["status"] != "ok":
        raise typer.Exit(1)


def _metric_names() -> list[str]:
    from diffsearch.evaluators.evaluate import METRICS

    return METRICS.names()


def _floors(model, metrics: list[str], samples: int, guidance, reference, features, show: bool) -> dict[str, Any]:
    """The noise floor and seed std of each metric at ``samples`` (cached per model)."""
    from diffsearch.evaluators.floor import RUN_FLOOR_SEEDS, noise_floor

    floors = {}
    with _bar(len(metrics), f"noise floors at {samples} samples (once per model, then cached)", show) as advance:
        for metric in metrics:
            floors[metric] = noise_floor(model, metric, samples, features=features, guidance=guidance, reference=reference, seeds=RUN_FLOOR_SEEDS)
            advance(1)
    return floors


def _floor_lines(row: dict[str, Any]) -> str:
    """One line per metric: value, floor and seed std at the row's sample count."""
    lines, info = [], row.get("metric_info") or {}
    for metric, floor in row["noise"].items():
        against = f" against {info[metric]['reference']} in {info[metric]['features']} features" if metric in info else ""
        lines.append(f"{metric} = {row[metric]:.4g} at {floor['samples']} samples{against}; floor {floor['floor']:.4g} "
                     f"({floor['sampler']}), seed std {floor['std']:.2g} ({floor['seeds']} {floor['noise']})")
    return "\n".join(lines)


@app.command("sample")
def sample_command(
    schedule: ScheduleOption,
    out: Annotated[str, typer.Option("--out", "-o", help="PNG path.")] = "grid.png",
    model: ModelOption = DEFAULT_MODEL,
    budget: PresetBudgetOption = None,
    spacing: SpacingOption = "logsnr",
    per_row: Annotated[int, typer.Option("--per-row", min=1, help="Images per row (one row per class).")] = 10,
    seed: SeedOption = 1,
    guidance: GuidanceOption = None,
    device: DeviceOption = "auto",
) -> None:
    """Write a labelled image grid of samples (one row per class)."""
    from diffsearch.export.grid import write_grid

    denoiser, resolved = _model_and_schedule(model, schedule, budget, spacing, device)
    typer.echo(f"wrote {write_grid(denoiser, resolved, out, per_row, seed, guidance)}")


def _spacing_cost(schedule) -> dict:
    """The seconds an optimised spacing took when it was computed (later calls read the cache), if any."""
    seconds = schedule.provenance.get("spacing_seconds")
    return {} if seconds is None else {"spacing_seconds": seconds}


@app.command("baselines")
def baselines_command(
    model: ModelOption = DEFAULT_MODEL,
    budget: BudgetOption = "10nfe",
    spacing: Annotated[str, typer.Option("--spacing", help="all (every family the search starts from: logsnr, time_uniform, quadratic, karras) or one timestep family.")] = "all",
    samples: SamplesOption = 2000,
    seed: SeedOption = 1,
    guidance: GuidanceOption = None,
    metric: MetricOption = None,
    reference: ReferenceOption = None,
    features: FeaturesOption = None,
    as_json: JsonOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Every preset solver on every timestep family at one NFE budget, in one table (best first), with each metric's noise floor and seed spread."""
    from diffsearch.budget import nfe_budget
    from diffsearch.evaluators.evaluate import default_metrics, evaluate
    from diffsearch.solvers.presets import PRESETS, preset_schedule
    from diffsearch.solvers.timesteps import check_spacing
    from diffsearch.spaces.solver_schedule import INITIAL_SPACINGS

    nfe = nfe_budget(budget)
    spacings = INITIAL_SPACINGS if spacing == "all" else (check_spacing(spacing),)
    denoiser = _load_model(model, device)
    metrics = metric or default_metrics(denoiser, reference)
    rows = []
    with _bar(len(PRESETS.names()) * len(spacings), f"presets at {nfe} NFE", not as_json) as advance:
        for family in spacings:
            for name in PRESETS:
                schedule = preset_schedule(name, nfe, denoiser.noise_schedule, family, model=denoiser)
                result = evaluate(denoiser, schedule, samples=samples, seed=seed, guidance=guidance, metrics=metrics, reference=reference,
                                  features=features, max_out_of_range=1.0)
                rows.append({"schedule": f"preset:{name}@{family}", **result, **_spacing_cost(schedule)})
                advance(1)
    rows.sort(key=lambda row: (row["status"] != "ok", row.get(metrics[0], float("inf"))))
    floors = _floors(denoiser, metrics, samples, guidance, reference, features, not as_json)
    if as_json:
        rows = [{**row, "noise": floors} for row in rows]
    where = "every spacing" if spacing == "all" else f"{spacing} spacing"
    _print_rows(rows, as_json, title=f"{len(rows)} presets x spacings at {nfe} NFE on {denoiser.name} ({where}, {samples} samples of held-out noise seed {seed})")
    if not as_json:
        typer.echo("\n".join(f"{m}: floor {f['floor']:.4g} ({f['sampler']}), seed std {f['std']:.2g} at {samples} samples; "
                             f"differences below {2 * f['std']:.2g} are ties" for m, f in floors.items()))


def _with_space_flags(run_config, flags: dict[str, Any]):
    """``--nfe``, ``--spacing`` (and ``--solver`` for spaces that do not take the run's solver) as space options."""
    from diffsearch.search.config import validate_config
    from diffsearch.spaces import SPACES

    if run_config.space in SPACES and SPACES.get(run_config.space).takes_solver:
        flags = {**flags, "solver": None}
    given = {key: value for key, value in flags.items() if value is not None}
    if not given:
        return run_config
    return validate_config({**run_config.model_dump(), "space_options": {**run_config.space_options, **given}})


@app.command("run")
def run_command(
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML run config (configs/*.yaml); flags override it.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model spec (default digits).")] = None,
    space: Annotated[Optional[str], typer.Option("--space", help="solver_schedule, timesteps, architecture, timesteps+architecture, ... (`search spaces`).")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", "-b", help="Candidate budget, e.g. 10nfe (1 to 1000 NFE, no space; `search spaces` lists each space's units).")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="random, evolution, s3, tpe, gp, nsga2.")] = None,
    evals: Annotated[Optional[int], typer.Option("--evals", help="Expensive evaluations in total, at least 1 (default 120).")] = None,
    time_limit: Annotated[Optional[str], typer.Option("--time", help="Wall-clock limit of this invocation, e.g. 30m.")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Objective metric (default: the model's first).")] = None,
    objectives: Annotated[Optional[str], typer.Option("--objectives", help="Pareto search: METRIC,COST[,COST], costs macs, seconds, nfe (e.g. teacher_error,nfe); an NFE budget becomes an upper bound.")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", min=2, help="Samples per search evaluation.")] = None,
    final_samples: Annotated[Optional[int], typer.Option("--final-samples", min=2, help="Samples per held-out noise set in the final stage.")] = None,
    final_seeds: Annotated[Optional[int], typer.Option("--final-seeds", help="Held-out noise sets in the final stage (default 3): paired comparison, mean and 95% interval.")] = None,
    features: FeaturesOption = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Strategy seed.")] = None,
    guidance: GuidanceOption = None,
    reference: ReferenceOption = None,
    solver: Annotated[Optional[str], typer.Option("--solver", help="Fixed solver of the timesteps space and of the architecture spaces' schedule.")] = None,
    nfe: Annotated[Optional[int], typer.Option("--nfe", min=1, max=100, help="Architecture spaces: NFE of the reference schedule (default 10).")] = None,
    spacing: Annotated[Optional[str], typer.Option("--spacing", help="Architecture spaces: timestep spacing of the schedule (default quadratic).")] = None,
    study: Annotated[Optional[str], typer.Option("--study", help="Study name (default derived from the config).")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default sqlite in runs/).")] = None,
    out: Annotated[Optional[str], typer.Option("--out", "-o", help="Where to write the best schedule.")] = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
    executor: Annotated[Optional[str], typer.Option("--executor", help="Where evaluations run: inline (default) or ray.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="Parallel evaluations (Ray evaluator actors).")] = None,
    gpus_per_worker: Annotated[Optional[float], typer.Option("--gpus-per-worker", min=0, help="GPUs per Ray evaluator actor.")] = None,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to join: auto or ray://host:port (default: a local one).")] = None,
    predictor: Annotated[Optional[str], typer.Option("--predictor", help="s3: predictor gating expensive evaluations (mlp, xgboost, gp, ensemble).")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="Where the model runs (driver and each worker): auto (default), cpu, cuda, cuda:N, mps.")] = None,
    max_attempts: Annotated[Optional[int], typer.Option("--max-attempts", min=1, help="Runs killed while evaluating one candidate before it is a failed trial (default 2).")] = None,
    join: Annotated[bool, typer.Option("--join", help="Share a study another live driver is running (default: refuse).")] = False,
    eval_timeout: Annotated[Optional[str], typer.Option("--eval-timeout", help="Longest one evaluation may run, e.g. 5m (default: 10x the first evaluations, at least 60s).")] = None,
    refine: Annotated[Optional[bool], typer.Option("--refine/--no-refine", help="Gradient-refine the finalists (LD3 loss); kept only if better on search noise.")] = None,
) -> None:
    """Search for the best schedule at a budget; rerunning the same command resumes the study."""
    from diffsearch.search.config import load_config
    from diffsearch.search.runner import run_search

    overrides = {"model": model, "space": space, "budget": budget, "strategy": strategy, "evals": evals,
                 "time": time_limit, "metric": metric, "objectives": objectives, "search_samples": samples, "final_samples": final_samples,
                 "final_seeds": final_seeds, "features": features,
                 "seed": seed, "guidance": guidance, "reference": reference, "solver": solver, "study": study, "storage": storage, "out": out,
                 "progress": False if no_progress else None, "executor": executor, "workers": workers,
                 "gpus_per_worker": gpus_per_worker, "ray_address": ray_address, "predictor": predictor, "device": device,
                 "max_attempts": max_attempts, "eval_timeout": eval_timeout, "join": join or None, "refine": refine}
    if evals is not None and evals < 1:
        _fail(f"--evals {evals}: a search needs at least 1 expensive evaluation")
    run_config = _with_space_flags(load_config(config, overrides), {"nfe": nfe, "spacing": spacing, "solver": solver})
    if run_config.storage:
        from diffsearch.search.storage import check_storage_url

        check_storage_url(run_config.storage)
    _setup_torch()
    result = run_search(run_config)
    _print_summary(result)


def _print_summary(result) -> None:
    metrics = result.schedule.metrics
    objective, noise = metrics["objective"], metrics.get("noise") or {}
    rows = [_summary_row(result.schedule.name, metrics["heldout"], objective)]
    if metrics.get("baseline"):
        rows.append(_summary_row(metrics["baseline"]["schedule"], metrics["baseline"]["heldout"], objective))
    heldout = metrics["heldout"]
    features = f" ({metrics['features']} features)" if metrics.get("features") else ""
    title = (f"held-out {objective}{features}, {len(heldout.get('seeds') or [])} noise sets "
             f"x {heldout.get('samples')} samples; noise floor {noise.get('floor', float('nan')):.4g} (the floor's seed std "
             f"{noise.get('std', float('nan')):.2g})")
    _print_rows(rows, False, title=title)
    if metrics.get("pareto"):
        _print_front(metrics["pareto"], objective, heldout)
    else:
        typer.echo(_closing_line(metrics, result.schedule.provenance))
    typer.echo(f"wrote {result.path}")


def _print_front(pareto: dict[str, Any], objective: str, heldout: dict[str, Any]) -> None:
    """The held-out front and each preset against the best searched member at its cost or below."""
    costs = pareto["objectives"][1:]
    rows = [{"schedule": m["label"] or f"trial {m['trial']}", **{c: m["costs"].get(c) for c in costs},
             objective: f"{m['heldout'][objective]:.4g} +- {m['heldout']['std']:.2g}", "front": "yes" if m["heldout_front"] else ""}
            for m in sorted(pareto["members"], key=lambda m: tuple(m["costs"].get(c) or 0.0 for c in costs))]
    _print_rows(rows, False, title=f"held-out front and presets ({len(heldout.get('seeds') or [])} noise sets x {heldout.get('samples')} samples)")
    for comparison in pareto["comparisons"]:
        where = ", ".join(f"{c} {comparison['costs'][c]:.4g}" for c in costs)
        text = "no searched member at this cost or below" if comparison["member"] is None else _verdict(comparison)
        typer.echo(f"{comparison['label']} ({where}): {text}")


def _summary_row(name: str, heldout: dict[str, Any], objective: str) -> dict[str, Any]:
    """One row of the run summary: the objective as mean +- std over the held-out sets, other means, out-of-range share."""
    row = {"schedule": name, "nfe": heldout.get("nfe"), objective: f"{heldout.get(objective, float('nan')):.4g} +- {heldout.get('std', 0.0):.2g}"}
    row.update({key: value for key, value in heldout.items() if key in ("fid", "kid", "fd_teacher", "frechet_exact") and key != objective})
    if "out_of_range" in heldout:
        row["out of range"] = f"{100 * heldout['out_of_range']:.2g}%"
    return row


def _closing_line(metrics: dict[str, Any], provenance: dict[str, Any]) -> str:
    """The paired verdict when a searched schedule was exported; otherwise say plainly which preset was (``search.summary``)."""
    from diffsearch.search.summary import exported_is_preset, verdict

    comparison = metrics.get("comparison")
    if comparison and not exported_is_preset(provenance):
        return _verdict(comparison)
    return verdict(metrics, provenance)


def _verdict(comparison: dict[str, Any]) -> str:
    """Whether the searched schedule's margin over the best preset is beyond twice the seed std, in words."""
    if comparison.get("same_candidate"):
        return "no searched candidate beat the best preset on held-out noise; the exported schedule is that preset"
    low, high = comparison["interval95"]
    text = (f"searched - preset: {comparison['mean_difference']:.4g} (95% interval [{low:.4g}, {high:.4g}] over "
            f"{comparison['sets']} held-out sets; seed std {comparison['seed_std']:.2g})")
    if comparison["beyond_two_std"]:
        return f"{text}: better by {100 * comparison['relative']:.1f}%, beyond twice the seed std"
    return f"{text}: a tie (the margin is within twice the seed std)"


@app.command("export")
def export_command(
    study: Annotated[str, typer.Option("--study", help="Study name.")],
    out: Annotated[str, typer.Option("--out", "-o", help="Output JSON path.")] = "best.json",
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default sqlite in runs/).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The study's model, named again: needed to import a plug-in model.")] = None,
    trust_study: Annotated[bool, typer.Option("--trust-study", help="Import the plug-in model the study names (it is code).")] = False,
    budget: Annotated[Optional[str], typer.Option("--budget", "-b", help="Pareto studies: the best front member at or under this cost, e.g. 8nfe or 50%macs.")] = None,
    quantized_weights: Annotated[Optional[str], typer.Option("--quantized-weights", help="Also write the plan's packed integer weights + scales into this folder (bitwidth spaces).")] = None,
    subnet_weights: Annotated[Optional[str], typer.Option("--subnet-weights", help="Also write the plan's sub-networks (supernet spaces) as standalone safetensors + JSON into this folder.")] = None,
) -> None:
    """Write the best schedule of a finished study as a diffsearch.schedule/v1 artifact (a plan/v1 when it changes the network)."""
    from diffsearch.search.runner import export_study

    _setup_torch()
    path = export_study(study, storage, out, model, trust_study, budget)
    typer.echo(f"wrote {path}")
    if quantized_weights is not None:
        _export_quantized(study, storage, path, quantized_weights)
    if subnet_weights:
        for written in _export_subnet_weights(path, subnet_weights):
            typer.echo(f"wrote {written}")


def _export_quantized(study: str, storage_url: str | None, plan_path, folder: str) -> None:
    """``--quantized-weights``: the exported plan's packed weights, with their bytes on disk and in the budget's accounting."""
    from diffsearch.export.plan import load_plan
    from diffsearch.export.quantized import write_quantized_weights
    from diffsearch.models.loading import load_model
    from diffsearch.search import storage

    spec = storage.load_existing(study, storage_url).user_attrs["config"]["model"]
    report = write_quantized_weights(load_model(spec), load_plan(plan_path), folder)
    typer.echo(f"wrote {folder}/weights.safetensors: {report['file_bytes']} bytes on disk ({report['payload_bytes']} bytes of tensors, "
               f"budget accounting {report['accounting_bytes']}, header {report['header_bytes']})")


def _export_subnet_weights(artifact: Any, directory: str) -> list[Any]:
    """The exported plan's sub-networks, materialised from the model its provenance names."""
    from diffsearch.export.plan import load_plan
    from diffsearch.export.subnets import export_subnet_weights
    from diffsearch.models.loading import load_model

    plan = load_plan(str(artifact))
    if not plan.subnets():
        _fail(f"--subnet-weights: {artifact} runs no sub-networks (it is not from a supernet space)")
    return export_subnet_weights(load_model(plan.provenance["config"]["model"]), plan, directory)


@app.command("show")
def show_command(
    study: Annotated[list[str], typer.Option("--study", help="Study name (repeat to compare budgets).")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default sqlite in runs/).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Candidates to list.")] = 10,
    plots: Annotated[Optional[str], typer.Option("--plots", help="Folder for PNG plots (default runs/<study>/).")] = None,
    plot: Annotated[Optional[str], typer.Option("--plot", help="Pareto studies: PNG of quality against cost, front and presets (e.g. pareto.png).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Top candidates of a study, and PNG plots (best-so-far; metric against NFE across studies; a Pareto front)."""
    from diffsearch.search.pareto_report import pareto_tables
    from diffsearch.search.report import study_report

    fronts, front_plot = pareto_tables(study, storage, plot)
    tables, written, legend = study_report(study, storage, top, plots)
    tables["front"] = fronts
    written += front_plot
    if as_json:
        typer.echo(json.dumps(tables, indent=2, default=str))
        return
    _print_rows(tables["candidates"], False, title=f"top {top} candidates of {', '.join(study)} ({legend})")
    if tables["stages"]:
        _print_rows(tables["stages"], False, title=f"s3 stages of {', '.join(study)}")
    if fronts:
        _print_rows(fronts, False, title=f"Pareto front of {', '.join(study)} (then the presets off it)")
    for path in written:
        typer.echo(f"wrote {path}")


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option("--host", help="Address to bind (beyond loopback needs DIFFSEARCH_TOKEN).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port.")] = 8600,
    storage: Annotated[str, typer.Option("--storage", help="Optuna storage URL of every study and job.")] = "sqlite:///runs/service.db",
    runs_dir: Annotated[str, typer.Option("--runs-dir", help="Folder for artifacts and worker logs.")] = "runs",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Run jobs as Ray Jobs via this job API (http://head:8265).")] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Jobs running at once.")] = 1,
    private_reads: Annotated[bool, typer.Option("--private-reads", help="Require the token for reads too.")] = False,
) -> None:
    """Serve the searches of one storage over HTTP: REST API (/docs), web page (/), job queue."""
    import os

    from diffsearch.service.app import ServiceSettings, serve

    serve(ServiceSettings(host=host, port=port, storage=storage, runs_dir=runs_dir, ray_address=ray_address, workers=workers,
                          token=os.environ.get("DIFFSEARCH_TOKEN") or None, private_reads=private_reads))


@app.command("spaces")
def spaces_command(as_json: JsonOption = False) -> None:
    """Registered search spaces and strategies."""
    from diffsearch.search.strategies import STRATEGIES
    from diffsearch.spaces import SPACES

    rows = [{"kind": "space", "name": name, "budget": ", ".join(SPACES.get(name).budget_units), "description": _first_line(SPACES.get(name).__doc__)}
            for name in SPACES]
    rows += [{"kind": "strategy", "name": name, "budget": "", "description": _first_line(STRATEGIES.get(name).__doc__)} for name in STRATEGIES]
    _print_rows(rows, as_json, title="spaces and strategies")


@app.command("models")
def models_command(as_json: JsonOption = False) -> None:
    """Registered models, and the other forms --model accepts."""
    from diffsearch.models.loading import MODELS

    rows = [{"model": name, "description": _first_line(MODELS.get(name).__doc__)} for name in MODELS]
    rows.append({"model": "diffusers:<dir>", "description": "a local diffusers model or pipeline directory"})
    rows.append({"model": "module:factory | file.py:factory", "description": "a plug-in factory returning diffsearch.Denoiser"})
    _print_rows(rows, as_json, title="models")


class _bar:
    """A transient rich progress bar on stderr; ``advance(n)`` moves it (a no-op when disabled)."""

    def __init__(self, total: int, description: str, enabled: bool) -> None:
        self.total, self.description, self.enabled, self.progress = total, description, enabled, None

    def __enter__(self):
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import Progress

        self.progress = Progress(console=Console(stderr=True), transient=True)
        self.progress.start()
        task = self.progress.add_task(self.description, total=self.total)
        return lambda n: self.progress.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()


def _first_line(text: str | None) -> str:
    """A docstring's first paragraph as one plain line (RST ``literals`` lose their backticks)."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in paragraph.splitlines()).replace("``", "").replace("`", "")


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_TABLE_HIDDEN = ("samples", "seed", "seconds_per_sample", "bytes", "cached", "metric_info", "noise", "out_of_range_margin", "per_seed")


_NAME_COLUMNS = ("schedule", "model", "study", "origin", "description", "error", "note")


def _print_rows(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    """Rows as JSON, or as a table: numbers never truncated, long names folded, a one-study ``study`` column dropped."""
    if as_json:
        typer.echo(json.dumps(rows if len(rows) != 1 else rows[0], indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in _TABLE_HIDDEN]
    if len({row.get("study") for row in rows}) == 1:  # the title names it
        columns = [column for column in columns if column != "study"]
    table = Table(title=title)
    for column in columns:
        names = column in _NAME_COLUMNS
        table.add_column(column, overflow="fold" if names else "ellipsis", no_wrap=not names, min_width=None if names else len(column))
    for row in rows:
        table.add_row(*(_format(row.get(column, "")) for column in columns))
    console = Console()
    Console(width=console.width if console.is_terminal else max(console.width, 120)).print(table)


def _hide_flag_types() -> None:
    """typer shows ``<bool>`` as the type of on/off flags, which take no value: show nothing there."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich
    TyperOption.display_type_rich = lambda self, ctx: None if self.is_flag else shown(self, ctx)


_hide_flag_types()


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input of any kind (a flag's value or a DiffsearchError) is one line on stderr, exit status 2."""
    from typer._click import exceptions  # typer 0.29 vendors click; its errors live here

    from diffsearch.errors import DiffsearchError

    try:
        code = app(args=argv, standalone_mode=False)
    except exceptions.NoArgsIsHelpError as error:
        typer.echo(error.ctx.get_help() if error.ctx else str(error))
        sys.exit(0)
    except exceptions.ClickException as error:
        where = f"{error.ctx.command_path}: " if getattr(error, "ctx", None) is not None else ""
        typer.echo(f"error: {where}{error.format_message()}".replace("\n", " "), err=True)
        sys.exit(2)
    except typer.Abort:
        sys.exit(1)
    except DiffsearchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)
    sys.exit(code or 0)


if __name__ == "__main__":
    main()
