"""The built-in ``digits`` model: a class-conditional DDPM on sklearn's 8x8 handwritten digits.

A small UNet (``_digits_unet.py``) predicts epsilon under the discrete linear DDPM schedule; labels
are dropped to the null label 10 with probability ``label_dropout`` during training, so classifier-free
guidance works. The data split, the training loop and the shipped weights are all seeded:
``python -m diffsearch.models.digits train`` reproduces ``weights/digits_unet.safetensors``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from diffsearch.errors import DiffsearchError
from diffsearch.files import atomic_path, atomic_write_text
from diffsearch.models._digits_unet import DigitsUNet, UNetConfig
from diffsearch.models.denoiser import Denoiser
from diffsearch.models.noise_schedules import noise_schedule_from
from diffsearch.models.quantize import LayerQuantizer

DIGITS_NOISE_SCHEDULE = {"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02, "num_train_timesteps": 1000}
WEIGHTS_DIR = Path(__file__).parent / "weights"
UNET_WEIGHTS = WEIGHTS_DIR / "digits_unet.safetensors"
NULL_LABEL = 10
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2


class DigitsSplit(NamedTuple):
    """Images (N, 1, 8, 8) float32 in [-1, 1] and int64 labels of the train and held-out splits."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    held_out_images: torch.Tensor
    held_out_labels: torch.Tensor


class TrainConfig(BaseModel):
    """Hyperparameters of ``train_digits``; stored in the weights' JSON metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: optimisation steps (the shipped weights use the default).
    steps: int = Field(3000, ge=1)
    batch_size: int = Field(128, ge=2)
    learning_rate: float = 1e-3
    #: linear warm-up steps, then cosine decay to 0.
    warmup_steps: int = 200
    weight_decay: float = 0.0
    #: the exported weights are this exponential moving average of the trained ones.
    ema_decay: float = 0.999
    #: probability of replacing a label by the null label (classifier-free guidance).
    label_dropout: float = Field(0.15, ge=0.0, le=1.0)
    seed: int = 0
    split_seed: int = SPLIT_SEED
    #: CPU threads (1: robust on a shared 2-core machine); results are reproducible for a fixed
    #: thread count, torch version and CPU.
    threads: int = 1
    architecture: UNetConfig = UNetConfig()


@lru_cache(maxsize=4)
def _split_arrays(seed: int, held_out_fraction: float) -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images.astype(np.float32) / 8.0 - 1.0)[:, None]
    labels = digits.target.astype(np.int64)
    return tuple(
        train_test_split(images, labels, test_size=held_out_fraction, stratify=labels, random_state=seed)
    )


def digits_split(seed: int = SPLIT_SEED, held_out_fraction: float = HELD_OUT_FRACTION) -> DigitsSplit:
    """The stratified, seeded train / held-out split of sklearn's digits (1437 / 360 by default).

    Example:
        >>> split = digits_split()
        >>> tuple(split.train_images.shape), tuple(split.held_out_images.shape)
        ((1437, 1, 8, 8), (360, 1, 8, 8))
    """
    train_x, held_x, train_y, held_y = _split_arrays(seed, held_out_fraction)
    return DigitsSplit(*(torch.from_numpy(a.copy()) for a in (train_x, train_y, held_x, held_y)))


def held_out_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images and labels (360): the classifier's test set and the real-vs-real noise floor."""
    split = digits_split()
    return split.held_out_images, split.held_out_labels


def train_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The train split (1437 images): the largest honest FID / KID reference, as CIFAR-10 FID uses its train set."""
    split = digits_split()
    return split.train_images, split.train_labels


def file_fingerprint(path: Path) -> str:
    """A short sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# training


def noised(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """DDPM forward process q(x_t | x_0): sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
    abar = alphas_cumprod[t].float()[:, None, None, None]
    return abar.sqrt() * x0 + (1.0 - abar).sqrt() * noise


def learning_rate(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.learning_rate * 0.5 * (1.0 + np.cos(np.pi * progress))


def training_batch(images, labels, alphas_cumprod, config: TrainConfig, generator: torch.Generator):
    """One epsilon-prediction batch: (x_t, t, labels with dropout, target noise)."""
    index = torch.randint(0, images.shape[0], (config.batch_size,), generator=generator)
    t = torch.randint(0, alphas_cumprod.shape[0], (config.batch_size,), generator=generator)
    noise = torch.randn(config.batch_size, *images.shape[1:], generator=generator)
    drop = torch.rand(config.batch_size, generator=generator) < config.label_dropout
    batch_labels = torch.where(drop, torch.full_like(labels[index], NULL_LABEL), labels[index])
    return noised(images[index], t, noise, alphas_cumprod), t.float(), batch_labels, noise


@torch.no_grad()
def optimisation_step(optimizer, loss: torch.Tensor, ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """One optimiser step on ``loss``, then the EMA update with warm-up: decay min(decay, (1 + step) / (10 + step))."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    ema_update(ema, model, min(decay, (1.0 + step) / (10.0 + step)))


def training_cli(prog: str, what: str, threads: int) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """``python -m PROG train`` of a script that writes shipped weights: the parser and its ``train`` command
    with ``--out`` (default: the shipped weights), ``--seed`` and ``--threads``."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}")
    train = parser.add_subparsers(dest="command", required=True).add_parser("train", help=f"train {what} and write its weights + JSON")
    train.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="output directory (default: the shipped weights)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=threads)
    return parser, train


def report_written(info: dict[str, Any], path: Path) -> None:
    """Print a training run's info and the weights file it wrote."""
    print(json.dumps(info, indent=2))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """Polyak averaging of the weights: ema = decay ema + (1 - decay) model."""
    for target, source in zip(ema.parameters(), model.parameters()):
        target.lerp_(source, 1.0 - decay)


@torch.no_grad()
def denoising_loss(unet, images, labels, alphas_cumprod, seed: int = 1234, repeats: int = 8) -> float:
    """Mean epsilon-MSE over seeded (t, noise) draws: the held-out metric of a checkpoint."""
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(repeats):
        t = torch.randint(0, alphas_cumprod.shape[0], (images.shape[0],), generator=generator)
        noise = torch.randn(images.shape, generator=generator)
        prediction = unet(noised(images, t, noise, alphas_cumprod), t.float(), labels)
        losses.append(float((prediction - noise).pow(2).mean()))
    return float(np.mean(losses))


def training_setup(config: Any, network_class: Any) -> tuple[DigitsSplit, torch.Tensor, torch.nn.Module, torch.nn.Module]:
    """Threads and seed, the data split, the DDPM alphas, a fresh network and its EMA copy (in this order: reproducible)."""
    import copy

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    split = digits_split(config.split_seed)
    alphas_cumprod = noise_schedule_from(DIGITS_NOISE_SCHEDULE).alphas_cumprod
    network = network_class(config.architecture)
    return split, alphas_cumprod, network, copy.deepcopy(network).requires_grad_(False)


def train_digits(config: TrainConfig, minutes: float | None = None, log_every: int = 250):
    """Train the digits UNet (Ho et al. 2020 simple loss, label dropout, EMA); returns (ema, info)."""
    split, alphas_cumprod, unet, ema = training_setup(config, DigitsUNet)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    start, step = time.perf_counter(), 0
    for step in range(config.steps):
        if minutes is not None and time.perf_counter() - start > 60.0 * minutes:
            print(f"stopping at step {step}: --minutes {minutes} reached (the result is not the reproducible default)")
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        x_t, t, labels, noise = training_batch(split.train_images, split.train_labels, alphas_cumprod, config, generator)
        loss = (unet(x_t, t, labels) - noise).pow(2).mean()
        optimisation_step(optimizer, loss, ema, unet, step, config.ema_decay)
        if log_every and step % log_every == 0:
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.perf_counter() - start:6.1f}s", flush=True)
    else:
        step = config.steps
    info = {
        "steps_done": step,
        "train_seconds": round(time.perf_counter() - start, 1),
        "held_out_denoising_mse": denoising_loss(ema, split.held_out_images, split.held_out_labels, alphas_cumprod),
        "train_denoising_mse": denoising_loss(ema, split.train_images, split.train_labels, alphas_cumprod),
    }
    return ema.eval(), info


def save_digits(unet: DigitsUNet, config: TrainConfig, info: dict[str, Any], out: Path) -> Path:
    """Write ``digits_unet.safetensors`` and its ``digits_unet.json`` metadata into ``out``."""
    metadata = {
        "model": "digits",
        "command": f"python -m diffsearch.models.digits train --steps {config.steps} --seed {config.seed} --threads {config.threads}",
        "architecture": config.architecture.model_dump(mode="json"),
        "noise_schedule": DIGITS_NOISE_SCHEDULE,
        "prediction_type": "epsilon",
        "null_label": NULL_LABEL,
        "data": {"dataset": "sklearn.datasets.load_digits", "scaling": "x / 8 - 1",
                 "split_seed": config.split_seed, "held_out_fraction": HELD_OUT_FRACTION},
        "training": config.model_dump(mode="json", exclude={"architecture"}),
        "metrics": info,
    }
    return write_weights(unet, out / UNET_WEIGHTS.name, metadata)


# ---------------------------------------------------------------------------------------------
# loading


def digits_network(unet: DigitsUNet, quantizer: LayerQuantizer | None = None):
    """``fn(x, t_in, cond)`` for the Denoiser: labels (or None -> null label), float32 inside, through ``quantizer``."""
    network = quantizer if quantizer is not None else unet

    def fn(x: torch.Tensor, t_in: torch.Tensor, cond: Any = None) -> torch.Tensor:
        labels = _labels(cond, x.shape[0], x.device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and x.requires_grad):  # differentiable for LD3 / refine
            return network(x.float(), t_in.float(), labels).to(x.dtype)

    return fn


def _labels(cond: Any, batch: int, device: torch.device) -> torch.Tensor:
    if cond is None:
        return torch.full((batch,), NULL_LABEL, dtype=torch.long, device=device)
    labels = torch.as_tensor(cond, device=device).long().reshape(-1)
    if labels.numel() == 1:
        labels = labels.expand(batch)
    if labels.shape[0] != batch or labels.min() < 0 or labels.max() > NULL_LABEL:
        raise DiffsearchError(f"digits: cond must be {batch} labels in 0..{NULL_LABEL} (10 = unconditional)")
    return labels


def read_weights(path: Path, train_command: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A shipped safetensors file and the JSON metadata beside it (offline); a clear error if missing."""
    from safetensors.torch import load_file

    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise DiffsearchError(f"weights {path} (and {path.with_suffix('.json').name}) not found; train them with: {train_command}")
    return load_file(str(path)), json.loads(path.with_suffix(".json").read_text())


def write_weights(module: torch.nn.Module, path: Path, metadata: dict[str, Any]) -> Path:
    """Write ``module``'s weights as safetensors and ``metadata`` (+ torch version, sha256) as JSON beside them."""
    from safetensors.torch import save_file

    with atomic_path(path) as temporary:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(temporary))
    metadata = {**metadata, "torch_version": torch.__version__, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    atomic_write_text(path.with_suffix(".json"), json.dumps(metadata, indent=2) + "\n")
    return path


def load_network(network_class: Any, config_class: Any, path: Path, train_command: str) -> Any:
    """``network_class(config)`` with the weights of ``path``, its config from the JSON's ``architecture``; frozen, eval mode."""
    state, metadata = read_weights(path, train_command)
    network = network_class(config_class.model_validate(metadata["architecture"]))
    network.load_state_dict(state)
    return network.eval().requires_grad_(False)


def load_unet(weights: str | Path | None = None) -> DigitsUNet:
    """The trained UNet from a safetensors file and its JSON metadata (offline)."""
    path = Path(weights) if weights is not None else UNET_WEIGHTS
    return load_network(DigitsUNet, UNetConfig, path, "python -m diffsearch.models.digits train")


def build_digits(weights: str | Path | None = None) -> Denoiser:
    """The ``digits`` model: class-conditional epsilon UNet, null label 10, the train split as FID reference.

    Example:
        >>> model = build_digits()
        >>> model.data_shape, model.num_classes, model.null_cond
        ((1, 8, 8), 10, 10)
    """
    path = Path(weights) if weights is not None else UNET_WEIGHTS
    unet = load_unet(path)
    return digits_denoiser(unet, "digits", f"digits-{file_fingerprint(path)}", LayerQuantizer(unet), blocks=unet.blocks)


def digits_denoiser(unet: torch.nn.Module, name: str, fingerprint: str, quantizer: LayerQuantizer | None = None, **declared: Any) -> Denoiser:
    """A Denoiser around a digits epsilon network: the schedule, labels, data range, references and objective
    of ``digits`` (``declared``: what the network offers besides, e.g. ``blocks`` or ``elastic``)."""
    model = Denoiser(
        digits_network(unet, quantizer),
        DIGITS_NOISE_SCHEDULE,
        "epsilon",
        data_shape=(1, 8, 8),
        num_classes=10,
        null_cond=NULL_LABEL,
        data_mean=digits_split().train_images.mean(0),
        name=name,
        fingerprint=fingerprint,
        modules=(unet,),
        data_range=(-1.0, 1.0),
        reference_data=train_data,
        floor_data=held_out_data,
        feature_extractor="digits",
        objective="teacher_error",  # the best discrimination at 5 and 10 NFE (benchmarks/discrimination.py)
        teacher_features="raw",
        quantizer=quantizer,
        **declared,
    )
    model.unet = unet
    return model


def main(argv: list[str] | None = None) -> None:
    """``python -m diffsearch.models.digits train [--out DIR] [--steps N] [--minutes M]``.

    Sample quality of the weights: ``python -m diffsearch.evaluators.digits_quality [--write]``.
    """
    parser, train = training_cli("diffsearch.models.digits", "the digits UNet", TrainConfig().threads)
    train.add_argument("--steps", type=int, default=TrainConfig().steps)
    train.add_argument("--minutes", type=float, default=None, help="stop early after M minutes (not reproducible)")
    args = parser.parse_args(argv)
    config = TrainConfig(steps=args.steps, seed=args.seed, threads=args.threads)
    unet, info = train_digits(config, minutes=args.minutes)
    report_written(info, save_digits(unet, config, info, args.out))


if __name__ == "__main__":
    main()
