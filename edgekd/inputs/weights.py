"""Weights for the user's models, loaded safely and strictly.

Safe by default: weights are read with ``safetensors`` or ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers; a full pickle (which runs code from
the file while it loads) needs ``trust_pickle``. Strict: every key of the model must be in the
file with the same shape and a float dtype, and nothing else may be, except two known harmless
differences: a key that names one of the model's non-persistent buffers (older versions of a
library saved them, e.g. ``position_ids`` in BERT embeddings) is dropped, and a parameter tied
to another one (shared embeddings) may be saved once. Every other mismatch is one line naming
the first keys and the fix. torch is imported on first use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import UsageError
from edgekd.inputs.paths import check_file, first_line, looks_like

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

# Checkpoint layouts of common trainers: the state dict sits under one of these keys.
_NESTED = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
# Key prefixes DDP / torch.compile / Lightning put in front of every parameter name.
_PREFIXES = ("module.", "_orig_mod.", "model.")
_SAVE = "save it with torch.save(model.state_dict(), ...) or as .safetensors"
_ARCH = "load the weights saved from this architecture (and its *_args)"
_ARGS = "check the factory's arguments (*_args)"


def _unsafe_globals(path: Path, exc: BaseException) -> list[str]:
    """The Python globals a pickle names (what it would import and call), read without
    running it; empty when the file is merely damaged."""
    import torch

    try:  # the documented API; it reads zip checkpoints only
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
    except Exception:  # noqa: BLE001 - legacy format or damaged: fall back to torch's message
        return sorted(set(re.findall(r"GLOBAL ([A-Za-z_][\w.]*)", str(exc))))


def _read_checkpoint(path: Path, what: str, trust_pickle: bool, pickle_fix: str | None = None
                     ) -> Any:
    import pickle

    head = check_file(path, what, "weights", ": save the weights again")
    hint = looks_like(head)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # noqa: BLE001 - SafetensorError for truncated/corrupt files
            found = f"it looks like {hint}" if hint and "safetensors" not in hint else \
                "it may be truncated; save it again"
            raise UsageError(f"{what}: {path} is not a readable safetensors file "
                             f"({first_line(exc)}): {found}") from exc
    import torch

    damaged: Exception
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        names = [] if trust_pickle else _unsafe_globals(path, exc)
        if names:
            raise UsageError(
                f"{what}: {path} is a full pickle, not plain weights (it names "
                f"{', '.join(names[:3])}; loading it could run code from the file): "
                + (pickle_fix or f"{_SAVE}, or pass --trust-pickle if you trust where it came "
                   "from")) from exc
        damaged = exc
    except Exception as exc:  # noqa: BLE001 - a damaged file fails anywhere in the unpickler
        damaged = exc
    found = f"it looks like {hint}" if hint and "safetensors" in hint else \
        "it may be truncated or corrupt, or not written by torch.save; save it again"
    raise UsageError(f"{what}: {path} is not a readable PyTorch checkpoint "
                     f"({type(damaged).__name__}): {found}") from damaged


def _state_dict(raw: Any, own: Mapping[str, Any], path: Path, what: str) -> dict[str, Any]:
    import torch
    from torch import nn

    if isinstance(raw, nn.Module):  # a whole pickled model (only with trust_pickle)
        raw = raw.state_dict()
    for _ in range(3):  # {"state_dict": {...}}, {"model": {...}}, ...
        if isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor)
                                                for v in raw.values()):
            inner = next((raw[k] for k in _NESTED if isinstance(raw.get(k), Mapping | nn.Module)),
                         None)
            if inner is None:
                break
            raw = inner.state_dict() if isinstance(inner, nn.Module) else inner
    if not isinstance(raw, Mapping) or not raw:
        empty = "an empty " if isinstance(raw, Mapping) else "a "
        raise UsageError(f"{what}: {path} holds {empty}{type(raw).__name__}, not a state dict "
                         f"of tensors: {_SAVE}")
    bad = next(((k, v) for k, v in raw.items()
                if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UsageError(f"{what}: {path} is not a state dict of tensors (its entry "
                         f"{bad[0]!r} is a {type(bad[1]).__name__}): {_SAVE}")
    state = dict(raw)
    for prefix in _PREFIXES:  # only when the model's own names lack it
        if all(k.startswith(prefix) for k in state) and not any(k in own for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _dtype(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def read_state(path: Path, what: str, own: Mapping[str, Any], *, trust_pickle: bool = False,
               pickle_fix: str | None = None) -> dict[str, Any]:
    """The state dict in ``path`` (a checkpoint's nesting and trainer prefixes undone).
    ``pickle_fix``: what to do about a full pickle, where --trust-pickle does not apply."""
    return _state_dict(_read_checkpoint(path, what, trust_pickle, pickle_fix), own, path, what)


def _harmless(model: nn.Module, own: Mapping[str, Any], state: dict[str, Any], path: Path
              ) -> dict[str, Any]:
    """``state`` without keys of the model's non-persistent buffers (which an older version
    saved), and with a tied parameter saved once filled in for its twin."""
    buffers = {name for name, _ in model.named_buffers()} - set(own)
    dropped = sorted(k for k in state if k in buffers)
    if dropped:
        log.debug("%s: ignoring %d non-persistent buffer(s) saved in the file: %s", path,
                  len(dropped), ", ".join(dropped[:5]))
    state = {k: v for k, v in state.items() if k not in buffers}
    storage: dict[tuple[int, int, tuple[int, ...]], str] = {}
    for key, value in own.items():
        if key in state and value.device.type != "meta" and value.numel():
            storage.setdefault(_where(value), key)
    for key, value in own.items():  # tied: the same tensor as a key that is in the file
        twin = storage.get(_where(value)) if value.device.type != "meta" and value.numel() \
            else None
        if key not in state and twin is not None:
            state[key] = state[twin]
    return state


def _where(t: Any) -> tuple[int, int, tuple[int, ...]]:
    try:
        return t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape)
    except (RuntimeError, ValueError):  # an uninitialized (lazy) parameter has no storage
        return id(t), 0, ()


def fit_state(model: nn.Module, state: dict[str, Any], path: Path, what: str, *,
              arch: str = _ARCH, args: str = _ARGS) -> None:
    """Load ``state`` (read from ``path``) into ``model`` strictly; every mismatch is named.
    ``arch`` / ``args``: the fix for missing or unexpected keys / a shape that differs."""
    from torch.nn.parameter import UninitializedParameter

    own = model.state_dict()
    state = _harmless(model, own, state, path)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = [f"{len(keys)} {label} (first: {keys[0]})"
             for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if parts:
        raise UsageError(f"{what}: {path} does not fit the model: {', '.join(parts)}: {arch}")
    for key, mine in own.items():  # in the model's order: the first layer that differs
        value = state[key]
        if not isinstance(mine, UninitializedParameter) and mine.shape != value.shape:
            raise UsageError(f"{what}: {path} does not fit the model: {key} has shape "
                             f"{list(value.shape)} in the file but {list(mine.shape)} in "
                             f"the model: {args}")
        # load_state_dict casts silently: int8 (quantized) weights would become float
        # parameters holding the raw integers, a model at chance that builds green.
        if mine.dtype.is_floating_point and not (value.dtype.is_floating_point
                                                 or value.dtype.is_complex):
            raise UsageError(f"{what}: {path} holds {key} as {_dtype(value.dtype)} but the "
                             f"model's parameter is {_dtype(mine.dtype)}: save the float "
                             "weights (not quantized or integer ones) of this model")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"{what}: {path} does not fit the model ({first_line(exc)}): "
                         f"{arch}") from exc


def load_weights(model: nn.Module, path: Path, what: str, *, trust_pickle: bool = False
                 ) -> None:
    """Load ``path`` into ``model`` strictly; every mismatch is named."""
    own = model.state_dict()
    fit_state(model, read_state(path, what, own, trust_pickle=trust_pickle), path, what)
