"""Sample quality of the ``digits`` weights: classifier accuracy, FID and KID against the held-out split.

``python -m diffsearch.evaluators.digits_quality [--weights PATH] [--write]`` (``--write`` stores the
numbers in the weights' JSON metadata). It lives in evaluators/ because it uses the FID code; the
model module must not import evaluators (layer order ``models <- ... <- evaluators``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from diffsearch.files import atomic_write_text
from diffsearch.models.digits import UNET_WEIGHTS, TrainConfig, build_digits, digits_split, held_out_data


def evaluate_digits(
    weights: str | Path | None = None, nfe: int = 20, guidances: tuple[float, ...] = (1.0, 1.5, 2.0), n: int = 360, seed: int = 1
) -> dict[str, Any]:
    """Sample quality at ``nfe`` DPM-Solver++(2M) steps: classifier accuracy, FID, KID vs held-out."""
    import diffsearch
    from diffsearch.evaluators.features import load_feature_extractor
    from diffsearch.evaluators.image_metrics import ReferenceStats, extract_features, fid_from_features, kid_from_features

    model, classifier = build_digits(weights), load_feature_extractor("digits")
    reference = ReferenceStats.from_features(extract_features(classifier, held_out_data()[0]))
    schedule = diffsearch.load_schedule("preset:dpmpp_2m", nfe=nfe, model=model)
    labels = torch.arange(n) % 10
    x_T = torch.randn((n, 1, 8, 8), generator=torch.Generator().manual_seed(seed))
    results: dict[str, Any] = {"schedule": "preset:dpmpp_2m", "nfe": nfe, "samples": n, "noise_seed": seed,
                               "clamped_to": [-1, 1], "features": classifier.fingerprint, "by_guidance": {}}
    for guidance in guidances:
        samples = diffsearch.sample(model, schedule, x_T, cond=labels, guidance=guidance).clamp(-1, 1)
        features = extract_features(classifier, samples)
        results["by_guidance"][str(guidance)] = {
            "classifier_accuracy": float((classifier.classify(samples) == labels).float().mean()),
            "fid": fid_from_features(features, reference),
            "kid": kid_from_features(features, reference)[0],
        }
    train_features = extract_features(classifier, digits_split().train_images)
    results["real_train_vs_held_out"] = {"fid": fid_from_features(train_features, reference),
                                         "kid": kid_from_features(train_features, reference)[0]}
    return results


def _evaluate_command(weights: Path, write: bool) -> None:
    torch.set_num_threads(TrainConfig().threads)
    results = evaluate_digits(weights)
    print(json.dumps(results, indent=2))
    if write:
        metadata_path = weights.with_suffix(".json")
        metadata = json.loads(metadata_path.read_text())
        metadata["metrics"]["samples"] = results
        atomic_write_text(metadata_path, json.dumps(metadata, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """``python -m diffsearch.evaluators.digits_quality [--weights PATH] [--write]``."""
    parser = argparse.ArgumentParser(prog="python -m diffsearch.evaluators.digits_quality",
                                     description="20-NFE sample accuracy / FID / KID; --write adds them to the JSON")
    parser.add_argument("--weights", type=Path, default=UNET_WEIGHTS)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    _evaluate_command(args.weights, args.write)


if __name__ == "__main__":
    main()
