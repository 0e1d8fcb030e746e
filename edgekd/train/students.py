"""Students made from a teacher: a ``transformers`` encoder with fewer layers (DistilBERT's
initialisation: the teacher's layer weights copied) or a narrower config (random init).

The teacher may be a ``transformers`` ``PreTrainedModel`` or a user's ``nn.Module`` that wraps
one (``forward(input_ids, attention_mask) -> logits``): the wrapper is deep-copied and the
model inside it replaced, so the student keeps the user's forward and any layers around it.

Which layers ``every=k`` keeps: the last of each block of ``k`` (0-based ``k-1, 2k-1, ...``),
so the teacher's top layer, whose output its head was trained on, is always kept: every=2 of a
4-layer teacher keeps layers 1 and 3. DistilBERT (Sanh et al. 2019) took one layer in two the
same way; ``layers=[...]`` chooses them by hand.

torch and ``transformers`` are imported only inside functions: importing this module stays
cheap for builds without a transformer.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from edgekd.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

# Config fields that change the shape of a weight: a student with one of them overridden
# cannot take the teacher's weights and starts from random init.
_WIDTH_KEYS = ("hidden_size", "intermediate_size", "num_attention_heads", "dim", "hidden_dim",
               "n_heads", "embedding_size")
# The names transformers' configs use for the depth, width and head count (BERT family; DistilBERT).
_DEPTH_KEYS = ("num_hidden_layers", "n_layers")
_HIDDEN_KEYS = ("hidden_size", "dim")
_HEAD_KEYS = ("num_attention_heads", "n_heads")


def find_encoder(model: nn.Module) -> tuple[str, Any]:
    """The ``transformers`` ``PreTrainedModel`` in ``model`` (itself, or the first one among
    its submodules) and its qualified name ("" when ``model`` is one). UsageError when none."""
    from transformers import PreTrainedModel

    for name, module in model.named_modules():
        if isinstance(module, PreTrainedModel):
            return name, module
    raise UsageError(f"{type(model).__name__} holds no transformers model (PreTrainedModel): "
                     "students from teachers and head pruning need a transformers encoder "
                     "such as BertModel or DistilBertModel inside the model")


def config_value(config: Any, keys: Sequence[str]) -> int:
    """The first of ``keys`` the config has (its field names differ between families)."""
    for key in keys:
        if hasattr(config, key):
            return int(getattr(config, key))
    raise UsageError(f"{type(config).__name__} has none of the fields {', '.join(keys)}: "
                     "only BERT-family and DistilBERT encoders are supported")


def encoder_layers(encoder: nn.Module) -> tuple[nn.Module, str, Any]:
    """(parent module, attribute name, ModuleList) of the encoder's stack of layers: the one
    ``nn.ModuleList`` whose length is the config's number of layers."""
    from torch import nn

    depth = config_value(encoder.config, _DEPTH_KEYS)  # type: ignore[union-attr]
    for parent in encoder.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.ModuleList) and len(child) == depth:
                return parent, name, child
    raise UsageError(f"{type(encoder).__name__}: no list of {depth} layers found; only "
                     "BERT-family and DistilBERT encoders are supported")


def _chosen_layers(depth: int, every: int | None, layers: Sequence[int] | None) -> list[int]:
    if every is not None and layers is not None:
        raise UsageError("give either every=k or layers=[...], not both")
    if every is not None:
        if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= depth:
            raise UsageError(f"every={every!r}: must be a whole number from 1 to the teacher's "
                             f"{depth} layers (every=k keeps layers k-1, 2k-1, ...)")
        return list(range(every - 1, depth, every))
    chosen = list(layers or [])
    if (not chosen or any(isinstance(i, bool) or not isinstance(i, int) for i in chosen)
            or any(not 0 <= i < depth for i in chosen) or chosen != sorted(set(chosen))):
        raise UsageError(f"layers={list(layers or [])!r}: must be increasing, distinct layer "
                         f"numbers from 0 to {depth - 1} (the teacher has {depth} layers)")
    return chosen


def _check_overrides(config: Any, overrides: dict[str, Any]) -> None:
    unknown = sorted(k for k in overrides if not hasattr(config, k))
    if unknown:
        raise UsageError(f"student config: {', '.join(unknown)} not a field of "
                         f"{type(config).__name__}; use its own field names such as "
                         f"hidden_size, intermediate_size, num_attention_heads")
    merged = {**config.to_dict(), **overrides}
    hidden = next((merged[k] for k in _HIDDEN_KEYS if k in merged), None)
    heads = next((merged[k] for k in _HEAD_KEYS if k in merged), None)
    for key, value in overrides.items():
        if key in _WIDTH_KEYS + _DEPTH_KEYS and (isinstance(value, bool)
                                                 or not isinstance(value, int) or value < 1):
            raise UsageError(f"student config: {key}={value!r} must be a whole number >= 1")
    if hidden is not None and heads is not None and hidden % heads:
        raise UsageError(f"student config: hidden size {hidden} is not divisible by "
                         f"{heads} attention heads; choose a head count that divides it")


def student_from_teacher(teacher: nn.Module, *, every: int | None = None,
                         layers: Sequence[int] | None = None, seed: int = 0,
                         **overrides: Any) -> nn.Module:
    """A student made from ``teacher`` (left untouched).

    ``every=k`` or ``layers=[...]``: the teacher's embeddings, chosen layers and head, weight
    for weight (config ``num_hidden_layers`` updated). ``overrides`` (config fields such as
    ``hidden_size``, ``intermediate_size``, ``num_attention_heads``, ``num_hidden_layers``):
    the teacher's config with them applied; if one changes a weight's shape the student is
    randomly initialised (seeded with ``seed``, so the same call gives the same student),
    otherwise the teacher's weights are kept. Overrides that change the shape cannot be
    combined with ``every``/``layers``. UsageError for anything that cannot make a student.
    """
    import torch

    _, encoder = find_encoder(teacher)
    config = encoder.config
    _check_overrides(config, overrides)
    pick = every is not None or layers is not None
    widths = sorted(k for k in overrides if k in _WIDTH_KEYS
                    and overrides[k] != getattr(config, k))
    if pick and (widths or any(k in overrides for k in _DEPTH_KEYS)):
        raise UsageError(f"every/layers copy the teacher's layers, which needs its width and "
                         f"sets the depth: drop {', '.join(widths or _DEPTH_KEYS)} or make a "
                         "randomly initialised student with config overrides only")
    if not pick and not overrides:
        raise UsageError("student_from_teacher needs every=k, layers=[...] or config "
                         "overrides such as hidden_size=...")
    student = copy.deepcopy(teacher)
    name, inner = find_encoder(student)
    for key, value in overrides.items():
        setattr(inner.config, key, value)
    if pick:
        parent, attr, stack = encoder_layers(inner)
        keep = _chosen_layers(len(stack), every, layers)
        setattr(parent, attr, type(stack)(stack[i] for i in keep))
        _renumber(getattr(parent, attr))
        depth_key = next(k for k in _DEPTH_KEYS if hasattr(inner.config, k))
        setattr(inner.config, depth_key, len(keep))
        return student
    if widths or any(k in overrides for k in _DEPTH_KEYS):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = type(inner)(copy.deepcopy(inner.config))
        fresh.train(inner.training)
        if not name:
            return fresh
        owner, _, child = name.rpartition(".")
        setattr(student.get_submodule(owner) if owner else student, child, fresh)
    return student


def _renumber(stack: Any) -> None:
    """Layers remember their position (``layer_idx``, used by caches): set it to the new one."""
    for index, layer in enumerate(stack):
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = index
