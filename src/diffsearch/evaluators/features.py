"""Feature extractors for FID / KID: modules mapping a batch of samples to (N, D) features.

Registered extractors (``--features NAME``, or a model's ``feature_extractor`` attribute):

- ``digits``: the penultimate layer (64 pre-activations) of a small CNN classifier trained on the digits
  train split (a "classifier-feature FID"); ``python -m diffsearch.evaluators.features train``
  reproduces ``models/weights/digits_classifier.safetensors``.
- ``digits_multi``: the same classifier read at every layer: the spatial mean of each of its three
  convolutional activations (32 + 64 + 128 channels, which respond to edges and blur) plus the
  penultimate layer (64), 288 features in all.
- ``raw``: the flattened samples themselves (for the ``gmm`` model and other low-dimensional data).
- ``inception``: the standard FID Inception-v3 pool features (2048 dims). Never downloaded: the
  user places ``pt_inception-2015-12-05-6726825d.pth`` at ``$DIFFSEARCH_INCEPTION_WEIGHTS`` or
  ``~/.cache/diffsearch/weights/``; it also needs torch-fidelity (and torchvision).

Every extractor takes samples in the model's data space (images in [-1, 1], (N, C, H, W)) and has
``name``, ``fingerprint`` (identifies weights and preprocessing) and ``num_features``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from diffsearch.errors import DiffsearchError
from diffsearch.registry import Registry

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "models" / "weights"
CLASSIFIER_WEIGHTS = WEIGHTS_DIR / "digits_classifier.safetensors"
INCEPTION_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
INCEPTION_ENV = "DIFFSEARCH_INCEPTION_WEIGHTS"

FEATURE_EXTRACTORS: Registry[Callable[[], nn.Module]] = Registry("feature extractor")


def register_feature_extractor(name: str, factory: Callable[[], nn.Module] | str | None = None):
    """Register a factory ``() -> nn.Module`` mapping (N, ...) samples to (N, D) features."""
    return FEATURE_EXTRACTORS.register(name, factory)


def load_feature_extractor(spec: str | nn.Module) -> nn.Module:
    """A feature extractor by registered name (loaded once per process), or a module as is.

    Example:
        >>> load_feature_extractor("raw")(torch.ones(2, 1, 2, 2)).shape
        torch.Size([2, 4])
    """
    if isinstance(spec, nn.Module):
        return spec
    return _load_named(spec)


@lru_cache(maxsize=None)
def _load_named(name: str) -> nn.Module:
    return FEATURE_EXTRACTORS.get(name)().eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# raw


class RawFeatures(nn.Module):
    """Identity features: each sample flattened to one float64 row."""

    name = "raw"
    fingerprint = "raw"
    num_features = None

    def forward(self, samples: torch.Tensor) -> torch.Tensor:
        return samples.reshape(samples.shape[0], -1).double()


# ---------------------------------------------------------------------------------------------
# digits classifier


class ClassifierConfig(BaseModel):
    """Architecture and training of the digits classifier; stored in its JSON metadata."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    #: conv channels at 8x8, 8x8 and 4x4 resolution.
    channels: tuple[int, int, int] = (32, 64, 128)
    #: width of the penultimate layer, i.e. of the FID / KID features.
    num_features: int = 64
    dropout: float = Field(0.3, ge=0.0, lt=1.0)
    epochs: int = Field(40, ge=1)
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    #: random translations of up to this many pixels (training only).
    max_shift: int = Field(1, ge=0)
    seed: int = 0
    split_seed: int = 0
    threads: int = 1


class DigitsClassifier(nn.Module):
    """Small CNN for 8x8 digits; ``forward`` returns its penultimate layer before the ReLU.

    Pre-activations, because units that the ReLU kills on all data would make the feature
    covariance singular. They are divided by ``feature_scale`` (fixed after training: the train
    split's RMS feature), so that x.y / d is O(1) as for Inception features and KID's cubic kernel
    stays well scaled.
    """

    name = "digits"

    def __init__(self, config: ClassifierConfig | None = None, fingerprint: str = "untrained") -> None:
        super().__init__()
        self.config = config = config or ClassifierConfig()
        c0, c1, c2 = config.channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c0, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c0, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(4 * c2, config.num_features),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.num_features, 10)
        self.register_buffer("feature_scale", torch.ones(()))
        self.num_features = config.num_features
        self.fingerprint = fingerprint

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images.float()) / self.feature_scale

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores (N, 10)."""
        return self.head(self.dropout(nn.functional.relu(self.body(images.float()))))

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """Predicted labels (N,) of images in [-1, 1]."""
        return self.logits(images).argmax(dim=1)


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels, filling the border with background (-1)."""
    if max_shift == 0:
        return images
    padded = nn.functional.pad(images, (max_shift,) * 4, value=-1.0)
    offsets = torch.randint(0, 2 * max_shift + 1, (images.shape[0], 2), generator=generator)
    size = images.shape[-1]
    return torch.stack([p[:, i : i + size, j : j + size] for p, (i, j) in zip(padded, offsets.tolist())])


def train_classifier(config: ClassifierConfig, log: bool = True) -> tuple[DigitsClassifier, dict[str, Any]]:
    """Seeded Adam training on the digits train split; returns (classifier, held-out metrics)."""
    from diffsearch.models.digits import digits_split

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    split = digits_split(config.split_seed)
    classifier = DigitsClassifier(config)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    steps_per_epoch = -(-split.train_images.shape[0] // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, total_steps=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    for epoch in range(config.epochs):
        classifier.train()
        order = torch.randperm(split.train_images.shape[0], generator=generator)
        for batch in order.split(config.batch_size):
            images = random_shift(split.train_images[batch], config.max_shift, generator)
            loss = nn.functional.cross_entropy(classifier.logits(images), split.train_labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        if log and (epoch % 10 == 9 or epoch == config.epochs - 1):
            score = accuracy(classifier.eval(), split.held_out_images, split.held_out_labels)
            print(f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  held-out accuracy {score:.4f}", flush=True)
    classifier.eval()
    with torch.no_grad():
        classifier.feature_scale.fill_(classifier.body(split.train_images).pow(2).mean().sqrt())
    info = {
        "held_out_accuracy": accuracy(classifier, split.held_out_images, split.held_out_labels),
        "train_accuracy": accuracy(classifier, split.train_images, split.train_labels),
        "train_seconds": round(time.perf_counter() - start, 1),
    }
    return classifier, info


def accuracy(classifier: DigitsClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` classified as ``labels``."""
    return float((classifier.classify(images) == labels).float().mean())


def save_classifier(classifier: DigitsClassifier, info: dict[str, Any], out: Path) -> Path:
    """Write ``digits_classifier.safetensors`` and its JSON metadata into ``out``."""
    from diffsearch.models.digits import write_weights

    metadata = {
        "feature_extractor": "digits",
        "command": f"python -m diffsearch.evaluators.features train --seed {classifier.config.seed} --threads {classifier.config.threads}",
        "config": classifier.config.model_dump(mode="json"),
        "input": "(N, 1, 8, 8) float images in [-1, 1] (sklearn digits / 8 - 1)",
        "features": f"penultimate layer before its ReLU, {classifier.num_features} dims, divided by feature_scale",
        "metrics": info,
    }
    return write_weights(classifier, out / CLASSIFIER_WEIGHTS.name, metadata)


def load_digits_classifier(weights: str | Path | None = None) -> DigitsClassifier:
    """The trained digits classifier (offline, safetensors); ``fingerprint`` = its weights' sha256."""
    from diffsearch.models.digits import file_fingerprint, read_weights

    path = Path(weights) if weights is not None else CLASSIFIER_WEIGHTS
    state, metadata = read_weights(path, "python -m diffsearch.evaluators.features train")
    classifier = DigitsClassifier(ClassifierConfig.model_validate(metadata["config"]), f"digits-{file_fingerprint(path)}")
    classifier.load_state_dict(state)
    classifier.metadata = metadata
    return classifier.eval().requires_grad_(False)


class DigitsMultiFeatures(nn.Module):
    """Multi-layer features of the digits classifier: per-channel spatial means of each conv activation + penultimate.

    The penultimate layer alone is nearly invariant to blur and small intensity errors (the classifier
    was trained to ignore them); its early layers are not.
    """

    name = "digits_multi"

    def __init__(self, classifier: DigitsClassifier, calibration: torch.Tensor) -> None:
        super().__init__()
        self.classifier = classifier
        self.fingerprint = f"multi-{classifier.fingerprint}"
        self.num_features = sum(m.out_channels for m in classifier.body if isinstance(m, nn.Conv2d)) + classifier.num_features
        with torch.no_grad():  # each layer's group divided by its RMS on real data, so no layer dominates the distance
            self.scales = [group.pow(2).mean().sqrt().clamp_min(1e-8) for group in self._groups(calibration)]

    def _groups(self, images: torch.Tensor) -> list[torch.Tensor]:
        h, groups = images.float(), []
        for layer in self.classifier.body:
            h = layer(h)
            if isinstance(layer, nn.ReLU):
                groups.append(h.mean(dim=(2, 3)))
        return [*groups, h]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([g / s for g, s in zip(self._groups(images), self.scales)], dim=1).double()


def load_digits_multi() -> DigitsMultiFeatures:
    """The ``digits_multi`` extractor over the shipped digits classifier, layer scales from the train split."""
    from diffsearch.models.digits import digits_split

    return DigitsMultiFeatures(load_digits_classifier(), digits_split().train_images)


def classify(images: torch.Tensor) -> torch.Tensor:
    """Labels (N,) of digit images in [-1, 1], by the shipped digits classifier."""
    return load_feature_extractor("digits").classify(images)


# ---------------------------------------------------------------------------------------------
# inception


def inception_weights_path() -> Path:
    """Where the FID Inception weights are looked for: $DIFFSEARCH_INCEPTION_WEIGHTS, else the cache."""
    if os.environ.get(INCEPTION_ENV):
        return Path(os.environ[INCEPTION_ENV]).expanduser()
    cache = Path(os.environ.get("DIFFSEARCH_CACHE", Path.home() / ".cache" / "diffsearch")).expanduser()
    return cache / "weights" / INCEPTION_FILENAME


class InceptionFeatures(nn.Module):
    """FID Inception-v3 pool3 features (2048) of [-1, 1] images, through torch-fidelity's port."""

    name = "inception"
    num_features = 2048

    def __init__(self, network: nn.Module, fingerprint: str) -> None:
        super().__init__()
        self.network = network
        self.fingerprint = fingerprint

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = ((images.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        return self.network(pixels).reshape(images.shape[0], -1).double()


def build_inception() -> InceptionFeatures:
    """The ``inception`` extractor from a user-provided weights file; never downloads."""
    path = inception_weights_path()
    if not path.is_file():
        raise DiffsearchError(
            f"the inception feature extractor needs the FID Inception weights file {INCEPTION_FILENAME} "
            f"(the pytorch-fid / torch-fidelity 2015-12-05 port); diffsearch never downloads it. "
            f"Put it at {path} or set {INCEPTION_ENV}=/path/to/{INCEPTION_FILENAME}"
        )
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        network = NoTrainInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except (ImportError, ModuleNotFoundError) as error:
        raise DiffsearchError(
            f"the inception feature extractor needs torch-fidelity (and torchvision): "
            f"pip install torch-fidelity ({error})"
        ) from None
    from diffsearch.models.digits import file_fingerprint

    return InceptionFeatures(network, f"inception-{file_fingerprint(path)}")


FEATURE_EXTRACTORS.register("raw", RawFeatures)
FEATURE_EXTRACTORS.register("digits", load_digits_classifier)
FEATURE_EXTRACTORS.register("digits_multi", load_digits_multi)
FEATURE_EXTRACTORS.register("inception", build_inception)


def main(argv: list[str] | None = None) -> None:
    """``python -m diffsearch.evaluators.features train [--out DIR] [--seed S]``."""
    from diffsearch.models.digits import report_written, training_cli

    parser, _ = training_cli("diffsearch.evaluators.features", "the digits classifier", ClassifierConfig().threads)
    args = parser.parse_args(argv)
    classifier, info = train_classifier(ClassifierConfig(seed=args.seed, threads=args.threads))
    report_written(info, save_classifier(classifier, info, args.out))


if __name__ == "__main__":
    main()
