"""The user's data: a folder of images in class sub-folders, ``.npz`` / ``.npy`` arrays, or a
Python factory returning a torch Dataset, read into numpy arrays with one-line errors.

Everything ends up in one in-memory array per split: right for edge-sized data sets (the
samples that train a small student, calibrate it and verify it), not for ImageNet.
Images are read with Pillow; arrays with ``numpy.load(allow_pickle=False)``, so a data file
cannot run code. Relative paths start at the project folder and may not leave it.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import UsageError
from edgekd.loading import load_factory, resolve_path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm",
                  ".ppm"}


@dataclass(frozen=True)
class ImageOptions:
    size: tuple[int, int] | None = None  # (height, width) to resize to; None: keep
    color: str = "auto"  # gray | rgb | auto (gray when every image is single-channel)


@dataclass(frozen=True)
class Samples:
    x: np.ndarray  # float32 [N, ...], raw values (images: 0..255, [N, C, H, W])
    y: np.ndarray | None  # int64 labels, float32 targets, or None
    classes: tuple[str, ...] | None  # image folders: label i is classes[i]
    source: str
    kind: str  # images | arrays | dataset

    def __len__(self) -> int:
        return len(self.x)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{self.x.dtype}{self.x.shape}".encode())
        h.update(np.ascontiguousarray(self.x).tobytes())
        if self.y is not None:
            h.update(f"{self.y.dtype}{self.y.shape}".encode())
            h.update(np.ascontiguousarray(self.y).tobytes())
        return h.hexdigest()


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and _visible(p) and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path, options: ImageOptions, mode: str, what: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert(mode)
            if options.size is not None:
                im = im.resize((options.size[1], options.size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.float32)
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's UnidentifiedImageError is OSError
        raise UsageError(f"{what}: cannot read image {path} ({exc}): replace or remove the "
                         "file") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _mode(files: list[Path], color: str) -> str:
    if color == "gray":
        return "L"
    if color == "rgb":
        return "RGB"
    from PIL import Image

    for path in files:
        try:
            with Image.open(path) as im:
                if im.mode not in ("L", "1", "I", "F", "I;16"):
                    return "RGB"
        except OSError:
            continue  # reported properly when the file is read
    return "L"


def _images(folder: Path, spec: str, what: str, options: ImageOptions, labeled: bool,
            max_samples: int | None) -> Samples:
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and _visible(p))
    if subdirs:
        classes = tuple(p.name for p in subdirs)
        files = [(f, i) for i, d in enumerate(subdirs) for f in _image_files(d)]
        empty = [d.name for d in subdirs if not _image_files(d)]
        if empty:
            raise UsageError(f"{what}: class folder {folder / empty[0]} has no images: add "
                             "images or remove the folder")
    else:
        if labeled:
            raise UsageError(f"{what}: {folder} has no class sub-folders: a labeled set needs "
                             "one sub-folder of images per class (e.g. train/cat, train/dog)")
        classes, files = None, [(f, -1) for f in _image_files(folder)]
    if not files:
        raise UsageError(f"{what}: no images in {folder} (looked for "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}): add images or fix the path")
    files = files[:max_samples] if max_samples else files
    mode = _mode([f for f, _ in files], options.color)
    arrays = [_read_image(f, options, mode, what) for f, _ in files]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        first = arrays[0].shape
        other = next(i for i, a in enumerate(arrays) if a.shape != first)
        raise UsageError(f"{what}: images differ in size ({files[0][0].name} is "
                         f"{first[2]}x{first[1]}, {files[other][0].name} is "
                         f"{arrays[other].shape[2]}x{arrays[other].shape[1]}): set "
                         "data.image_size = [height, width] to resize them")
    y = np.array([label for _, label in files], np.int64) if classes else None
    return Samples(np.stack(arrays), y, classes, spec, "images")


def _arrays(path: Path, spec: str, what: str, max_samples: int | None) -> Samples:
    try:
        if path.suffix == ".npy":
            x, y = np.load(path, allow_pickle=False), None
        else:
            with np.load(path, allow_pickle=False) as npz:
                if "x" not in npz.files:
                    raise UsageError(f"{what}: {path} has no array 'x' (it has: "
                                     f"{', '.join(npz.files) or 'nothing'}): save inputs as x "
                                     "and labels as y (np.savez(path, x=..., y=...))")
                x = npz["x"]
                y = npz["y"] if "y" in npz.files else None
    except UsageError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc):
            raise UsageError(f"{what}: {path} holds Python objects, not numeric arrays: save "
                             "plain numeric arrays (object arrays would run code)") from exc
        raise UsageError(f"{what}: cannot read {path} ({exc}): it may be truncated; save it "
                         "again") from exc
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{what}: cannot read {path} ({exc}): it may be truncated; save it "
                         "again") from exc
    if y is not None and len(y) != len(x):
        raise UsageError(f"{what}: {path} has {len(x)} inputs but {len(y)} labels: give one "
                         "label per input")
    if max_samples:
        x, y = x[:max_samples], None if y is None else y[:max_samples]
    return Samples(_numeric(x, what, "inputs"), None if y is None else _labels(y, what),
                   None, spec, "arrays")


def _numeric(x: Any, what: str, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise UsageError(f"{what}: the {name} are {arr.dtype}, not numbers: store numeric "
                         "arrays")
    return arr.astype(np.float32)


def _labels(y: Any, what: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.dtype.kind in "iub":
        return arr.astype(np.int64)
    arr = _numeric(arr, what, "labels")
    if not np.isfinite(arr).all():
        raise UsageError(f"{what}: the labels contain NaN or infinite values: fix them")
    if arr.ndim == 1 and np.array_equal(arr, np.round(arr)):
        return arr.astype(np.int64)  # class labels stored as floats
    return arr


def _dataset(spec: str, root: Path, what: str, labeled: bool,
             max_samples: int | None) -> Samples:
    fn = load_factory(spec, root, what)
    try:
        data = fn()
    except Exception as exc:  # noqa: BLE001 - anything the user's factory raises
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UsageError(f"{what}: the factory {spec} raised {type(exc).__name__}: {first}: "
                         "fix the factory") from exc
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise UsageError(f"{what}: the factory {spec} returned a {type(data).__name__}, which "
                         "has no len() and [i]: return a map-style torch Dataset or a list")
    n = min(len(data), max_samples) if max_samples else len(data)
    xs, ys = [], []
    for i in range(n):
        try:
            item = data[i]
        except Exception as exc:  # noqa: BLE001 - the user's __getitem__
            raise UsageError(f"{what}: reading item {i} from {spec} raised "
                             f"{type(exc).__name__}: {exc}: fix the Dataset") from exc
        x, y = (item[0], item[1]) if isinstance(item, tuple | list) and len(item) == 2 else (
            item, None)
        xs.append(np.asarray(x.numpy() if hasattr(x, "numpy") else x))
        ys.append(None if y is None else np.asarray(y.numpy() if hasattr(y, "numpy") else y))
        if xs[-1].shape != xs[0].shape:
            raise UsageError(f"{what}: item {i} of {spec} has shape {list(xs[-1].shape)}, item 0 "
                             f"{list(xs[0].shape)}: every sample needs the same shape")
    has_labels = [y is not None for y in ys]
    if any(has_labels) and not all(has_labels):
        raise UsageError(f"{what}: some items of {spec} carry labels and some do not: return "
                         "(x, y) for every item")
    x = _numeric(np.stack(xs), what, "inputs") if xs else np.zeros((0,), np.float32)
    y = _labels(np.stack(ys), what) if ys and all(has_labels) else None
    return Samples(x, y, None, spec, "dataset")


def load_samples(spec: str, *, root: Path, what: str, images: ImageOptions = ImageOptions(),
                 labeled: bool = True, max_samples: int | None = None) -> Samples:
    """The samples ``spec`` names (see the module docstring); ``labeled`` requires labels."""
    target, sep, attr = spec.rpartition(":")
    is_factory = bool(sep and target and attr and "/" not in attr and not Path(spec).exists()
                      and (target.endswith(".py") or "." in target or target.isidentifier()))
    if is_factory:
        samples = _dataset(spec, root, what, labeled, max_samples)
    else:
        path = resolve_path(spec, root, what)
        if path.is_dir():
            samples = _images(path, spec, what, images, labeled, max_samples)
        elif path.suffix in (".npz", ".npy"):
            samples = _arrays(path, spec, what, max_samples)
        else:
            raise UsageError(f"{what}: {path} is not a data source edgekd reads: give a folder "
                             "of images, a .npz (x, y), a .npy, or file.py:function returning "
                             "a Dataset")
    if len(samples) == 0:
        raise UsageError(f"{what}: {spec} holds no samples: add some")
    bad = ~np.isfinite(samples.x.reshape(len(samples), -1)).all(1)
    if bad.any():
        raise UsageError(f"{what}: {int(bad.sum())} sample(s) contain NaN or infinite values "
                         f"(first: sample {int(np.flatnonzero(bad)[0])}): clean the data")
    if labeled and samples.y is None:
        raise UsageError(f"{what}: {spec} has no labels: training needs them (a .npz with y, "
                         "class sub-folders, or a Dataset returning (x, y))")
    return samples
