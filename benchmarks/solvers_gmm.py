"""Presets x spacings x NFE on gmm (teacher error, exact Frechet), and the USF loop's speed against
diffusers' own loop on the same tiny UNet.

    python benchmarks/solvers_gmm.py [--samples 5000] [--repeats 20] > /tmp/solvers_gmm.md
"""

from __future__ import annotations

import argparse
import time

import torch

import diffsearch
from diffsearch.evaluators.evaluate import evaluate
from diffsearch.solvers.presets import PRESETS, preset_schedule

SPACINGS = ("logsnr", "time_uniform", "quadratic", "karras", "linspace", "trailing")
NFES = (4, 5, 6, 8, 10)
SPEED_CASES = {  # preset -> (diffusers class, overrides)
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"solver_order": 2}),
    "unipc_bh2": ("UniPCMultistepScheduler", {}),
    "deis_3": ("DEISMultistepScheduler", {"solver_order": 3}),
    "dpm_solver_3": ("DPMSolverSinglestepScheduler", {"solver_order": 3}),
}
BETAS = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}


def quality_table(samples: int) -> None:
    model = diffsearch.load_model("gmm")
    print(f"### gmm: held-out {samples} samples (seed 1); cells are frechet_exact / teacher_error\n")
    for spacing in SPACINGS:
        print(f"#### spacing `{spacing}`\n")
        print("| preset | " + " | ".join(f"{n} NFE" for n in NFES) + " |")
        print("|---|" + "---|" * len(NFES))
        for name in PRESETS:
            cells = []
            for nfe in NFES:
                result = evaluate(model, preset_schedule(name, nfe, model.noise_schedule, spacing), samples=samples)
                ok = result["status"] == "ok"
                cells.append(f"{result['frechet_exact']:.4f} / {result['teacher_error']:.3f}" if ok else "failed")
            print(f"| {name} | " + " | ".join(cells) + " |")
        print()


def best_time(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


@torch.no_grad()
def speed_table(repeats: int, batch: int = 64, nfe: int = 10) -> None:
    import diffusers

    from diffsearch.testing.models import tiny_unet_network

    fn = tiny_unet_network()
    model = diffsearch.Denoiser(fn, BETAS, data_shape=(1, 8, 8))
    x_T = torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t_in = torch.full((batch,), 500.0)
    call = best_time(lambda: fn(x_T, t_in, None), repeats * 5)
    print(f"### speed: tiny UNet2DModel (42k params), batch {batch}, {nfe} NFE, 1 thread, best of {repeats}\n")
    print(f"one model call: {call * 1e3:.3f} ms\n")
    print("| preset | diffsearch.sample (ms) | diffusers loop (ms) | ratio | USF overhead per step (ms) | overhead / model call |")
    print("|---|---|---|---|---|---|")
    for name, (class_name, overrides) in SPEED_CASES.items():
        scheduler = getattr(diffusers, class_name)(**BETAS, **overrides)
        schedule = diffsearch.load_schedule(f"preset:{name}", nfe=nfe, model=model, spacing="linspace")

        def ours():
            diffsearch.sample(model, schedule, x_T)

        def theirs():
            scheduler.set_timesteps(nfe)
            x = x_T
            for t in scheduler.timesteps:
                x = scheduler.step(fn(x, t.expand(batch).float(), None), t, x).prev_sample

        mine, reference = best_time(ours, repeats), best_time(theirs, repeats)
        overhead = (mine - nfe * call) / nfe
        print(f"| {name} | {mine * 1e3:.2f} | {reference * 1e3:.2f} | {mine / reference:.2f} | {overhead * 1e3:.3f} | {overhead / call:.2f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    speed_table(args.repeats)
    if not args.skip_quality:
        quality_table(args.samples)


if __name__ == "__main__":
    main()
