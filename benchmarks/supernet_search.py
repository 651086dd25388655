"""Once-for-all on digits (issue 13): quality of the supernet's sub-networks, searched against uniform ones.

Every score is ``teacher_error`` (RMSE to the largest network's converged teacher from the same noise,
the project's default objective on digits) on held-out noise sets 1..``--seeds`` of ``--samples``
each, mean +- std over the sets; FID uses the digits classifier's features against the train split.

    python benchmarks/supernet_search.py quality   [--samples 500 --seeds 3]   # largest / smallest vs digits
    python benchmarks/supernet_search.py pareto    [--samples 500 --seeds 3 --evals 40 --budget 50]
    python benchmarks/supernet_search.py predictor [--labels 10 20 40 80]
    python benchmarks/supernet_search.py speed     [--samples 256 --rounds 3]

``pareto``: every uniformly scaled sub-network, and the best of an OFA-style evolution (population
from the space's initial candidates plus random ones; parents the top 25%; half mutants, half
crossovers; ``--evals`` evaluations on the search noise set 0 at ``--search-samples``) in the
``supernet`` (one sub-network per run) and ``supernet_per_step`` spaces at ``--budget`` % MACs; the
three best of each are re-scored on the held-out sets and the paired difference of the best per-step
plan to the best static sub-network within the budget is reported with its 95% interval. ``--rule``
applies `search run`'s out-of-range rule: a candidate with more than 1% of its search samples out of
range fails, and a finalist or uniform baseline counts only if every held-out set stays within 1%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import diffsearch
from diffsearch.budget import parse_budget
from diffsearch.evaluators.cost import plan_cost, seconds_per_sample, stage_macs
from diffsearch.evaluators.evaluate import MAX_OUT_OF_RANGE, metric_values, out_of_range
from diffsearch.evaluators.noise import noise_set
from diffsearch.evaluators.reference import sample_batched
from diffsearch.models.subnet import SubnetConfig
from diffsearch.solvers.plan import Plan
from diffsearch.spaces import SPACES

NFE, SOLVER = 10, "dpmpp_2m"


def score(model, plan, samples: int, seed: int, metrics=("teacher_error",)) -> dict[str, float]:
    """The metrics of one plan on one noise set (samples never clamped)."""
    x_T, labels = noise_set(model, samples, seed)
    output = sample_batched(model, plan, x_T, labels, None, 1000)
    settings = {"seed": seed, "guidance": None, "features": "digits" if "fid" in metrics else None}
    values = metric_values(model, plan.schedule if isinstance(plan, Plan) else plan, output, x_T, labels, settings, list(metrics))[0]
    return {**values, "out_of_range": out_of_range(model, output)["out_of_range"]}


def held_out(model, plan, samples: int, seeds: int, metrics=("teacher_error",)) -> dict[str, list[float]]:
    rows = [score(model, plan, samples, seed, metrics) for seed in range(1, seeds + 1)]
    return {metric: [row[metric] for row in rows] for metric in (*metrics, "out_of_range")}


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.5f} +- {np.std(values, ddof=1):.5f}" if len(values) > 1 else f"{values[0]:.5f}"


def paired(a: list[float], b: list[float]) -> str:
    """Mean paired difference a - b with its 95% t-interval over the noise sets."""
    from scipy import stats

    diff = np.asarray(a) - np.asarray(b)
    half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / np.sqrt(len(diff))
    return f"{diff.mean():+.5f} [{diff.mean() - half:+.5f}, {diff.mean() + half:+.5f}]"


def quality(args) -> None:
    ofa, digits = diffsearch.load_model("digits_ofa"), diffsearch.load_model("digits")
    space = ofa.elastic.space
    print(f"### {SOLVER} at {NFE} NFE, {args.samples} samples x held-out sets 1-{args.seeds}; teacher_error against each model's own teacher\n")
    print("| network | MACs / call | teacher_error | FID (digits features) | out of range (worst set) |\n|---|---|---|---|---|")
    rows = {"digits": (digits, diffsearch.load_schedule(f"preset:{SOLVER}", nfe=NFE, model=digits))}
    schedule = diffsearch.load_schedule(f"preset:{SOLVER}", nfe=NFE, model=ofa)
    for label, config in (("digits_ofa largest", space.largest()), ("digits_ofa smallest", space.smallest())):
        rows[label] = (ofa, Plan(schedule=schedule, network=(config,) * NFE))
    for label, (model, plan) in rows.items():
        values = held_out(model, plan, args.samples, args.seeds, ("teacher_error", "fid"))
        macs = plan_cost(model, plan if isinstance(plan, Plan) else Plan(schedule=plan))["macs_per_sample"] / NFE
        print(f"| {label} | {macs / 1e6:.2f} M | {mean_std(values['teacher_error'])} | {mean_std(values['fid'])} | "
              f"{100 * max(values['out_of_range']):.1f}% |", flush=True)


def evolve(space, model, evals: int, samples: int, seed: int = 0, rule: bool = False) -> list[tuple[float, dict]]:
    """OFA's evolution finder on real evaluations: (search value, candidate), best first; with ``rule``, a
    candidate with more than ``MAX_OUT_OF_RANGE`` of its samples out of range fails (value inf), as in ``search run``."""
    rng = np.random.default_rng(seed)
    population = [c for _, c in space.initial()]
    population += [space.sample(rng) for _ in range(max(0, 8 - len(population)))]
    scored: dict[str, tuple[float, dict]] = {}

    def evaluate(candidate):
        key = json.dumps(candidate, sort_keys=True)
        if key not in scored and len(scored) < evals:
            result = score(model, space.decode(candidate), samples, 0)
            failed = rule and result["out_of_range"] > MAX_OUT_OF_RANGE
            scored[key] = (float("inf") if failed else result["teacher_error"], candidate)

    for candidate in population:
        evaluate(candidate)
    while len(scored) < evals:
        ranked = sorted(scored.values(), key=lambda pair: pair[0])
        parents = [c for _, c in ranked[: max(2, len(ranked) // 4)]]
        a, b = (parents[int(i)] for i in rng.integers(len(parents), size=2))
        evaluate(space.mutate(a, rng) if rng.random() < 0.5 else space.crossover(a, b, rng))
    return sorted(scored.values(), key=lambda pair: pair[0])


def pareto(args) -> None:
    model = diffsearch.load_model("digits_ofa")
    budget = parse_budget(f"{args.budget}%macs", ("%macs",))
    static = SPACES.get("supernet")(model, parse_budget("100%macs", ("%macs",)), nfe=NFE, solver=SOLVER)
    rule = f"; with the {100 * MAX_OUT_OF_RANGE:g}% out-of-range rule of `search run` (search and held-out)" if args.rule else ""
    print(f"### digits_ofa, {SOLVER} at {NFE} NFE; teacher_error on {args.samples} samples x held-out sets 1-{args.seeds}{rule}\n")

    def passes(scores) -> bool:
        return not args.rule or max(scores["out_of_range"]) <= MAX_OUT_OF_RANGE

    print("| plan | MACs ratio | teacher_error (held-out) | out of range (worst set) |\n|---|---|---|---|")
    results = {}
    for label, candidate in static.initial():
        ratio = static.cost(candidate)["macs_ratio"]
        scores = held_out(model, static.decode(candidate), args.samples, args.seeds)
        if passes(scores):
            results[label] = (ratio, scores["teacher_error"])
        mark = "" if passes(scores) else " (fails the rule)"
        print(f"| uniform {label.split('+')[1]}{mark} | {ratio:.3f} | {mean_std(scores['teacher_error'])} | {100 * max(scores['out_of_range']):.1f}% |", flush=True)
    searched = {}
    for name in ("supernet", "supernet_per_step"):
        space = SPACES.get(name)(model, budget, nfe=NFE, solver=SOLVER)
        started = time.perf_counter()
        ranked = [pair for pair in evolve(space, model, args.evals, args.search_samples, rule=args.rule) if np.isfinite(pair[0])]
        top = 5 if args.rule else 3  # the rule drops finalists on held-out noise: re-score a few more
        finalists = [(candidate, held_out(model, space.decode(candidate), args.samples, args.seeds)) for _, candidate in ranked[:top]]
        finalists = [pair for pair in finalists if passes(pair[1])]
        if not finalists:
            print(f"| searched {name} ({args.evals} evals): none of its {top} finalists passes the rule on held-out noise | | | |", flush=True)
            continue
        best, scores = min(finalists, key=lambda pair: np.mean(pair[1]["teacher_error"]))
        values = scores["teacher_error"]
        searched[name] = (space.cost(best)["macs_ratio"], values, best)
        print(f"| searched {name} ({args.evals} evals, {time.perf_counter() - started:.0f} s) | {searched[name][0]:.3f} | {mean_std(values)} | "
              f"{100 * max(scores['out_of_range']):.1f}% |", flush=True)
    within = {label: pair for label, pair in results.items() if pair[0] <= args.budget / 100 + 1e-12}
    verdict(searched, within, args.budget)


def verdict(searched: dict, within: dict, budget: float) -> None:
    """Paired differences of the searched plans to the best uniform sub-network within the budget, and the 2-std verdict."""
    best_static = min(within, key=lambda label: np.mean(within[label][1]))
    static = within[best_static][1]
    print(f"\nBest uniform sub-network within {budget}% MACs: {best_static} ({mean_std(static)}).")
    per_step, per_run = searched.get("supernet_per_step"), searched.get("supernet")
    for label, plan in (("Per-step plan", per_step), ("Per-run searched", per_run)):
        if plan is not None:
            print(f"{label} - best uniform: {paired(plan[1], static)}.")
    if per_step is not None and per_run is not None:
        print(f"Per-step - per-run: {paired(per_step[1], per_run[1])}.")
    if per_step is not None:
        std = max(np.std(per_step[1], ddof=1), np.std(static, ddof=1))
        margin = np.mean(static) - np.mean(per_step[1])
        print(f"Margin of the per-step plan over the best uniform one: {margin:.5f}; twice the seed std: {2 * std:.5f} "
              f"({'beyond' if margin > 2 * std else 'within: a tie' if margin > -2 * std else 'worse'}).")
        print("\nPer-step plan (sub-network per evaluation): " + ", ".join(SubnetConfig.model_validate(s).label() for s in per_step[2]["subnets"]))
    if per_run is not None:
        print("Per-run plan: " + SubnetConfig.model_validate(per_run[2]["subnet"]).label())


def predictor(args) -> None:
    from diffsearch.predictors import make_predictor
    from diffsearch.predictors.encoders import encode_many
    from diffsearch.predictors.rank import kendall_tau

    model = diffsearch.load_model("digits_ofa")
    space = SPACES.get("supernet_per_step")(model, parse_budget(f"{args.budget}%macs", ("%macs",)), nfe=NFE, solver=SOLVER)
    rng = np.random.default_rng(0)
    train = [space.sample(rng) for _ in range(max(args.labels))]
    ranked = sorted(train[:20], key=lambda c: score(model, space.decode(c), args.search_samples, 0)["teacher_error"])
    later = [space.mutate(ranked[int(i) % 5], rng) for i in range(args.test)]  # a later generation: mutants of the best
    proxies = train + [space.sample(rng) for _ in range(args.proxies)]

    def labels(candidates, samples):
        return np.log([score(model, space.decode(c), samples, 0)["teacher_error"] for c in candidates])

    y_train, y_test, y_proxy = labels(train, args.search_samples), labels(later, args.search_samples), labels(proxies, args.proxy_samples)
    x_train, x_test, x_proxy = encode_many(space, train), encode_many(space, later), encode_many(space, proxies)
    print(f"### Kendall tau of the `ofa` predictor on {args.test} later-generation candidates (mutants of the best 5 of 20); "
          f"labels: teacher_error at {args.search_samples} samples on seed 0; proxies: {len(proxies)} candidates at {args.proxy_samples} samples\n")
    print(f"proxy labels alone vs the expensive labels of the test set: tau {kendall_tau(labels(later, args.proxy_samples), y_test):.3f}\n")
    print("| labels | tau, no pretraining | tau, proxy pretraining |\n|---|---|---|")
    for count in args.labels:
        plain = [kendall_tau(make_predictor("ofa", seed=s).fit(x_train[:count], y_train[:count]).predict(x_test), y_test) for s in range(3)]
        warm = [kendall_tau(make_predictor("ofa", seed=s).pretrain(x_proxy, y_proxy).fit(x_train[:count], y_train[:count]).predict(x_test), y_test) for s in range(3)]
        print(f"| {count} | {mean_std(plain)} | {mean_std(warm)} |", flush=True)


def speed(args) -> None:
    from diffsearch.evaluators.latency import latency_table

    model = diffsearch.load_model("digits_ofa")
    space, macs = model.elastic.space, stage_macs(model)
    schedule = diffsearch.load_schedule(f"preset:{SOLVER}", nfe=NFE, model=model)
    table = latency_table(model)
    configs = sorted(space.uniform(), key=macs)
    plans = {c.label(): Plan(schedule=schedule, network=(c,) * NFE) for c in configs}
    labels = torch.arange(args.samples) % 10
    ratios: dict[str, list[float]] = {name: [] for name in plans}
    largest = space.largest().label()
    for _ in range(args.rounds):
        times = {name: seconds_per_sample(model, plan, samples=args.samples, repeats=1, cond=labels)["cpu_seconds_per_sample"] for name, plan in plans.items()}
        for name, value in times.items():
            ratios[name].append(value / times[largest])
    print(f"### {SOLVER} at {NFE} NFE, materialised sub-networks, {args.samples} samples per timed run, {args.rounds} rounds, "
          f"{torch.get_num_threads()} thread(s), CPU time over the largest network's in the same round; LUT: per block configuration, batch {table.batch}\n")
    print("| sub-network | MACs ratio | CPU time ratio, median (range) | time / MACs | LUT seconds ratio |\n|---|---|---|---|---|")
    for config in configs:
        name, ratio = config.label(), macs(config) / macs.largest
        median = statistics.median(ratios[name])
        lut = table.seconds(config) / table.seconds(space.largest())
        print(f"| {name} | {ratio:.3f} | {median:.3f} ({min(ratios[name]):.3f}-{max(ratios[name]):.3f}) | {median / ratio:.2f} | {lut:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=("quality", "pareto", "predictor", "speed"))
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--search-samples", type=int, default=250)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evals", type=int, default=40)
    parser.add_argument("--budget", type=float, default=50.0)
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--test", type=int, default=30)
    parser.add_argument("--proxies", type=int, default=120)
    parser.add_argument("--proxy-samples", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rule", action="store_true", help="pareto: apply search run's out-of-range rule to every candidate and baseline")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    {"quality": quality, "pareto": pareto, "predictor": predictor, "speed": speed}[args.command](args)


if __name__ == "__main__":
    main()
