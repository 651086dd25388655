"""Broken samples (issue 18 item 9): the share of held-out samples outside the data range, per schedule.

For every preset x timestep family at each NFE, on one held-out noise set: how many samples have a
value beyond the data range by more than the margin (``evaluate.out_of_range``: |x| > 1.5 on
[-1, 1]), how many of them the model's own converged teacher keeps in range on the same noise
(the solver's excess: what a schedule broke), and the largest excursion; beside them the 200-step
reference (order-3 multistep, logSNR) and the teacher on the same noise. ``--artifacts`` adds
exported schedules, each on ``--artifact-seeds`` held-out sets.

    python benchmarks/out_of_range.py --nfe 4 5 6 8 10 --samples 1000 \
        --artifacts benchmarks/artifacts/digits_10nfe_teacher_best.json --artifact-samples 2000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import diffsearch
from diffsearch.evaluators.evaluate import excursions
from diffsearch.evaluators.noise import HELDOUT_SEED, noise_set
from diffsearch.evaluators.reference import sample_batched, teacher_schedule
from diffsearch.evaluators.teacher import teacher_set
from diffsearch.solvers.presets import PRESETS, preset_schedule
from diffsearch.solvers.timesteps import TIMESTEP_FAMILIES


def broken(model, samples: torch.Tensor) -> torch.Tensor:
    """Per sample: True when any value lies beyond the data range by more than the margin (``evaluate.out_of_range``'s rule)."""
    excess, margin = excursions(model, samples)
    return excess > margin


def counts(model, schedule, samples: int, seed: int) -> dict[str, float]:
    """Out-of-range samples of ``schedule`` on one noise set, those the teacher keeps in range, and the largest excursion."""
    x_T, labels = noise_set(model, samples, seed)
    output = sample_batched(model, schedule, x_T, labels if model.num_classes else None, None, 1000)
    if not torch.isfinite(output).all():
        return {"out": samples, "excess": samples, "teacher_out": -1, "max_abs": float("inf")}
    teacher = teacher_set(model, seed, samples, None, dense=True).at(model, schedule.timesteps[-1])
    mine, theirs = broken(model, output), broken(model, teacher)
    return {"out": int(mine.sum()), "excess": int((mine & ~theirs).sum()), "teacher_out": int(theirs.sum()),
            "max_abs": float(output.abs().max())}


def preset_table(model, nfes: list[int], samples: int) -> dict:
    """Every preset x family at every NFE on held-out noise set 1."""
    rows = {}
    for nfe in nfes:
        for family in TIMESTEP_FAMILIES.names():
            for name in PRESETS.names():
                schedule = preset_schedule(name, nfe, model.noise_schedule, family, model=model)
                rows[f"{nfe}|{name}@{family}"] = counts(model, schedule, samples, HELDOUT_SEED)
        print(f"NFE {nfe} done", flush=True)
    return rows


def markdown(rows: dict, nfes: list[int], samples: int) -> str:
    """One table per NFE: presets as rows, families as columns; cells 'out (excess over the teacher)'."""
    families = TIMESTEP_FAMILIES.names()
    lines = []
    for nfe in nfes:
        lines += [f"\n#### {nfe} NFE ({samples} samples, held-out noise seed {HELDOUT_SEED}): out of range (of them, in range for the teacher)\n",
                  "| preset | " + " | ".join(families) + " |", "|---" * (len(families) + 1) + "|"]
        for name in PRESETS.names():
            cells = [rows[f"{nfe}|{name}@{family}"] for family in families]
            lines.append(f"| {name} | " + " | ".join(f"{c['out']} ({c['excess']})" for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="digits")
    parser.add_argument("--nfe", type=int, nargs="+", default=[4, 5, 6, 8, 10])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--artifacts", nargs="*", default=[])
    parser.add_argument("--artifact-samples", type=int, default=2000)
    parser.add_argument("--artifact-seeds", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/out_of_range_digits.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = diffsearch.load_model(args.model)
    ns = model.noise_schedule
    reference = teacher_schedule(model, ns.t_max, ns.default_t_end, steps=200)
    seeds = range(HELDOUT_SEED, HELDOUT_SEED + args.artifact_seeds)
    exported = {"200-step reference": [counts(model, reference, args.artifact_samples, s) for s in seeds]}
    for path in args.artifacts:
        exported[Path(path).name] = [counts(model, diffsearch.load_schedule(path, model=model), args.artifact_samples, s) for s in seeds]
    for name, per_seed in exported.items():
        print(f"{name}: out of range per held-out set ({args.artifact_samples} samples, seeds {list(seeds)}): "
              + ", ".join(f"{c['out']} (teacher {c['teacher_out']}, excess {c['excess']}, max |x| {c['max_abs']:.2f})" for c in per_seed))
    rows = preset_table(model, args.nfe, args.samples) if args.nfe else {}
    print(markdown(rows, args.nfe, args.samples))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"samples": args.samples, "presets": rows, "artifact_samples": args.artifact_samples,
                                          "exported": exported}, indent=1))


if __name__ == "__main__":
    main()
