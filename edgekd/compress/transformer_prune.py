"""Structured pruning of a ``transformers`` encoder: whole attention heads and FFN
(intermediate) channels are REMOVED, so Q/K/V, the attention output projection and the FFN's
up/down projections become smaller matrices and the exported model does less work in a dense
runtime (not zeros that a dense kernel multiplies anyway).

Written by hand, not with torch-pruning (which :mod:`.structured` uses for CNNs): traced on a
BERT of ``transformers`` 5 with ``num_heads`` and ``prune_num_heads``, torch-pruning put the
Q/K/V of *every* layer into one dependency group (they meet through the broadcast attention
mask), so each layer lost the same head numbers, chosen by their importance summed over all
layers. A head is four slices of four known ``nn.Linear`` layers, so cutting them by hand is
short, exact, and needs no trace of the model.

Importance is data-free and deterministic, so the same call on the same weights gives the same
shapes: a cached pruned model's weights load into the shell that re-pruning the unpruned model
makes (what :mod:`edgekd.train.stage_cache` needs), and no batches are needed.

- a head: the L1 norm of its rows of the value projection plus its columns of the output
  projection: the path by which the head writes into the residual stream. (Q and K only shape
  the softmax, whose effect magnitude does not measure. Michel et al. 2019's gradient score is
  better on a trained model but needs data and a backward pass; fine-tuning after pruning, as
  the build does for CNNs, recovers the rest.)
- an FFN channel: the L2 norm of its up-projection row times the L2 norm of its
  down-projection column: a bound on how much the channel can add to the output.

Every layer keeps the same number of heads and channels, so ``intermediate_size`` in the config
stays true. The head count cannot: BERT's configs derive the head size from
``hidden_size / num_attention_heads``, so ``num_attention_heads`` is left as it was and the
removed heads are listed in ``config.pruned_heads`` ({layer: [heads]}, transformers 4's
convention; transformers 5 does not re-prune from it on load). Supported: the BERT family
(BERT, RoBERTa, ELECTRA, XLM-R, MiniLM, ...) and DistilBERT.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from edgekd.errors import UsageError
from edgekd.train.students import encoder_layers, find_encoder


@dataclass(frozen=True)
class _Family:
    """Where a layer of one family keeps its projections (dotted paths inside the layer)."""

    attention: str  # the module holding the head count and head size
    q: str
    k: str
    v: str
    o: str
    up: str
    down: str
    heads_attr: str  # the attention module's head count
    ffn_key: str  # the config's FFN width


_FAMILIES = (
    _Family("attention.self", "attention.self.query", "attention.self.key",
            "attention.self.value", "attention.output.dense", "intermediate.dense",
            "output.dense", "num_attention_heads", "intermediate_size"),
    _Family("attention", "attention.q_lin", "attention.k_lin", "attention.v_lin",
            "attention.out_lin", "ffn.lin1", "ffn.lin2", "n_heads", "hidden_dim"),
)


def _family(layer: nn.Module) -> _Family:
    names = {name for name, _ in layer.named_modules()}
    for family in _FAMILIES:
        if {family.q, family.k, family.v, family.o, family.up, family.down} <= names:
            return family
    raise UsageError(f"{type(layer).__name__}: head and FFN pruning supports BERT-family and "
                     "DistilBERT layers only")


def _linear(layer: nn.Module, path: str) -> nn.Linear:
    module = layer.get_submodule(path)
    if not isinstance(module, nn.Linear):
        raise UsageError(f"{type(layer).__name__}.{path} is a {type(module).__name__}, not "
                         "nn.Linear: head and FFN pruning cannot cut it")
    return module


def _heads(layer: nn.Module, family: _Family) -> tuple[Any, int, int]:
    """(attention module, head count, head size) of ``layer``."""
    attention = layer.get_submodule(family.attention)
    return (attention, int(getattr(attention, family.heads_attr)),
            int(getattr(attention, "attention_head_size")))  # noqa: B009 (nn.Module typing)


def _ratio(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UsageError(f"{name}={value!r}: must be a fraction from 0 (keep all) to below 1 "
                         "(e.g. 0.5 removes half); at least one per layer is always kept")
    return float(value)


def _kept(count: int, ratio: float) -> int:
    return max(1, count - round(count * ratio))


def head_importance(layer: nn.Module) -> torch.Tensor:
    """One score per head of ``layer``: L1 of its value rows plus its output columns."""
    _, heads, size = _heads(layer, _family(layer))
    family = _family(layer)
    v = _linear(layer, family.v).weight.detach().abs()  # (heads*size, hidden)
    o = _linear(layer, family.o).weight.detach().abs()  # (hidden, heads*size)
    return (v.reshape(heads, size, -1).sum((1, 2))
            + o.reshape(o.shape[0], heads, size).sum((0, 2)))


def ffn_importance(layer: nn.Module) -> torch.Tensor:
    """One score per FFN channel: |up row|_2 * |down column|_2."""
    family = _family(layer)
    up = _linear(layer, family.up).weight.detach()  # (channels, hidden)
    down = _linear(layer, family.down).weight.detach()  # (hidden, channels)
    return up.norm(dim=1) * down.norm(dim=0)


def _replace(layer: nn.Module, path: str, new: nn.Module) -> None:
    owner, _, child = path.rpartition(".")
    setattr(layer.get_submodule(owner) if owner else layer, child, new)


def _cut(layer: nn.Module, path: str, index: torch.Tensor, dim: int) -> None:
    """Keep ``index`` of the linear layer at ``path``: its rows (dim 0) or columns (dim 1)."""
    from transformers.pytorch_utils import prune_linear_layer

    _replace(layer, path, prune_linear_layer(_linear(layer, path), index, dim=dim))  # type: ignore[arg-type]


def _prune_heads(layer: nn.Module, keep: int) -> list[int]:
    family = _family(layer)
    attention, heads, size = _heads(layer, family)
    if keep >= heads:
        return []
    kept = sorted(torch.topk(head_importance(layer), keep).indices.tolist())
    index = torch.tensor([h * size + i for h in kept for i in range(size)], dtype=torch.long)
    for path in (family.q, family.k, family.v):
        _cut(layer, path, index, 0)
    _cut(layer, family.o, index, 1)
    setattr(attention, family.heads_attr, keep)
    if hasattr(attention, "all_head_size"):
        attention.all_head_size = keep * size
    return [h for h in range(heads) if h not in kept]


def _prune_ffn(layer: nn.Module, keep: int) -> None:
    family = _family(layer)
    if keep >= _linear(layer, family.up).out_features:
        return
    index = torch.topk(ffn_importance(layer), keep).indices.sort().values
    _cut(layer, family.up, index, 0)
    _cut(layer, family.down, index, 1)


def prune_transformer(model: nn.Module, *, heads: float = 0.0, ffn: float = 0.0
                      ) -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``model`` (a ``transformers`` encoder, or a module wrapping one) with the
    fraction ``heads`` of each layer's attention heads and ``ffn`` of its FFN channels removed,
    the least important first (module docstring). ``model`` is left untouched.

    Returns the pruned model and what was done: heads and FFN channels kept per layer, the
    heads removed, parameters before and after. UsageError for a ratio outside [0, 1) or a
    model that is not a supported encoder."""
    heads, ffn = _ratio("heads", heads), _ratio("ffn", ffn)
    before = sum(p.numel() for p in model.parameters())
    pruned = copy.deepcopy(model)
    _, encoder = find_encoder(pruned)
    _, _, stack = encoder_layers(encoder)
    removed: dict[int, list[int]] = {}
    for number, layer in enumerate(stack):
        family = _family(layer)
        gone = _prune_heads(layer, _kept(_heads(layer, family)[1], heads))
        if gone:
            removed[number] = gone
        _prune_ffn(layer, _kept(_linear(layer, family.up).out_features, ffn))
    first = stack[0]
    family = _family(first)
    width = _linear(first, family.up).out_features
    setattr(encoder.config, family.ffn_key, width)
    if removed:
        old = dict(getattr(encoder.config, "pruned_heads", None) or {})
        encoder.config.pruned_heads = {**old, **removed}
    heads_kept = _heads(first, family)[1]
    return pruned, {"heads_ratio": heads, "ffn_ratio": ffn, "heads_kept": heads_kept,
                    "ffn_kept": width, "heads_removed": removed, "params_before": before,
                    "params_after": sum(p.numel() for p in pruned.parameters())}
