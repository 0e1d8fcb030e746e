"""Structured (channel) pruning: remove whole conv filters / linear units by magnitude, so the
model that is exported is physically smaller and does less work on dense kernels.

Why torch-pruning (``torch_pruning``, Fang et al., CVPR 2023 "DepGraph") and not hand-written
code: removing an output channel of one layer must remove the matching input channel of every
layer that consumes it, the matching BatchNorm entries, *both* sides of a residual add (the
channels of every tensor summed together are coupled), every channel of a depthwise conv (its
groups equal its channels) and, after ``Flatten``, the ``H*W`` input columns of the next
``Linear`` that each channel became. Its dependency graph traces the model once with an example
input and groups these couplings. Checked here (``tests/test_prune.py``) on
``edgekd.train.models.student_cnn`` (conv -> BN -> Flatten -> Linear: 4 channels x 64 columns),
``edgekd.train.models.mobilenet_v2`` (``InvertedResidual`` adds and depthwise groups) and
``student_convnet``: the pruned models run, keep their output shape and export to ONNX.

Importance is the L1 norm of each channel group (``MagnitudeImportance(p=1)``: Li et al. 2017,
"Pruning Filters for Efficient ConvNets"), summed over the coupled layers. The classifier (the
last ``Linear``) keeps its outputs.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch_pruning as tp
from torch import nn

M = TypeVar("M", bound=nn.Module)


def _classifier(model: nn.Module) -> list[nn.Module]:
    """The last Linear layer: its outputs are the classes and must stay."""
    linears: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def prune_channels(model: M, example: torch.Tensor, ratio: float) -> M:
    """A copy of ``model`` with ``ratio`` of the channels of every prunable layer removed
    (filters with the smallest L1 norm first), dependencies kept consistent.

    ``ratio`` is per layer (not global), so every layer keeps ``1 - ratio`` of its width and
    no layer is emptied; FLOPs of a conv between two pruned layers fall by ~``(1-ratio)^2``.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"channel ratio must be in [0, 1), got {ratio}")
    pruned = copy.deepcopy(model).eval()
    if ratio == 0:
        return pruned
    pruner = tp.pruner.BasePruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, ignored_layers=_classifier(pruned))
    pruner.step()
    return pruned


def macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass (torch-pruning's counter)."""
    count, _ = tp.utils.count_ops_and_params(model.eval(), example)
    return int(count)
