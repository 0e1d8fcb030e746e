"""What a step (:mod:`.steps`) is given, made into model inputs: a model as a module or an
ONNX file, and data (files, arrays, an edgekd Dataset, a torch Dataset or DataLoader) as
:class:`~edgekd.inputs.dataset.Feeds` named and shaped as that model takes them, checked
against its fixed dimensions, with the labels when the data has them; which samples
calibrate an INT8 model and which check it (:func:`calibration_split`). Imports no torch at
module level: ONNX models and data need none."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, Feeds, InputSpec

log = logging.getLogger(__name__)


def _samples(data: Any, what: str, split: str) -> tuple[Feeds | None, Any]:
    """(samples, raw): an edgekd Dataset's ``split`` as feeds, else the samples of a file
    or an in-memory object (:class:`~edgekd.inputs.sources.Samples`)."""
    if isinstance(data, Dataset):
        return data.feeds(getattr(data, split)), getattr(data, split).y
    if isinstance(data, str | os.PathLike):
        from edgekd.inputs.sources import load_samples

        path = Path(data).expanduser().absolute()
        if not path.exists():
            raise UsageError(f"{what} {path} does not exist: check the path")
        return None, load_samples(str(path), root=Path.cwd(), what=what, labeled=False)
    from edgekd.inputs.objects import samples_of

    return None, samples_of(data, what)


def data_feeds(data: Any, declared: Sequence[tuple[str, str, Sequence[Any] | None]],
               what: str, split: str, limit: int | None = None
               ) -> tuple[Feeds, np.ndarray | None]:
    """The model's inputs (``declared``: name, dtype, dims) from ``data``, shapes checked
    against the model's fixed dimensions; labels when the data has them."""
    feeds, raw = _samples(data, what, split)
    if feeds is not None:
        arrays = list(feeds.arrays.values())
        labels = raw
    else:
        named, labels = raw.named, raw.y
        if len(declared) == 1:
            _require_known_keys(named, declared[0][0], what)
            arrays = [named.get(declared[0][0], named.get("x", raw.x))]
        else:
            missing = [n for n, _, _ in declared if n not in named]
            if missing and what == "--example-shape":
                raise UsageError(f"--example-shape makes one float input and the model takes "
                                 f"{', '.join(n for n, _, _ in declared)}: give --example "
                                 "FILE.npz with one array per input name instead")
            if missing:
                raise UsageError(f"{what} has no input {missing[0]!r} (it has: "
                                 f"{', '.join(named) or 'one unnamed array'}): the model takes "
                                 f"{', '.join(n for n, _, _ in declared)}; give one array per "
                                 "input under its name (np.savez(path, name=...))")
            arrays = [named[n] for n, _, _ in declared]
    if len(arrays) != len(declared):
        raise UsageError(f"{what} holds {len(arrays)} inputs and the model takes "
                         f"{len(declared)}: give one array per model input")
    specs, out = [], {}
    for (name, dtype, dims), arr in zip(declared, arrays, strict=True):
        where = f"input {name!r}" if len(declared) > 1 else "input"
        want = list(dims[1:]) if dims else None
        got = list(arr.shape[1:])
        if want is not None and (len(want) != len(got) or any(
                isinstance(w, int) and w > 0 and w != g for w, g in zip(want, got, strict=True))):
            raise UsageError(f"{what}: samples of shape {got} but the model's {where} takes "
                             f"{['?' if not isinstance(w, int) or w <= 0 else w for w in want]}"
                             " per sample: give samples of that shape (first axis: samples)")
        _require_dtype(arr, dtype, what, where)
        arr = np.ascontiguousarray(arr[:limit].astype(dtype or _given(arr.dtype)))
        specs.append(InputSpec(name, str(arr.dtype), tuple(arr.shape[1:])))
        out[name] = arr
    labels = None if labels is None else np.asarray(labels)[:limit]
    return Feeds(tuple(specs), out), labels


def _require_known_keys(named: dict[str, np.ndarray], name: str, what: str) -> None:
    """A .npz for a one-input model: ``x`` (and ``y``), or the input's name; several arrays
    under other names (``images``, ``labels``) would be read as inputs and lose the labels."""
    if len(named) > 1 and "x" not in named and name not in named:
        raise UsageError(f"{what} has arrays {', '.join(named)} and none is read: edgekd reads "
                         f"x (samples) and y (labels, optional), or one array per model input "
                         f"named as the model names it ({name}): save them so "
                         "(np.savez(path, x=..., y=...))")


def _require_dtype(arr: np.ndarray, dtype: str, what: str, where: str) -> None:
    """Integer model inputs (token ids, indices) from integer data: float samples cast to
    int64 would be truncated silently."""
    if dtype and np.dtype(dtype).kind in "iub" and arr.dtype.kind == "f":
        raise UsageError(f"{what}: the samples for the model's {where} are {arr.dtype} but it "
                         f"takes {dtype} (e.g. token ids): save them as integers "
                         f"(x.astype(np.{dtype}))")


def require_varied(feeds: Feeds, what: str, why: str) -> None:
    """Calibration data that can set INT8 ranges: every float input finite and not one
    constant value (all zeros, a placeholder array); integer inputs (token ids, masks) may
    be constant."""
    for name, arr in feeds.arrays.items():
        which = f" input {name!r}" if len(feeds.arrays) > 1 else ""
        if arr.dtype.kind != "f" or arr.size == 0:
            continue
        bad = int((~np.isfinite(arr)).reshape(len(arr), -1).any(axis=1).sum())
        if bad:
            raise UsageError(f"{what}{which}: {bad} of {len(arr)} samples hold NaN or inf: "
                             "give finite, preprocessed samples")
        if float(arr.max()) == float(arr.min()):
            raise UsageError(f"{what}{which}: every value is {float(arr.min()):g}: a "
                             f"constant input {why}; give real, preprocessed samples")


def _given(dtype: np.dtype[Any]) -> str:
    """A model input's dtype from the data: token ids and masks (int32, int64, bool) as
    they are, anything else (pixels, samples) float32."""
    keep = dtype == np.bool_ or (dtype.kind in "iu" and dtype.itemsize >= 4)
    return str(dtype) if keep else "float32"


def renamed(feeds: Feeds, names: Sequence[str], what: str) -> Feeds:
    """The same samples under another model's input names (in order: an exported model
    keeps its reference's input order; LiteRT names them args_0, args_1, ...)."""
    if len(names) != len(feeds.specs):
        raise UsageError(f"{what} takes {len(names)} inputs and its reference "
                         f"{len(feeds.specs)}: give the reference it was made from")
    specs = tuple(replace(s, name=n) for s, n in zip(feeds.specs, names, strict=True))
    return Feeds(specs, {n: feeds.arrays[s.name] for s, n in zip(feeds.specs, names,
                                                                  strict=True)})


def load_module(model: Any, weights: str | os.PathLike[str] | None, what: str, *,
                untrained_ok: bool = False) -> Any:
    """A ``torch.nn.Module`` (copied, eval) from an object or a ``file.py:factory`` string.
    A factory without ``weights`` that builds different parameters on every call (a fresh,
    randomly initialised model) is refused, or with ``untrained_ok`` (an export for latency
    only) logged as a warning: comparing or calibrating such a model means nothing."""
    from torch import nn

    if isinstance(model, nn.Module):
        if weights is not None:
            raise UsageError(f"{what}: weights are for a factory string; load them into the "
                             "module yourself (model.load_state_dict)")
        return copy.deepcopy(model).cpu().eval()
    from edgekd.inputs.model_files import load_weights, make_model

    module = make_model(str(model), Path.cwd(), what)
    if weights is not None:
        load_weights(module, Path(weights).expanduser().absolute(), f"{what} weights")
    elif ":" in str(model) and _random_each_call(module, make_model(str(model), Path.cwd(),
                                                                    what)):
        said = (f"{what} {model} has no --weights (weights=): every call builds a new, "
                "randomly initialised model")
        if not untrained_ok:
            raise UsageError(f"{said}; give --weights FILE (its trained state dict or "
                             ".safetensors), or make the factory load them")
        log.warning("%s: the artifacts are of an untrained model (fine for latency, not for "
                    "accuracy); give --weights FILE to export the trained one", said)
    return module.eval()


def _random_each_call(first: Any, second: Any) -> bool:
    """Whether two models from the same factory differ in any parameter or buffer."""
    import torch

    a, b = first.state_dict(), second.state_dict()
    return a.keys() != b.keys() or any(
        a[k].shape != b[k].shape or not torch.equal(a[k], b[k]) for k in a)


def is_onnx(model: Any) -> bool:
    return (isinstance(model, str | os.PathLike) and str(model).endswith(".onnx")
            or type(model).__name__ == "ModelProto")


def onnx_file(model: Any, tmp: Path, what: str) -> Path:
    """An ONNX file or ``onnx.ModelProto`` as a checked file."""
    from edgekd.inputs.model_files import inspect_onnx

    if isinstance(model, str | os.PathLike):
        path = Path(model).expanduser().absolute()
        if not path.exists():
            raise UsageError(f"{what} {path} does not exist: check the path")
    else:
        import onnx

        path = tmp / "model.onnx"
        onnx.save_model(model, str(path))
    inspect_onnx(path, what)
    return path


def onnx_declared(path: Path) -> list[tuple[str, str, Sequence[Any] | None]]:
    from edgekd.inputs.io import onnx_io

    return [(d.name, d.dtype or "float32", d.dims) for d in onnx_io(path)[0]]


def module_feeds(module: Any, data: Any, limit: int | None, split: str, what: str
                 ) -> tuple[Feeds, np.ndarray | None]:
    """A module's inputs from ``data`` (forward's parameters; dtypes as the data has them)
    and the labels, if any."""
    from edgekd.inputs.calls import forward_parameters

    names = [p.name for p in forward_parameters(module) if p.default is p.empty] or ["input"]
    feeds, y = data_feeds(data, [(n, "", None) for n in names], what, split, limit)
    if len(names) == 1:  # one input: the exporters name it "input"
        feeds = renamed(feeds, ["input"], "the model")
    return feeds, y


MIN_HELD_OUT = 10  # fewer held-out samples than this check too little: check on calibration
MAX_CHECKED = 1000  # samples past the calibration ones checked at most


def calibration_split(given: Feeds, held: Feeds | None, samples: int
                       ) -> tuple[Feeds, Feeds, str]:
    """(calibration samples, samples to check on, what those are): an INT8 model checked on
    the samples that set its ranges passes whatever they are (all zeros: cosine 1.0)."""
    n = len(given)
    if held is not None:
        return given.head(samples), held, f"{len(held)} samples of --check-data"
    if n > samples:
        rest = _rows(given, samples, samples + MAX_CHECKED)
        if len(rest) >= MIN_HELD_OUT or len(rest) >= n // 5:
            return given.head(samples), rest, (f"{len(rest)} samples of --data past the "
                                               f"{samples} calibrated on")
    if n >= 2 * MIN_HELD_OUT:
        keep = n - max(MIN_HELD_OUT, n // 5)
        return (given.head(min(keep, samples)), _rows(given, keep, n),
                f"{n - keep} held-out samples of --data (calibrated on the other {keep})")
    return given.head(samples), given.head(samples), (
        f"{min(n, samples)} calibration samples themselves (too few to hold any out: give "
        f"--check-data, or {2 * MIN_HELD_OUT}+ samples)")


def _rows(feeds: Feeds, start: int, stop: int) -> Feeds:
    return Feeds(feeds.specs, {k: v[start:stop] for k, v in feeds.arrays.items()})
