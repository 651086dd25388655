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
ModelOption = Annotated[str, typer.Option("--model", "-m", help="Registered name (see `search models`), diffusers:<dir>, or module:factory / file.py:factory.")]
ScheduleOption = Annotated[str, typer.Option("--schedule", "-s", help="preset:NAME or a schedule JSON file.")]
PresetBudgetOption = Annotated[Optional[str], typer.Option("--budget", "-b", help="NFE budget, e.g. 10nfe (needed for presets).")]
ReferenceOption = Annotated[Optional[str], typer.Option("--reference", help="Real data for FID/KID: .npy/.npz samples, or .npz with mu/sigma.")]
BudgetOption = Annotated[str, typer.Option("--budget", "-b", help="Candidate budget, e.g. 10nfe.")]
SpacingOption = Annotated[str, typer.Option("--spacing", help="Timestep family for presets: logsnr, time_uniform, quadratic, karras, linspace, leading, trailing; optimised for the preset: gits, dmn, ld3, ays (cached).")]
SamplesOption = Annotated[int, typer.Option("--samples", "-n", min=2, help="Held-out samples to evaluate.")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the held-out noise set.")]
GuidanceOption = Annotated[Optional[float], typer.Option("--guidance", help="Classifier-free guidance scale (conditional models).")]
MetricOption = Annotated[Optional[list[str]], typer.Option("--metric", help="Metric(s) to compute (repeatable); default depends on the model.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON on stdout instead of a table.")]
DeviceOption = Annotated[str, typer.Option("--device", help="Where the model runs: auto (cuda if available), cpu, cuda, cuda:N, mps.")]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _setup_torch() -> None:
    """One intra-op thread unless DIFFSEARCH_THREADS says otherwise: small models run fastest so."""
    import os

    import torch

    torch.set_num_threads(int(os.environ.get("DIFFSEARCH_THREADS", "1")))


def _load_model(model: str, device: str):
    """Set up torch and load the model onto ``device``."""
    from diffsearch.models.loading import load_model

    _setup_torch()
    return load_model(model).to(device)


def _model_and_schedule(model: str, schedule: str, budget: str | None, spacing: str, device: str):
    """Load the model and resolve ``preset:NAME`` (needs a budget) or a schedule file."""
    from diffsearch.budget import nfe_budget
    from diffsearch.export.artifact import load_schedule

    denoiser = _load_model(model, device)
    return denoiser, load_schedule(schedule, nfe=nfe_budget(budget) if budget else None, model=denoiser, spacing=spacing)


@app.command("eval")
def eval_command(
    schedule: ScheduleOption,
    model: ModelOption = DEFAULT_MODEL,
    budget: PresetBudgetOption = None,
    spacing: SpacingOption = "logsnr",
    samples: SamplesOption = 2000,
    seed: SeedOption = 1,
    guidance: GuidanceOption = None,
    metric: MetricOption = None,
    reference: ReferenceOption = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Evaluate even if the evaluation cache has this result.")] = False,
    as_json: JsonOption = False,
    device: DeviceOption = "auto",
    no_floor: Annotated[bool, typer.Option("--no-floor", help="Skip the noise floor and seed spread (measured once per model and count, then cached).")] = False,
) -> None:
    """Evaluate one schedule: metrics on held-out noise (with their noise floor and seed spread), NFE, MACs and wall time."""
    from diffsearch.evaluators.cache import cache_for
    from diffsearch.evaluators.cost import cost_statistics
    from diffsearch.evaluators.evaluate import evaluate

    denoiser, resolved = _model_and_schedule(model, schedule, budget, spacing, device)
    with _bar(samples, f"sampling {samples} with {resolved.name or schedule}", not as_json) as advance:
        result = evaluate(denoiser, resolved, samples=samples, seed=seed, guidance=guidance, metrics=metric,
                          reference=reference, cache=cache_for(denoiser, not no_cache), batch_size=500, on_batch=advance,
                          max_out_of_range=1.0)  # eval reports the out-of-range share; only a search fails on it
    row = {"schedule": resolved.name or schedule, **result, **cost_statistics(denoiser, resolved.nfe, guidance)}
    if result["status"] == "ok" and not no_floor:
        row["noise"] = _floors(denoiser, [m for m in result if m in _metric_names()], samples, guidance, reference, not as_json)
    title = f"{row['schedule']} on {denoiser.name} ({samples} samples of held-out noise seed {seed})"
    _print_rows([row], as_json, title=title)
    if not as_json and row.get("noise"):
        typer.echo(_floor_lines(row))
    if result["status"] != "ok":
        raise typer.Exit(1)


def _metric_names() -> list[str]:
    from diffsearch.evaluators.evaluate import METRICS

    return METRICS.names()


def _floors(model, metrics: list[str], samples: int, guidance, reference, show: bool) -> dict[str, Any]:
    """The noise floor and seed std of each metric at ``samples`` (cached per model)."""
    from diffsearch.evaluators.floor import noise_floor

    floors = {}
    with _bar(len(metrics), f"noise floors at {samples} samples (once per model, then cached)", show) as advance:
        for metric in metrics:
            floors[metric] = noise_floor(model, metric, samples, guidance=guidance, reference=reference, seeds=3)
            advance(1)
    return floors


def _floor_lines(row: dict[str, Any]) -> str:
    """One line per metric: value, floor and seed std at the row's sample count."""
    lines = []
    for metric, floor in row["noise"].items():
        lines.append(f"{metric} = {row[metric]:.4g} at {floor['samples']} samples; floor {floor['floor']:.4g} ({floor['sampler']}), "
                     f"seed std {floor['std']:.2g} ({floor['seeds']} {floor['noise']})")
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
    spacing: SpacingOption = "logsnr",
    samples: SamplesOption = 2000,
    seed: SeedOption = 1,
    guidance: GuidanceOption = None,
    metric: MetricOption = None,
    reference: ReferenceOption = None,
    as_json: JsonOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Every preset solver at one NFE budget, in one table (best first)."""
    from diffsearch.budget import nfe_budget
    from diffsearch.evaluators.evaluate import default_metrics, evaluate
    from diffsearch.solvers.presets import PRESETS, preset_schedule

    denoiser = _load_model(model, device)
    nfe = nfe_budget(budget)
    metrics = metric or default_metrics(denoiser, reference)
    rows = []
    with _bar(len(PRESETS.names()), f"presets at {nfe} NFE", not as_json) as advance:
        for name in PRESETS:
            schedule = preset_schedule(name, nfe, denoiser.noise_schedule, spacing, model=denoiser)
            result = evaluate(denoiser, schedule, samples=samples, seed=seed, guidance=guidance, metrics=metrics, reference=reference,
                              max_out_of_range=1.0)
            rows.append({"schedule": f"preset:{name}", **result, **_spacing_cost(schedule)})
            advance(1)
    rows.sort(key=lambda row: (row["status"] != "ok", row.get(metrics[0], float("inf"))))
    _print_rows(rows, as_json, title=f"presets at {nfe} NFE on {denoiser.name} ({spacing} spacing, {samples} held-out samples, seed {seed})")


@app.command("run")
def run_command(
    config: Annotated[Optional[str], typer.Option("--config", "-c", help="YAML run config (configs/*.yaml); flags override it.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model spec (default digits).")] = None,
    space: Annotated[Optional[str], typer.Option("--space", help="solver_schedule or timesteps (`search spaces`).")] = None,
    budget: Annotated[Optional[str], typer.Option("--budget", "-b", help="Candidate budget, e.g. 10nfe.")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", help="random, evolution, s3, tpe, gp, nsga2.")] = None,
    evals: Annotated[Optional[int], typer.Option("--evals", min=1, help="Expensive evaluations in total (default 120).")] = None,
    time_limit: Annotated[Optional[str], typer.Option("--time", help="Wall-clock limit of this invocation, e.g. 30m.")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Objective metric (default: the model's first).")] = None,
    samples: Annotated[Optional[int], typer.Option("--samples", min=2, help="Samples per search evaluation.")] = None,
    final_samples: Annotated[Optional[int], typer.Option("--final-samples", min=2, help="Held-out samples in the final stage.")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Strategy seed.")] = None,
    guidance: GuidanceOption = None,
    reference: ReferenceOption = None,
    solver: Annotated[Optional[str], typer.Option("--solver", help="Fixed solver of the timesteps space.")] = None,
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
    refine: Annotated[Optional[bool], typer.Option("--refine/--no-refine", help="Gradient-refine the finalists (LD3 loss); kept only if better on search noise.")] = None,
) -> None:
    """Search for the best schedule at a budget; rerunning the same command resumes the study."""
    from diffsearch.search.config import load_config
    from diffsearch.search.runner import run_search

    overrides = {"model": model, "space": space, "budget": budget, "strategy": strategy, "evals": evals,
                 "time": time_limit, "metric": metric, "search_samples": samples, "final_samples": final_samples,
                 "seed": seed, "guidance": guidance, "reference": reference, "solver": solver, "study": study, "storage": storage, "out": out,
                 "progress": False if no_progress else None, "executor": executor, "workers": workers,
                 "gpus_per_worker": gpus_per_worker, "ray_address": ray_address, "predictor": predictor, "device": device, "refine": refine}
    run_config = load_config(config, overrides)
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
    title = (f"held-out {objective} ({metrics.get('features') or 'default'} features), {len(heldout.get('seeds') or [])} noise sets "
             f"x {heldout.get('samples')} samples; floor {noise.get('floor', float('nan')):.4g}, seed std {noise.get('std', float('nan')):.2g}")
    _print_rows(rows, False, title=title)
    comparison = metrics.get("comparison")
    if comparison:
        typer.echo(_verdict(comparison))
    typer.echo(f"wrote {result.path}")


def _summary_row(name: str, heldout: dict[str, Any], objective: str) -> dict[str, Any]:
    """One row of the run summary: the objective as mean +- std over the held-out sets, other means, out-of-range share."""
    row = {"schedule": name, "nfe": heldout.get("nfe"), objective: f"{heldout.get(objective, float('nan')):.4g} +- {heldout.get('std', 0.0):.2g}"}
    row.update({key: value for key, value in heldout.items() if key in ("fid", "kid", "fd_teacher", "frechet_exact") and key != objective})
    if "out_of_range" in heldout:
        row["out of range"] = f"{100 * heldout['out_of_range']:.2g}%"
    return row


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
) -> None:
    """Write the best schedule of a finished study as a diffsearch.schedule/v1 artifact."""
    from diffsearch.search.runner import export_study

    _setup_torch()
    typer.echo(f"wrote {export_study(study, storage, out)}")


@app.command("show")
def show_command(
    study: Annotated[list[str], typer.Option("--study", help="Study name (repeat to compare budgets).")],
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL (default sqlite in runs/).")] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="Candidates to list.")] = 10,
    plots: Annotated[Optional[str], typer.Option("--plots", help="Folder for PNG plots (default runs/<study>/).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Top candidates of a study, and PNG plots (best-so-far; metric against NFE across studies)."""
    from diffsearch.search.report import study_report

    rows, written = study_report(study, storage, top, plots)
    _print_rows(rows, as_json, title=f"top candidates of {', '.join(study)}")
    if not as_json:
        for path in written:
            typer.echo(f"wrote {path}")


@app.command("spaces")
def spaces_command(as_json: JsonOption = False) -> None:
    """Registered search spaces and strategies."""
    from diffsearch.search.strategies import STRATEGIES
    from diffsearch.spaces import SPACES

    rows = [{"kind": "space", "name": name, "description": _first_line(SPACES.get(name).__doc__)} for name in SPACES]
    rows += [{"kind": "strategy", "name": name, "description": _first_line(STRATEGIES.get(name).__doc__)} for name in STRATEGIES]
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
    return (text or "").strip().splitlines()[0] if text else ""


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


_TABLE_HIDDEN = ("samples", "seed", "seconds_per_sample", "bytes", "cached")


def _print_rows(rows: list[dict[str, Any]], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps(rows if len(rows) != 1 else rows[0], indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    columns = [key for key in dict.fromkeys(key for row in rows for key in row) if key not in _TABLE_HIDDEN]
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=column in ("schedule", "model"))
    for row in rows:
        table.add_row(*(_format(row.get(column, "")) for column in columns))
    Console(width=max(Console().width, 120)).print(table)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2."""
    from diffsearch.errors import DiffsearchError

    try:
        app()
    except DiffsearchError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
