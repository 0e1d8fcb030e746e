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
"Pruning Filters for Efficient ConvNets"), summed over the coupled layers. The output layer (the
last conv or linear that runs: a classifier's classes) keeps its outputs; attention and
recurrent layers are left whole (:func:`kept_whole` says which layers kept every channel and
why). A ``transformers`` encoder loses whole attention heads and FFN channels instead
(:mod:`edgekd.compress.transformer_prune`). Checked on 1-D conv nets too
(``tests/test_prune_layers.py``).
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import torch
import torch_pruning as tp
from torch import nn

from edgekd.errors import BuildError
from edgekd.train.inference import Batch, call
from edgekd.train.transformer_kd import find_encoder

M = TypeVar("M", bound=nn.Module)


# Layers whose channels are never removed, and why (returned by :func:`kept_whole`).
_WHY_OUTPUT = "produces the model's output: its channels/units are the outputs"
_WHY_ATTENTION = ("nn.MultiheadAttention: removing channels would need its head count, which "
                  "torch-pruning is not given here")
_WHY_BLOCK_ATTENTION = ("attention block of a transformer: its query/key/value widths are tied "
                        "to its head count and head size, which torch-pruning is not given "
                        "here (its feed-forward channels are pruned)")
_WHY_RNN = "recurrent layer: its gates' channels are coupled in ways torch-pruning cannot follow"
_WHY_COUPLED = ("no channel could be removed: its channels are tied to the model's input or "
                "output, to a reshape, or to an op torch-pruning cannot trace, or it is too "
                "narrow for the ratio")
_PRUNABLE = (nn.modules.conv._ConvNd, nn.Linear)


def _output_layers(model: nn.Module, example: Batch) -> list[nn.Module]:
    """The last conv or linear layer that runs: its outputs are the model's (the classes of a
    classifier, or the maps of a fully convolutional head) and must stay."""
    ran: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, _i, _o: ran.append(m))
             for m in model.modules() if isinstance(m, _PRUNABLE)]
    try:
        with torch.no_grad():
            call(model.eval(), example)
    finally:
        for hook in hooks:
            hook.remove()
    return ran[-1:]


def _attention_block(m: nn.Module) -> bool:
    """A transformer's attention block written as a module of its own (a Hugging Face
    ``BertAttention``, ``BertSelfAttention``...): its linear layers reshape their outputs
    into heads of a fixed size."""
    return type(m).__name__.endswith(("Attention", "SelfAttention")) and any(
        isinstance(c, nn.Linear) for c in m.modules())


def _parents(model: nn.Module, m: nn.Module) -> list[nn.Module]:
    """The modules that contain ``m`` (itself not included)."""
    names = {id(v): k for k, v in model.named_modules()}
    name = names.get(id(m), "")
    return [v for k, v in model.named_modules() if k and name.startswith(k + ".")]


def _kept(model: nn.Module, example: Batch) -> dict[nn.Module, str]:
    """The layers torch-pruning is told to leave whole, with the reason."""
    kept = {m: _WHY_OUTPUT for m in _output_layers(model, example)}
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            kept[m] = _WHY_ATTENTION
        elif _attention_block(m) and not any(_attention_block(p) for p in _parents(model, m)):
            kept[m] = _WHY_BLOCK_ATTENTION
        elif isinstance(m, nn.RNNBase):
            kept[m] = _WHY_RNN
    return kept


def _out(m: nn.Module) -> int:
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels
    return m.out_features if isinstance(m, nn.Linear) else 0


def kept_whole(dense: nn.Module, pruned: nn.Module, example: Batch
               ) -> list[dict[str, Any]]:
    """The layers of ``pruned`` that kept every channel of ``dense``, with the reason: the
    output layer, layers torch-pruning is not given, and convs/linears whose channels it
    found no way to remove."""
    # A transformers encoder loses heads and FFN channels (transformer_prune), not through
    # torch-pruning: only what truly kept its width is listed, for the reason it did.
    kept = {} if find_encoder(dense) is not None else _kept(dense, example)
    told = {name: kept[m] for name, m in dense.named_modules() if m in kept}
    widths = {name: _out(m) for name, m in dense.named_modules() if isinstance(m, _PRUNABLE)}
    rows = []
    for name, m in pruned.named_modules():
        why = told.get(name) or next(  # a layer inside an attention or recurrent layer
            (told[k] for k in told if k and name.startswith(k + ".") and told[k] != _WHY_OUTPUT),
            None)
        if why is None and name in widths and _out(m) == widths[name]:
            why = _WHY_COUPLED
        if why is not None:
            rows.append({"layer": name, "type": type(m).__name__, "reason": why})
    return rows


def prune_channels(model: M, example: Batch, ratio: float) -> M:
    """A copy of ``model`` with ``ratio`` of the channels of every prunable layer removed
    (filters with the smallest L1 norm first), dependencies kept consistent.

    ``ratio`` is per layer (not global), so every layer keeps ``1 - ratio`` of its width and
    no layer is emptied; FLOPs of a conv between two pruned layers fall by ~``(1-ratio)^2``.
    Works on 1-, 2- and 3-D convs (grouped, depthwise, transposed), Linear and residual
    (non-Sequential) models; :func:`kept_whole` lists what it leaves whole.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"channel ratio must be in [0, 1), got {ratio}")
    if ratio and find_encoder(model) is not None:
        # A transformers encoder: whole attention heads and FFN channels go, by weight
        # magnitude (compress/transformer_prune.py, which says why not torch-pruning's trace).
        from edgekd.compress.transformer_prune import prune_transformer

        pruned_encoder = prune_transformer(model, heads=ratio, ffn=ratio)[0]
        return pruned_encoder.eval()  # type: ignore[return-value]
    pruned = copy.deepcopy(model).eval()
    if ratio == 0:
        return pruned
    with torch.no_grad():
        expected = tuple(call(pruned, example).shape)
    pruner = tp.pruner.BasePruner(
        pruned, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio, ignored_layers=list(_kept(pruned, example)))
    pruner.step()
    try:
        with torch.no_grad():
            got: tuple[int, ...] | str = tuple(call(pruned.eval(), example).shape)
    except Exception as exc:  # a coupling torch-pruning missed: the model no longer runs
        got = f"{type(exc).__name__}: {exc}"
    if got != expected:
        raise BuildError(f"structured pruning broke the model (output {expected} became "
                         f"{got}): set prune.method = \"unstructured\"")
    return pruned


def macs(model: nn.Module, example: Batch) -> int:
    """Multiply-accumulates of one forward pass (torch-pruning's counter)."""
    count, _ = tp.utils.count_ops_and_params(model.eval(), example)
    return int(count)
