"""A PyTorch model's inputs and predictions during training: the rows of a batch as the
model takes them (:func:`rows`, :func:`call`), logits in batches, labels, test accuracy, and
the model as a NumPy function for the torch-free measurements.

What a model is fed (:data:`ModelInput`) is one NumPy array for a model of one float input
(called positionally, ``model(x)``), or :class:`~edgekd.inputs.dataset.Feeds` for a model
fed by name: every data input (token ids, masks, several signals), fixed inputs at their
value and state inputs at zeros (the start of a stream), called ``model(**batch)`` so that
forward's optional parameters (a Hugging Face ``token_type_ids``) keep their defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from edgekd.inputs.calls import flat_outputs
from edgekd.inputs.dataset import Feeds, InputSpec, Split, feed

ModelInput = np.ndarray | Feeds  # one float input, or every input by name
Batch = torch.Tensor | dict[str, torch.Tensor]  # one call's inputs


def model_input(split: Split, specs: Sequence[InputSpec] = ()) -> ModelInput:
    """What ``split`` feeds a model with inputs ``specs`` (``()``: one float input, the
    split's ``x``)."""
    if not specs:
        return split.x
    return Feeds(tuple(specs), split.arrays(specs))


def rows(x: ModelInput, index: torch.Tensor | np.ndarray | slice) -> Batch:
    """The samples at ``index`` as one call's inputs: a tensor, or every input by name (the
    constants added with the batch)."""
    if isinstance(index, torch.Tensor):
        index = index.numpy()
    if not isinstance(x, Feeds):
        return torch.from_numpy(np.ascontiguousarray(x[index]))
    arrays = {k: v[index] for k, v in x.arrays.items()}
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feed(x.specs, arrays).items()}


def to_device(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, dict):
        return {k: v.to(device) for k, v in batch.items()}
    return batch.to(device)


def call(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The model's logits on one batch: ``model(x)`` for one input (a single named input
    too, whatever forward calls it), ``model(**batch)`` for several. A model that returns
    several outputs (a tuple, a dict, a Hugging Face ``ModelOutput``) is trained on its
    first tensor (a ``ModelOutput``'s ``logits``)."""
    if isinstance(batch, dict):
        out = model(*batch.values()) if len(batch) == 1 else model(**batch)
    else:
        out = model(batch)
    if isinstance(out, torch.Tensor):
        return out
    tensors = flat_outputs(out)
    if not tensors:
        raise TypeError(f"{type(model).__name__} returned a {type(out).__name__}, not tensors")
    return tensors[0][1]


def example(x: ModelInput, n: int = 1) -> Batch:
    """The first ``n`` samples as one call's inputs: what hooks and torch-pruning trace."""
    return rows(x, slice(0, n))


@torch.no_grad()
def logits_of(model: nn.Module, x: ModelInput, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    return torch.cat([call(model, rows(x, slice(i, i + batch_size)))
                      for i in range(0, len(x), batch_size)])


def predict(model: nn.Module, x: ModelInput) -> np.ndarray:
    return logits_of(model, x).argmax(1).numpy()


def accuracy(model: nn.Module, data: Split, specs: Sequence[InputSpec] = ()) -> float:
    return float((predict(model, model_input(data, specs)) == data.y).mean())


def predictor(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A PyTorch model as a function of NumPy inputs to NumPy logits (what the torch-free
    measurements in :mod:`edgekd.measure` take)."""
    return lambda x: logits_of(model, x).numpy()
