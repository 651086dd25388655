"""OFA's accuracy predictor (Cai et al. 2020): an MLP on the one-hot architecture encoding.

Three hidden layers of 400 ReLU units and a bias-free scalar output added to the base value (the
targets' mean: the base class standardises them, as OFA adds its frozen ``base_acc``). It trains
with the project's MLP losses (Huber plus pairwise hinge) and, like it, pretrains on cheap proxy
labels and fine-tunes on the expensive ones. Features come from the space's ``encode``: for the
supernet spaces OFA's per-stage one-hot depth, width and kernel, one block per evaluation.
"""

from __future__ import annotations

from typing import Any

from diffsearch.predictors.models import MLPPredictor


class OFAAccuracyPredictor(MLPPredictor):
    """OFA's accuracy-predictor network (3 x 400 ReLU, bias-free output) behind the MLP predictor's training."""

    def __init__(self, seed: int = 0, hidden: int = 400, epochs: int = 150, rank_weight: float = 1.0, **options: Any) -> None:
        super().__init__(seed, hidden=hidden, epochs=epochs, rank_weight=rank_weight, **options)

    def _build(self, width: int):
        import torch

        torch.manual_seed(self.seed)
        hidden, layers = self.options["hidden"], []
        for size in (width, hidden, hidden):
            layers += [torch.nn.Linear(size, hidden), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(hidden, 1, bias=False)).double()
