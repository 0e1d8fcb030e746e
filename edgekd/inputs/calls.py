"""Calling a user's PyTorch model the way it is written: several inputs by name (float,
int64 token ids, bool masks; fixed and state inputs fed alongside), and one output or several
(a tuple, a list, a dict or a Hugging Face ``ModelOutput``).

The deploy steps compare every output, so they need them as a flat list in a fixed order
with names; this is the one place that flattens them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.inputs.dataset import Feeds, InputSpec, OutputSpec, join_batches


def forward_parameters(model: nn.Module) -> list[inspect.Parameter]:
    """forward's named parameters in order (no ``self``, ``*args`` or ``**kwargs``)."""
    try:
        signature = inspect.signature(model.forward)
    except (TypeError, ValueError):
        return []
    return [p for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def flat_outputs(result: Any) -> list[tuple[str, torch.Tensor]]:
    """Every tensor ``forward`` returned, named: ``logits`` / ``output`` for one tensor, the
    keys of a dict (``ModelOutput`` too), ``output0``, ``output1``, ... for a sequence."""
    if isinstance(result, torch.Tensor):
        return [("output", result)]
    if isinstance(result, Mapping):
        return [(str(k), v) for k, v in result.items() if isinstance(v, torch.Tensor)]
    if isinstance(result, tuple | list):
        return [(f"output{i}", v) for i, v in enumerate(result) if isinstance(v, torch.Tensor)]
    return []


def tensors(feed: Mapping[str, np.ndarray], specs: Sequence[InputSpec]) -> tuple[Any, ...]:
    """One call's inputs as tensors in forward's order (a 0-d value stays 0-d)."""
    return tuple(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in specs)


def by_name(model: nn.Module, names: Sequence[str]) -> bool:
    """Whether ``model`` takes these inputs by name: several inputs, each a parameter of
    forward that a keyword reaches (or forward takes ``**kwargs``). Positional order is not
    enough: for ``forward(input_ids, token_type_ids=None, attention_mask=None)`` a mask fed
    second lands in ``token_type_ids``. One input stays positional (the data's ``input``
    is whatever forward calls it)."""
    if len(names) < 2:
        return False
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return all(params[n].kind in keyword if n in params else var_kw for n in names)


def call_model(model: nn.Module, feed: Mapping[str, np.ndarray],
               specs: Sequence[InputSpec]) -> Any:
    """``model`` on one call's inputs: ``model(**feed)`` when it takes them by name
    (:func:`by_name`), else in forward's order."""
    args = tensors(feed, specs)
    names = [s.name for s in specs]
    if by_name(model, names):
        return model(**dict(zip(names, args, strict=True)))
    return model(*args)


@torch.no_grad()
def model_outputs(model: nn.Module, feeds: Feeds, batch_size: int = 256,
                  outputs: Sequence[OutputSpec] | None = None) -> list[np.ndarray]:
    """Every output of ``model`` (eval) on every sample of ``feeds``, in batches, each
    batch-first (``outputs`` say where an output's batch axis is)."""
    model.eval()
    parts: list[list[np.ndarray]] = []
    for i in range(0, len(feeds), batch_size):
        out = flat_outputs(call_model(model, feeds.batch(i, i + batch_size), feeds.specs))
        parts.append([t.detach().float().numpy() if t.is_floating_point()
                      else t.detach().numpy() for _, t in out])
    return join_batches(parts, outputs)


def torch_call(model: nn.Module, specs: Sequence[InputSpec]
               ) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """One call of ``model`` (eval) on every input by name -> every output, as NumPy."""
    model.eval()

    @torch.no_grad()
    def call(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [t.detach().float().numpy() if t.is_floating_point() else t.detach().numpy()
                for _, t in flat_outputs(call_model(model, feed, specs))]
    return call


def first_output(model: nn.Module, specs: Sequence[InputSpec], batch_size: int = 512
                 ) -> Callable[[Mapping[str, np.ndarray]], np.ndarray]:
    """The data inputs by name -> the model's first output (fixed and state inputs of
    ``specs`` fed alongside): what the robustness measurements take."""

    def predict(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        return model_outputs(model, Feeds(tuple(specs), arrays), batch_size)[0]
    return predict
