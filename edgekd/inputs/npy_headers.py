"""A data file's ``.npy`` / ``.npz`` headers, read without reading its arrays: the dtype
(numbers, not objects or strings), the number of samples and labels, the sample shape of
each input, and whether the arrays fit in the file (truncation). The preflight
(:mod:`.preflight`) judges a data source from them before anything heavy is imported; the
loader (:mod:`.sources`) still checks the arrays it reads."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.paths import first_line
from edgekd.inputs.scope import Scope


@dataclass(frozen=True)
class Header:
    """What a data file's headers say, without reading its arrays."""

    shapes: dict[str, tuple[int, ...]]  # input arrays by name ("x" for a .npy)
    labels: int | None  # the number of labels, None without y


_DAMAGED = "it may be truncated or not written by numpy: save it again (np.savez / np.save)"


def read_headers(path: Path, spec: str, what: str, scope: Scope) -> Header:
    """The array shapes and label count of the ``.npy`` / ``.npz`` file ``path`` (``spec``:
    as the user wrote it), from its headers; refused in one line when they say it cannot
    be a data set (objects, strings, no samples, truncated, not a numpy file)."""
    try:
        with scope.open(path) as f:
            magic = f.read(6)
            f.seek(0)
            if magic.startswith(b"\x93NUMPY"):
                size = path.stat().st_size
                shapes = {"x": _npy(f, size, path, spec, what, "x")}
                labels = None
            elif magic.startswith(b"PK"):
                shapes, labels = _npz(f, path, spec, what)
            else:
                raise UsageError(f"{what}: {path} is not a numpy file (no .npy header and not "
                                 "a .npz zip; maybe a pickle or another format): save the "
                                 "arrays with np.savez(path, x=..., y=...) or np.save")
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{what}: cannot read {path} ({first_line(exc)}): {_DAMAGED}"
                         ) from exc
    first = shapes["x"] if "x" in shapes else next(iter(shapes.values()))
    if not first[0]:
        raise UsageError(f"{what}: {spec} holds no samples: add some")
    return Header(shapes, labels)


def _npy(f: IO[bytes], size: int, path: Path, spec: str, what: str, name: str
         ) -> tuple[int, ...]:
    """The shape of array ``name`` (``x``, ``y`` or a named input) from its ``.npy``
    header; ``size``: the bytes the header and the array must fit in."""
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # 3.0: a UTF-8 header, which numpy reads only through its private helper
        shape, _, dtype = getattr(np.lib.format, "_read_array_header")(f, version)  # noqa: B009
    if dtype.hasobject:
        raise UsageError(f"{what}: {path} holds Python objects, not numeric arrays: save "
                         "plain numeric arrays (object arrays would run code)")
    if dtype.kind not in "biuf":
        if name in ("x", "y"):
            raise UsageError(f"{what}: the {'inputs' if name == 'x' else 'labels'} in {spec} "
                             f"are {dtype}, not numbers: store real numeric arrays (int or "
                             "float)")
        raise UsageError(f"{what}: the input {name!r} in {spec} is {dtype}, not numbers: "
                         "store real numeric arrays (int, float or bool)")
    if not shape:
        raise UsageError(f"{what}: {name} in {path} is a single value, not one row per "
                         "sample: save an array whose first axis is the samples")
    if f.tell() + int(np.prod(shape)) * dtype.itemsize > size:
        raise UsageError(f"{what}: cannot read {path} ({name} {list(shape)} {dtype} does not "
                         f"fit in the file): {_DAMAGED}")
    return tuple(int(s) for s in shape)


def _npz(f: IO[bytes], path: Path, spec: str, what: str
         ) -> tuple[dict[str, tuple[int, ...]], int | None]:
    shapes: dict[str, tuple[int, ...]] = {}
    labels = None
    with zipfile.ZipFile(f) as zf:
        members = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        names = [i.filename[:-4] for i in members]
        if not [n for n in names if n != "y"]:
            raise UsageError(f"{what}: {path} has no input array (it has: "
                             f"{', '.join(names) or 'nothing'}): save inputs as x and labels "
                             "as y (np.savez(path, x=..., y=...)), or one array per model "
                             "input, named as the model names them")
        for info, name in zip(members, names, strict=True):
            with zf.open(info) as member:
                shape = _npy(member, info.file_size, path, spec, what, name)
            if name == "y":
                labels = shape[0]
            else:
                shapes[name] = shape
    first_name = "x" if "x" in shapes else next(iter(shapes))
    n = shapes[first_name][0]
    for name, shape in shapes.items():
        if shape[0] != n:
            raise UsageError(f"{what}: {path} has {n} samples in {first_name} but "
                             f"{shape[0]} in {name}: give every input one row per sample")
    if labels is not None and labels != n:
        raise UsageError(f"{what}: {path} has {n} inputs but {labels} labels: give one "
                         "label per input")
    return shapes, labels
