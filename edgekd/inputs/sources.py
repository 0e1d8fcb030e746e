"""The user's data: a folder of images in class sub-folders, ``.npz`` / ``.npy`` arrays, or a
Python factory returning a torch Dataset, read into numpy arrays with one-line errors.

A data source is one string from the project file:

- ``train/`` with class sub-folders (``train/cat/*.png``): labels from the sorted folder names;
- ``calib/`` with images and no sub-folders: unlabeled;
- ``data.npz`` with array ``x`` and optional ``y``; ``data.npy``: inputs only;
- ``path/to/file.py:function`` or ``package.module:function`` returning a map-style Dataset
  (or any sequence) whose items are ``(x, y)`` or ``x``.

Everything ends up in one in-memory float32 array per split: right for edge-sized data sets
(the samples that train a small student, calibrate it and verify it), not for ImageNet.
Images are read with Pillow; arrays with ``numpy.load(allow_pickle=False)``, so a data file
cannot run code. Relative paths start at the project folder and may not leave it, and neither
may anything read below them: every class folder and file is resolved (symlinks followed) and
refused if it lands outside the project folder, or outside the data folder itself when that
was written as an absolute path elsewhere. Only regular files are read: a named pipe, socket
or device is refused (reading one could block forever), never skipped.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.cache import digest_of
from edgekd.errors import UsageError
from edgekd.inputs.model_files import load_factory, resolve_path
from edgekd.inputs.scope import IMAGE_SUFFIXES, Scope, listing

COLORS = ("auto", "gray", "rgb")
_GRAY_MODES = ("L", "1", "I", "F", "I;16")


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None  # (height, width) to resize to; None: keep
    color: str = "auto"  # gray | rgb | auto (gray when every image is single-channel)

    def __post_init__(self) -> None:
        if self.color not in COLORS:
            raise ValueError(f"data.color must be one of {', '.join(COLORS)}, got {self.color!r}")
        if self.size is not None and not (
                len(self.size) == 2 and all(isinstance(v, int) and v > 0 for v in self.size)):
            raise ValueError(f"data.image_size must be [height, width] in whole pixels, got "
                             f"{self.size!r}")


@dataclass(frozen=True)
class Samples:
    x: np.ndarray  # float32 [N, ...], raw values (images: 0..255, [N, C, H, W])
    y: np.ndarray | None  # int64 labels, float32 targets, or None
    classes: tuple[str, ...] | None  # image folders: label i is classes[i]
    source: str
    kind: str  # images | arrays | dataset
    # Named arrays (a .npz's arrays other than y, a Dataset's dict items), dtype as stored:
    # a model with several inputs takes them by name; integer token ids stay integers.
    named: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)

    def fingerprint(self) -> str:
        """The content digest of ``x`` and ``y`` (dtype, shape and values), as
        :func:`~edgekd.inputs.dataset.split_fingerprint` computes it for a split."""
        return digest_of(self.x, self.y)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _read_image(path: Path, options: ImageOptions, mode: str, what: str,
                scope: Scope) -> np.ndarray:
    from PIL import Image

    try:
        with scope.open(path) as f, Image.open(f) as opened:
            opened.load()
            im = opened.convert(mode)
            if options.size is not None:
                im = im.resize((options.size[1], options.size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    # UnidentifiedImageError and truncated files are OSError; DecompressionBombError is not.
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UsageError(f"{what}: cannot read image {path} ({_first_line(exc)}): replace or "
                         "remove the file") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _mode(files: list[Path], color: str, scope: Scope) -> str:
    if color != "auto":
        return "L" if color == "gray" else "RGB"
    from PIL import Image

    for path in files:
        try:
            with scope.open(path) as f, Image.open(f) as im:  # reads the header only
                if im.mode not in _GRAY_MODES:
                    return "RGB"
        except Exception:  # noqa: BLE001 - reported with its name when the file is read
            continue
    return "L"


def _images(folder: Path, spec: str, what: str, options: ImageOptions, labeled: bool,
            max_samples: int | None, scope: Scope) -> Samples:
    subdirs, top = listing(folder, scope, folders=True)
    if subdirs:
        classes: tuple[str, ...] | None = tuple(p.name for p in subdirs)
        per_class = [listing(d, scope, folders=False)[1] for d in subdirs]
        files = [(f, i) for i, fs in enumerate(per_class) for f in fs]
        empty = next((d for d, fs in zip(subdirs, per_class, strict=True) if not fs), None)
        if empty is not None:
            raise UsageError(f"{what}: class folder {empty} has no images: add images or "
                             "remove the folder")
    else:
        classes, files = None, [(f, -1) for f in top]
        if not files:
            raise UsageError(f"{what}: no images in {folder} (looked for "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))}): add images or fix the path")
        if labeled:
            raise UsageError(f"{what}: {folder} has no class sub-folders: a labeled set needs "
                             "one sub-folder of images per class (e.g. train/cat, train/dog)")
    files = files[:max_samples] if max_samples else files
    mode = _mode([f for f, _ in files], options.color, scope)
    arrays = [_read_image(f, options, mode, what, scope) for f, _ in files]
    first = arrays[0].shape
    other = next((i for i, a in enumerate(arrays) if a.shape != first), None)
    if other is not None:
        a, b = (files[0][0].relative_to(folder), files[other][0].relative_to(folder))
        raise UsageError(f"{what}: images in {folder} differ in size ({a} is {first[1]}x"
                         f"{first[2]}, {b} is {arrays[other].shape[1]}x{arrays[other].shape[2]}, "
                         "height x width): set data.image_size = [height, width] to resize them")
    y = np.array([label for _, label in files], np.int64) if classes else None
    return Samples(np.stack(arrays), y, classes, spec, "images")


def _load_arrays(path: Path, what: str, scope: Scope
                 ) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """``x`` (or the first named array), ``y`` and every other array by name from a .npz;
    the one array of a .npy (inputs only)."""
    damaged = "it may be truncated or not written by numpy: save it again (np.savez / np.save)"
    try:
        with scope.open(path) as f:
            magic = f.read(6)
            # np.load falls back to pickle for anything that is neither .npy nor zip; name
            # that case plainly instead of numpy's hint to unpickle the file.
            if not (magic.startswith(b"\x93NUMPY") or magic.startswith(b"PK")):
                raise UsageError(f"{what}: {path} is not a numpy file (no .npy header and not "
                                 "a .npz zip; maybe a pickle or another format): save the "
                                 "arrays with np.savez(path, x=..., y=...) or np.save")
            f.seek(0)
            loaded = np.load(f, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                return loaded, None, {}
            with loaded as npz:
                inputs = [n for n in npz.files if n != "y"]
                if not inputs:
                    raise UsageError(f"{what}: {path} has no input array (it has: "
                                     f"{', '.join(npz.files) or 'nothing'}): save inputs as x "
                                     "and labels as y (np.savez(path, x=..., y=...)), or one "
                                     "array per model input, named as the model names them")
                named = {n: npz[n] for n in inputs}
                first = named["x"] if "x" in named else named[inputs[0]]
                return first, (npz["y"] if "y" in npz.files else None), named
    except UsageError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise UsageError(f"{what}: {path} holds Python objects, not numeric arrays: save "
                             "plain numeric arrays (object arrays would run code)") from exc
        raise UsageError(f"{what}: cannot read {path} ({_first_line(exc)}): {damaged}") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{what}: cannot read {path} ({_first_line(exc)}): {damaged}") from exc


def _arrays(path: Path, spec: str, what: str, max_samples: int | None, scope: Scope
            ) -> Samples:
    x, y, named = _load_arrays(path, what, scope)
    for name, arr in (("x", x), ("y", y), *named.items()):
        if arr is not None and arr.ndim == 0:
            raise UsageError(f"{what}: {name} in {path} is a single value, not one row per "
                             "sample: save an array whose first axis is the samples")
    for name, arr in named.items():
        if len(arr) != len(x):
            raise UsageError(f"{what}: {path} has {len(x)} samples in {next(iter(named))} "
                             f"but {len(arr)} in {name}: give every input one row per sample")
    if y is not None and len(y) != len(x):
        raise UsageError(f"{what}: {path} has {len(x)} inputs but {len(y)} labels: give one "
                         "label per input")
    if max_samples:
        x, y = x[:max_samples], None if y is None else y[:max_samples]
        named = {n: a[:max_samples] for n, a in named.items()}
    first = _numeric(x, what, "inputs", spec)
    named = {n: _numeric_raw(a, what, n, spec) for n, a in named.items()}
    return Samples(first,
                   None if y is None else _labels(y, what, spec), None, spec, "arrays",
                   named)


def _numeric(x: Any, what: str, name: str, spec: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":  # complex would silently lose its imaginary part
        raise UsageError(f"{what}: the {name} in {spec} are {arr.dtype}, not numbers: "
                         "store real numeric arrays (int or float)")
    return arr.astype(np.float32)


def _numeric_raw(x: Any, what: str, name: str, spec: str) -> np.ndarray:
    """A named input as stored (integers stay integers), numbers only."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise UsageError(f"{what}: the input {name!r} in {spec} is {arr.dtype}, not numbers: "
                         "store real numeric arrays (int, float or bool)")
    return arr


def _labels(y: Any, what: str, spec: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    arr = _numeric(arr, what, "labels", spec)
    bad = ~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))
    if bad.any():
        raise UsageError(f"{what}: {int(bad.sum())} label(s) in {spec} are NaN or infinite "
                         f"(first: sample {int(np.flatnonzero(bad)[0])}): fix or drop them")
    if arr.ndim == 1 and np.array_equal(arr, np.round(arr)):
        return arr.astype(np.int64)  # class labels stored as floats
    return arr


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, maybe on a GPU or needing grad
        value = value.detach().cpu()
        if not value.dtype.is_complex and value.is_floating_point():
            value = value.float()  # bfloat16 / half have no numpy equivalent for .numpy()
        return np.asarray(value.numpy())
    return np.asarray(value)


def _stack(arrays: list[np.ndarray], what: str, spec: str, name: str) -> np.ndarray:
    first = arrays[0].shape
    other = next((i for i, a in enumerate(arrays) if a.shape != first), None)
    if other is not None:
        raise UsageError(f"{what}: item {other} of {spec} has {name} of shape "
                         f"{list(arrays[other].shape)}, item 0 {list(first)}: every sample "
                         "needs the same shape")
    return np.stack(arrays)


def _dataset(spec: str, root: Path, what: str, max_samples: int | None) -> Samples:
    fn = load_factory(spec, root, what)
    try:
        data = fn()
    # SystemExit too: a factory calling sys.exit() would end edgekd with exit 0, nothing built
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything the user's factory raises
        raise UsageError(f"{what}: the factory {spec} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}: fix the factory") from exc
    try:
        total = len(data)
    except (Exception, SystemExit):  # noqa: BLE001 - no __len__, or the user's __len__ failed
        total = -1
    if total < 0 or not hasattr(data, "__getitem__"):
        raise UsageError(f"{what}: the factory {spec} returned a {type(data).__name__}, which "
                         "has no len() and [i]: return a map-style torch Dataset or a list")
    n = min(total, max_samples) if max_samples else total
    xs: list[np.ndarray] = []
    ys: list[np.ndarray | None] = []
    dicts: list[dict[str, np.ndarray]] = []
    for i in range(n):
        try:
            item = data[i]
            pair = isinstance(item, tuple | list) and len(item) == 2
            x = item[0] if pair else item
            if isinstance(x, dict):  # several named inputs: {"input_ids": ..., "mask": ...}
                if not x:
                    raise ValueError("an empty dict of inputs")
                dicts.append({str(k): _to_numpy(v) for k, v in x.items()})
                x = next(iter(x.values()))
            xs.append(_to_numpy(x))
            ys.append(_to_numpy(item[1]) if pair else None)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's __getitem__
            raise UsageError(f"{what}: reading item {i} of {spec} raised "
                             f"{type(exc).__name__}: {_first_line(exc)}: fix the Dataset") from exc
    if not xs:
        raise UsageError(f"{what}: {spec} holds no samples: return a non-empty Dataset")
    labeled = [y is not None for y in ys]
    if any(labeled) and not all(labeled):
        raise UsageError(f"{what}: item {labeled.index(not labeled[0])} of {spec} differs from "
                         "item 0 in carrying a label: return (x, y) for every item, or x for "
                         "every item")
    if dicts and (len(dicts) != len(xs) or any(d.keys() != dicts[0].keys() for d in dicts)):
        raise UsageError(f"{what}: the items of {spec} do not all return a dict with the same "
                         f"input names (item 0: {', '.join(dicts[0])}): return the same "
                         "inputs for every item")
    named = {k: _numeric_raw(_stack([d[k] for d in dicts], what, spec, f"input {k!r}"),
                             what, k, spec) for k in (dicts[0] if dicts else {})}
    x = _numeric(_stack(xs, what, spec, "an input"), what, "inputs", spec)
    y = _labels(_stack([v for v in ys if v is not None], what, spec, "a label"), what, spec) \
        if all(labeled) else None
    return Samples(x, y, None, spec, "dataset", named)


def _is_factory(spec: str, root: Path) -> bool:
    target, sep, attr = spec.rpartition(":")
    if not (sep and target and attr.isidentifier()):
        return False
    if (root / spec).exists():  # also an absolute path: root / "/a" is "/a"
        return False  # a file whose name has a colon in it
    return target.endswith(".py") or all(p.isidentifier() for p in target.split("."))


def load_samples(spec: str, *, root: Path, what: str, images: ImageOptions = ImageOptions(),
                 labeled: bool = True, max_samples: int | None = None) -> Samples:
    """The samples ``spec`` names (forms in the module docstring), at most ``max_samples``
    of them in file order; ``labeled`` requires labels. ``what`` (the config key, e.g.
    ``data.train``) starts every error message."""
    if max_samples is not None and max_samples < 1:
        raise UsageError(f"{what}: max_samples must be at least 1, got {max_samples}: give a "
                         "positive number, or none to read every sample")
    if _is_factory(spec, root):
        samples = _dataset(spec, root, what, max_samples)
    else:
        path = resolve_path(spec, root, what)
        scope = Scope.of(spec, path, root, what)
        mode = scope.check(path).stat().st_mode
        if stat.S_ISDIR(mode):
            samples = _images(path, spec, what, images, labeled, max_samples, scope)
        elif not stat.S_ISREG(mode):
            raise scope.special(path, mode)
        elif path.suffix.lower() in (".npz", ".npy"):
            samples = _arrays(path, spec, what, max_samples, scope)
        else:
            raise UsageError(f"{what}: {path} is not a data source edgekd reads: give a folder "
                             "of images, a .npz (x, y), a .npy, or file.py:function returning "
                             "a Dataset")
    if len(samples) == 0:
        raise UsageError(f"{what}: {spec} holds no samples: add some")
    for name, arr in {"": samples.x, **samples.named}.items():
        if arr.dtype.kind != "f":
            continue
        bad = ~np.isfinite(arr).all(axis=tuple(range(1, arr.ndim)))
        if bad.any():
            raise UsageError(f"{what}: {int(bad.sum())} sample(s) in {spec} contain NaN or "
                             f"infinite values{f' in {name!r}' if name else ''} (first: sample "
                             f"{int(np.flatnonzero(bad)[0])}): clean the data")
    if labeled and samples.y is None:
        raise no_labels(what, spec, list(samples.named) if samples.named else None)
    return samples


def no_labels(what: str, spec: str, arrays: list[str] | None) -> UsageError:
    """The one message for a source without labels that training needs. ``arrays``: the
    array names of a ``.npz`` (listed, as the usual cause is other names: images, labels)."""
    if arrays is None:
        return UsageError(f"{what}: {spec} has no labels: training needs them (a .npz with "
                          "y, class sub-folders, or a Dataset returning (x, y))")
    missing = "labels 'y'" if "x" in arrays else "array 'x' and no labels 'y'"
    return UsageError(f"{what}: {spec} has no {missing} (its arrays: "
                      f"{', '.join(arrays) or 'none'}): name the inputs x and the labels y "
                      "(np.savez(path, x=..., y=...)), or one array per model input as the "
                      "model names them, and y")
