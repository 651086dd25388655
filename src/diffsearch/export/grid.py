"""``search sample``: a labelled PNG grid of samples (one row per class for conditional models)."""

from __future__ import annotations

from pathlib import Path

import torch

from diffsearch.errors import DiffsearchError
from diffsearch.evaluators.reference import sample_batched
from diffsearch.files import atomic_path
from diffsearch.models.denoiser import Denoiser
from diffsearch.solvers.schedule import Schedule


def grid_samples(model: Denoiser, schedule: Schedule, per_row: int, seed: int, guidance: float | None):
    """Samples and their row labels: one row per class, or 8 unlabelled rows."""
    shape = model.data_shape or ()
    if len(shape) != 3 or shape[0] not in (1, 3):
        raise DiffsearchError(f"search sample draws image grids; model {model.name!r} has data_shape {shape}, not (C, H, W)")
    rows = model.num_classes or 8
    labels = torch.arange(rows).repeat_interleave(per_row) if model.num_classes else None
    x_T = torch.randn((rows * per_row, *shape), generator=torch.Generator().manual_seed(seed))
    images = sample_batched(model, schedule, x_T, labels, guidance)
    images = model.decode(images) if model.decode is not None else images
    low, high = model.data_range if model.data_range is not None else (float(images.min()), float(images.max()))
    return ((images.clamp(low, high) - low) / (high - low)).cpu(), labels, rows


def write_grid(model: Denoiser, schedule: Schedule, out: str | Path, per_row: int = 10, seed: int = 1,
               guidance: float | None = None) -> Path:
    """Sample ``per_row`` images per class and write them as a PNG grid with row labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images, labels, rows = grid_samples(model, schedule, per_row, seed, guidance)
    figure, axes = plt.subplots(rows, per_row, figsize=(per_row * 0.6 + 0.6, rows * 0.6 + 0.4), squeeze=False)
    for index, axis in enumerate(axes.flat):
        image = images[index].permute(1, 2, 0).numpy()
        axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
        if index % per_row == 0 and labels is not None:
            axis.set_ylabel(str(int(labels[index])), rotation=0, labelpad=10)
    title = f"{schedule.name or 'schedule'} ({schedule.nfe} NFE" + (f", guidance {guidance}" if guidance is not None else "") + ")"
    figure.suptitle(title, fontsize=8)
    path = Path(out)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return path
