"""Magnitude pruning with ``torch.nn.utils.prune``: global L1 over conv and linear weights.

The masks stay attached while the pruned model is fine-tuned (so pruned weights stay
zero), then are baked into the weights with ``prune.remove``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def apply_masks(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights across all layers."""
    if sparsity > 0:
        prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured,
                                  amount=sparsity)
    return model


def bake(model: nn.Module) -> nn.Module:
    """Make pruning permanent: drop the masks, keep the zeroed weights."""
    for module, name in prunable(model):
        if prune.is_pruned(module):
            prune.remove(module, name)
    return model


def weight_sparsity(model: nn.Module) -> float:
    weights: list[torch.Tensor] = [m.weight for m, _ in prunable(model)]  # type: ignore[misc]
    total = sum(int(w.numel()) for w in weights)
    zeros = sum(int(torch.count_nonzero(w == 0)) for w in weights)
    return zeros / total if total else 0.0
