"""A trained PyTorch model's predictions on NumPy inputs: logits in batches, labels,
test accuracy, and the model as a NumPy function for the torch-free measurements."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from edgekd.inputs.dataset import Split


@torch.no_grad()
def logits_of(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    xs = torch.from_numpy(x)
    return torch.cat([model(xs[i:i + batch_size]) for i in range(0, len(xs), batch_size)])


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return logits_of(model, x).argmax(1).numpy()


def accuracy(model: nn.Module, data: Split) -> float:
    return float((predict(model, data.x) == data.y).mean())


def predictor(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A PyTorch model as a function of NumPy inputs to NumPy logits (what the torch-free
    measurements in :mod:`edgekd.measure` take)."""
    return lambda x: logits_of(model, x).numpy()
