"""Cross-layer equalisation (CLE; Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction") of a PyTorch model before ONNX export.

BatchNorm is folded into the preceding conv/linear layer first (``torch.nn.utils.fusion``).
Then, for every pair of layers joined only by ReLU (positively homogeneous:
``relu(x / s) = relu(x) / s`` for ``s > 0``), output channel ``i`` of the first layer is
divided by ``s_i = sqrt(r1_i / r2_i)`` and input channel ``i`` of the second is multiplied by
it, where ``r`` are the channels' weight ranges; both then have range ``sqrt(r1_i * r2_i)``.
The function is unchanged; the per-channel weight ranges of depthwise convolutions, which
folded BatchNorm spreads over orders of magnitude, become even, so that one per-tensor
INT8 scale fits them. Pairs are found inside ``nn.Sequential`` containers (MobileNet-style
blocks included); ReLU6 breaks a pair (it is not positively homogeneous).

Hand-written because the library form, ``torch.ao.quantization._equalize``, is private and
rejects depthwise pairs (it takes a depthwise weight's input axis, of size 1, as the channels).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

Layer = nn.Conv2d | nn.Linear
_PASS_THROUGH = (nn.ReLU, nn.Identity, nn.Dropout)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with each BatchNorm that directly follows a conv or
    linear layer inside an ``nn.Sequential`` folded into that layer (replaced by Identity)."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq)
        for i in range(len(children) - 1):
            layer, bn = children[i], children[i + 1]
            if isinstance(layer, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(layer, bn), nn.Identity()
            elif isinstance(layer, nn.Linear) and isinstance(bn, nn.BatchNorm1d):
                seq[i], seq[i + 1] = fuse_linear_bn_eval(layer, bn), nn.Identity()
    return model


def _depthwise(layer: Layer) -> bool:
    return (isinstance(layer, nn.Conv2d) and layer.groups > 1
            and layer.groups == layer.in_channels == layer.out_channels)


def _joinable(first: Layer, second: nn.Module | None) -> bool:
    if isinstance(second, nn.Linear):
        return isinstance(first, nn.Linear)
    return (isinstance(first, nn.Conv2d) and isinstance(second, nn.Conv2d)
            and (second.groups == 1 or _depthwise(second)))


def pairs(model: nn.Module) -> list[tuple[Layer, Layer]]:
    """Consecutive conv/linear layers joined only by ReLU (or nothing), BatchNorm folded."""
    found = []
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        children = list(seq)
        for i, first in enumerate(children):
            if not isinstance(first, Layer):
                continue
            j = i + 1
            while j < len(children) and isinstance(children[j], _PASS_THROUGH):
                j += 1
            second = children[j] if j < len(children) else None
            if isinstance(second, Layer) and _joinable(first, second):
                n_in = second.weight.shape[0 if _depthwise(second) else 1]
                if first.weight.shape[0] == n_in:
                    found.append((first, second))
    return found


def out_ranges(layer: Layer) -> torch.Tensor:
    """max |w| per output channel."""
    return layer.weight.detach().abs().flatten(1).amax(1)


def in_ranges(layer: Layer) -> torch.Tensor:
    """max |w| per input channel (a depthwise conv's channel is its output channel)."""
    w = layer.weight.detach().abs()
    return out_ranges(layer) if _depthwise(layer) else w.transpose(0, 1).flatten(1).amax(1)


@torch.no_grad()
def _scale_pair(first: Layer, second: Layer) -> float:
    r1, r2 = out_ranges(first), in_ranges(second)
    # A pruned (all-zero) channel has no range to balance.
    s = torch.where((r1 > 0) & (r2 > 0), torch.sqrt(r1 / r2.clamp_min(1e-12)), torch.ones_like(r1))
    shape = (-1,) + (1,) * (first.weight.dim() - 1)
    first.weight.div_(s.view(shape))
    if first.bias is not None:
        first.bias.div_(s)
    if _depthwise(second):
        second.weight.mul_(s.view((-1,) + (1,) * (second.weight.dim() - 1)))
    else:
        second.weight.mul_(s.view((1, -1) + (1,) * (second.weight.dim() - 2)))
    return float((s.log().abs()).max())


def equalize(model: nn.Module, *, iterations: int = 50, tolerance: float = 1e-4
             ) -> nn.Module:
    """A copy of ``model`` with BatchNorm folded and every ReLU-joined layer pair equalised.

    A layer in the middle of a chain (expand -> depthwise -> project) belongs to two pairs,
    so the pairs are rescaled in turn until no scale moves by more than ``tolerance``
    (relative), as in the paper."""
    model = fold_batchnorm(model)
    found = pairs(model)
    for _ in range(iterations):
        if max((_scale_pair(a, b) for a, b in found), default=0.0) < tolerance:
            break
    return model
