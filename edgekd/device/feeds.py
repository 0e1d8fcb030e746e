"""The inputs :mod:`edgekd.device.worker` feeds a model: one tensor per model input, drawn
from the model's own declaration or from the bench spec's ``inputs``, in the dtype the
runtime takes (a quantized input quantized with its own scale and zero point).

Needs only the standard library and NumPy. ``edgekd bench --remote`` copies this file beside
``worker.py`` and ``runtimes.py`` onto the device, so it must not import torch or the rest of
edgekd. :class:`WorkerError` is defined here, at the bottom of the worker's imports
(``feeds`` <- ``runtimes`` <- ``worker``), since every one of them raises it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class WorkerError(Exception):
    """A problem the user can fix; printed as one line by the caller."""


# Every model input is fed. Without ``spec["inputs"]`` each is drawn from the model's own
# declaration (the first may take ``input_shape``); with it, each input is described by name:
# {"name", "dtype", "shape"?, "value"?, "low"?, "high"?} (see edgekd.measure.bench.BenchSpec).


class ModelInput:
    """One input as the runtime declares it: its names, dims (None where symbolic), dtype,
    and (scale, zero point) where the runtime takes it quantized."""

    def __init__(self, name: str, dims: list[int | None], dtype: Any,
                 names: set[str] | None = None, quant: tuple[float, int] | None = None) -> None:
        self.name, self.dims, self.dtype = name, dims, np.dtype(dtype)
        self.names = {name} | (names or set())
        self.quant = quant if quant and quant[0] else None

    def describe(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.dims)
        return f"{self.name} ({self.dtype.name} [{dims}])"


def _shape(dims: list[Any], batch: int, name: str, given: list[int] | None,
           strict: bool = True) -> list[int]:
    """The shape of an input the spec does not describe (``given``: ``input_shape``)."""
    if given:
        return list(given)
    shape = []
    for i, d in enumerate(dims):
        if isinstance(d, int) and d > 0:
            shape.append(batch if i == 0 and strict else d)
        elif i == 0:
            shape.append(batch)
        elif strict:
            raise WorkerError(f"input {name!r} has a dynamic dimension {i}: "
                              "give the full shape with --shape")
        else:
            shape.append(1)
    return shape


def _tensor(rng: np.random.Generator, shape: list[int], dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.standard_normal(shape).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    return rng.integers(0, 2, shape).astype(dtype)


def _quantize(x: np.ndarray, scale: float, zero: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _drawn(inp: ModelInput, rng: np.random.Generator, shape: list[int]) -> np.ndarray:
    """An input the spec does not describe, in the runtime's dtype; a quantized input gets a
    float tensor quantized with its own scale and zero point."""
    if inp.quant:
        return _quantize(_tensor(rng, shape, np.dtype(np.float32)), *inp.quant, inp.dtype)
    return _tensor(rng, shape, inp.dtype)


def _spec_shape(inp: ModelInput, given: list[int] | None, label: str) -> list[int]:
    """The given shape, checked against the model's declaration; none given: the declared
    shape with its symbolic dims set to 1."""
    if given is None:
        return [1 if d is None or d < 0 else d for d in inp.dims]
    if len(given) != len(inp.dims) or any(
            d is not None and d >= 0 and d != g for d, g in zip(inp.dims, given, strict=True)):
        raise WorkerError(f"bench input {label} has shape {list(given)} but the model "
                          f"declares {inp.describe()}: give a shape of that rank whose fixed "
                          "dims match")
    return list(given)


def _kind(dtype: np.dtype) -> str:
    return "bool" if dtype == np.bool_ else "float" if np.issubdtype(dtype, np.floating) \
        else "int"


def _from_spec(inp: ModelInput, d: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """The tensor ``d`` describes, in the dtype the runtime takes for ``inp``."""
    label = repr(inp.name) if d["name"] in inp.names else f"{d['name']!r} (the model's {inp.name})"
    shape = _spec_shape(inp, d.get("shape"), label)
    want = np.dtype(d.get("dtype") or inp.dtype)
    if d.get("value") is not None:
        try:
            x = np.array(np.broadcast_to(np.asarray(d["value"], dtype=want), shape))
        except ValueError as exc:
            raise WorkerError(f"bench input {label}: its value does not fit shape "
                              f"{shape} ({exc})") from exc
    elif d.get("low") is not None and d.get("high") is not None:
        if _kind(want) == "float":
            x = rng.uniform(d["low"], d["high"], shape).astype(want)
        else:  # both ends included: token ids in [0, vocab - 1]
            x = rng.integers(int(d["low"]), int(d["high"]), shape, endpoint=True).astype(want)
    else:
        x = _tensor(rng, shape, want)
    have, takes = _kind(want), _kind(inp.dtype)
    if inp.quant and have == "float":
        return _quantize(x, *inp.quant, inp.dtype)
    if have == "float" and takes != "float":
        raise WorkerError(f"bench input {label} is {want.name} but the model takes "
                          f"{inp.describe()}: declare its dtype as {inp.dtype.name}")
    if have == "int" and takes == "int":
        info = np.iinfo(inp.dtype)
        if x.size and (x.min() < info.min or x.max() > info.max):
            raise WorkerError(f"bench input {label} has values outside {inp.dtype.name}, "
                              f"the model's dtype: keep low/high or value within "
                              f"{info.min}..{info.max}")
    return x.astype(inp.dtype)


def feeds(model: list[ModelInput], spec: dict[str, Any], rng: np.random.Generator,
          what: str, positional: bool = False) -> list[np.ndarray]:
    """One tensor per model input, in the model's order.

    ``positional``: the runtime's names are not the model's (LiteRT-Torch's args_0, args_1,
    ... in forward's order), so bench inputs given by other names are matched by position.
    """
    given = spec.get("inputs") or []
    if not given:
        shape = spec.get("input_shape")
        return [_drawn(m, rng, _shape(m.dims, spec["batch"], m.name,
                                      shape if i == 0 else None, strict=i == 0))
                for i, m in enumerate(model)]
    have = ", ".join(m.describe() for m in model)
    names = [d["name"] for d in given]
    by_name = {n: m for m in model for n in m.names}
    if positional and not all(n in by_name for n in names):
        if len(given) != len(model):
            raise WorkerError(f"{what} has {len(model)} inputs ({have}) but the bench inputs "
                              f"give {len(given)} ({', '.join(names)}): give one per input, "
                              "in forward's order")
        return [_from_spec(m, d, rng) for m, d in zip(model, given, strict=True)]
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise WorkerError(f"{what} has no input named {', '.join(map(repr, unknown))}; its "
                          f"inputs are {have}: fix the names in the bench inputs")
    described = {id(by_name[n]): d for n, d in zip(names, given, strict=True)}
    if len(described) < len(given):
        raise WorkerError(f"the bench inputs give one input of {what} twice (under "
                          f"{', '.join(names)}): give each once")
    missing = [m.describe() for m in model if id(m) not in described]
    if missing:
        raise WorkerError(f"{what} also takes {', '.join(missing)}, which the bench inputs "
                          "do not give: add each (a value, or a shape and dtype to draw)")
    return [_from_spec(m, described[id(m)], rng) for m in model]


def fed(model: list[ModelInput], xs: list[np.ndarray]) -> list[dict[str, Any]]:
    """What was fed, for the result's ``inputs``: each input's name, shape and dtype."""
    return [{"name": m.name, "shape": list(x.shape), "dtype": x.dtype.name}
            for m, x in zip(model, xs, strict=True)]
