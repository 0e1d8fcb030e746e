"""The project's data as splits: every split it names, read, each data input in its dtype
(the first float input preprocessed), and the train / test / calibration / validation
:class:`~edgekd.inputs.dataset.Split` s carved from them (see
:class:`~edgekd.settings.project.DataSpec`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, Preprocessing, Split
from edgekd.settings.project import DataSpec


def _load_splits(spec: DataSpec, root: Path, *, need_train_labels: bool) -> dict[str, Any]:
    from edgekd.inputs.sources import ImageOptions, load_samples

    images = ImageOptions(size=spec.image_size, color=spec.color)
    found = {}
    for name in ("train", "validation", "test", "calibration"):
        value = getattr(spec, name)
        if value:
            found[name] = load_samples(value, root=root, what=f"data.{name}", images=images,
                                       labeled=name == "train" and need_train_labels)
    return found


def _image_array(lead: np.ndarray) -> bool:
    """A float array ``[N, C, H, W]`` with 1, 3 or 4 channels and a picture-sized plane is an
    image batch in PyTorch's layout, read from files or not: its robustness conditions are
    the image corruptions and training shifts it (a ``.npz`` of digits is as much an image
    as a folder of PNGs of them)."""
    return (lead.ndim == 4 and lead.dtype.kind == "f" and lead.shape[1] in (1, 3, 4)
            and min(lead.shape[2:]) >= 8)


def _preprocessing(spec: DataSpec, found: dict[str, Any], channels: int,
                   image_array: bool = False) -> Preprocessing:
    kinds = {s.kind for s in found.values()}
    scale = spec.scale if spec.scale is not None else (1 / 255 if "images" in kinds else 1.0)
    for key in ("mean", "std"):
        value = getattr(spec, key)
        if isinstance(value, tuple) and len(value) not in (1, channels):
            raise UsageError(f"data.{key} has {len(value)} values but the samples have "
                             f"{channels} channels (axis 1): give one number or {channels}")
    raw = ("images, pixels 0..255, [C, H, W]" if "images" in kinds
           else "arrays as stored in the data files")
    if image_array and "images" not in kinds:
        raw += ", [C, H, W] images"
    return Preprocessing(scale=scale, mean=spec.mean, std=spec.std, raw=raw,
                         layout="NCHW" if "images" in kinds or image_array else "as given")


Wanted = list[tuple[str, str | None]]  # the model's data inputs: (name, dtype or None)
_INT_KINDS = "iub"


def _raw_inputs(samples: Any, wanted: Wanted | None, what: str) -> dict[str, np.ndarray]:
    """The data inputs of one split by name, as stored. One input: the .npz's ``x`` (or the
    array named as the input); several: one array per input name."""
    named: dict[str, np.ndarray] = samples.named
    if wanted is None or len(wanted) == 1:
        name = wanted[0][0] if wanted else "input"
        if name in named:
            return {name: named[name]}
        return {name: named.get("x", samples.x) if wanted else samples.x}
    missing = [n for n, _ in wanted if n not in named]
    if missing:
        have = ", ".join(named) or "one unnamed array"
        names = [n for n, _ in wanted]
        call = ("=..., ".join(names) + "=..." if all(n.isidentifier() for n in names)
                else "**{" + ", ".join(f"{n!r}: ..." for n in names) + "}")
        raise UsageError(f"{what}: {samples.source} has no input {missing[0]!r} (it has: "
                         f"{have}): the model takes {', '.join(names)}; save one array per "
                         f"input under its name (np.savez(path, {call}, y=...)) or return a "
                         "dict of them from the Dataset")
    return {n: named[n] for n, _ in wanted}


def _typed(raw: dict[str, np.ndarray], wanted: Wanted | None, prep: Preprocessing,
           named: bool, what: str) -> dict[str, np.ndarray]:
    """Each input in its dtype: integer and bool inputs as they are (token ids, masks:
    declared, or stored as int64/int32/bool), the first float input
    preprocessed (``data.scale/mean/std``), other float inputs as stored."""
    dtypes = dict(wanted or [])
    out, first_float = {}, True
    for name, arr in raw.items():
        dtype = dtypes.get(name)
        if dtype is None and named and arr.dtype.kind in _INT_KINDS and arr.dtype.itemsize >= 4 \
                or dtype is None and named and arr.dtype == np.bool_:
            dtype = "bool" if arr.dtype == np.bool_ else "int64"
        if dtype is not None and np.dtype(dtype).kind in _INT_KINDS:
            if arr.dtype.kind == "f" and not np.array_equal(arr, np.round(arr)):
                raise UsageError(f"{what}: input {name!r} is {dtype} in the model but the "
                                 "data holds fractions: store whole numbers (token ids)")
            out[name] = arr.astype(dtype)
        elif first_float:
            out[name], first_float = prep.apply(arr), False
        else:
            out[name] = arr.astype(dtype or "float32")
    return out


def _split(x: dict[str, np.ndarray], y: np.ndarray | None, idx: np.ndarray) -> Split:
    first = next(iter(x.values()))
    return Split(x=first[idx], y=None if y is None else y[idx], index=idx,
                 extra={k: v[idx] for k, v in x.items()} if len(x) > 1 else {})


def load_splits(spec: DataSpec, root: Path, *, trains: bool,
                labels: bool | None = None) -> dict[str, Any]:
    """Every split the project names, read (:func:`edgekd.inputs.sources.load_samples`)."""
    if trains and not spec.train:
        raise UsageError("distillation trains the student: set data.train to labeled samples")
    # ``labels``: whether training needs them (a teacher that trains does; a given teacher's
    # outputs are all a student distilled on unlabeled text learns from). Default: trains.
    return _load_splits(spec, root, need_train_labels=trains if labels is None else labels)


def integer_data(found: dict[str, Any], name: str) -> bool:
    """Whether the data for input ``name`` (or the .npz's ``x``) holds token ids or a mask:
    stored as int64 / int32 / bool (uint8 and int16 arrays are pixels and samples)."""
    first = next(iter(found.values()))
    arr = first.named.get(name, first.named.get("x"))
    return arr is not None and (arr.dtype == np.bool_ or (
        arr.dtype.kind in "iu" and arr.dtype.itemsize >= 4))


def data_names(found: dict[str, Any]) -> list[str]:
    """The named input arrays every split has (a .npz's arrays, a Dataset's dict keys)."""
    names = [set(s.named) for s in found.values()]
    first = next(iter(found.values()))
    return [n for n in first.named if all(n in have for have in names)]


def user_data(spec: DataSpec, root: Path, *, trains: bool, calibration_samples: int,
              seed: int, wanted: Wanted | None = None,
              found: dict[str, Any] | None = None) -> Dataset:
    """The project's splits, preprocessed; missing splits come from the others (DataSpec).
    ``wanted``: the model's data inputs (None: one float input, read as ``x``)."""
    if found is None:
        found = load_splits(spec, root, trains=trains)
    raw = {n: _raw_inputs(s, wanted, f"data.{n}") for n, s in found.items()}
    named = wanted is not None  # the model's own inputs (else: one float input, legacy)
    first = next(iter(raw.values()))
    floats = [a for a in first.values() if a.dtype.kind == "f" or a.dtype.itemsize < 4]
    lead = floats[0] if floats else next(iter(first.values()))
    prep = _preprocessing(spec, found, lead.shape[1] if lead.ndim > 1 else 1,
                          image_array=not named and _image_array(lead))
    classes = _classes(found)
    arrays = {n: (_typed(raw[n], wanted, prep, named, f"data.{n}"), s.y)
              for n, s in found.items()}
    shapes = {n: {k: v.shape[1:] for k, v in x.items()} for n, (x, _) in arrays.items()}
    if len({str(v) for v in shapes.values()}) > 1:
        detail = ", ".join(f"data.{n} {', '.join(f'{k} {list(v)}' for k, v in s.items())}"
                           for n, s in shapes.items())
        tokens = any(v.dtype.kind in "iub" for x, _ in arrays.values() for v in x.values())
        raise UsageError(f"the data sets have different sample shapes ({detail}): give them "
                         "one shape ("
                         + ("pad or truncate every token input to the one sequence length "
                            "the build deploys" if tokens else
                            "data.image_size resizes images") + ")")
    for name, (xs, _) in arrays.items():  # data.std = 0 makes inf of finite samples
        for x in xs.values():
            if x.dtype.kind != "f":
                continue
            bad = ~np.isfinite(x).reshape(len(x), -1).all(1)
            if bad.any():
                raise UsageError(f"data.{name}: {int(bad.sum())} of {len(x)} samples are NaN "
                                 "or infinite after preprocessing (x = (raw * scale - mean) / "
                                 "std): check data.scale, data.mean and data.std (no zeros "
                                 "in std)")
    rng = np.random.default_rng(seed)
    shape = {k: v.shape[1:] for k, v in next(iter(arrays.values()))[0].items()}
    nothing = {k: np.zeros((0, *s), v.dtype) for (k, s), v in
               zip(shape.items(), next(iter(arrays.values()))[0].values(), strict=True)}
    empty = _split(nothing, None, np.arange(0))
    train = test = calib = empty
    if "train" in arrays:
        xs, y = arrays["train"]
        n = len(y) if y is not None else len(next(iter(xs.values())))
        order = rng.permutation(n)
        if "test" in arrays:
            train = _split(xs, y, np.sort(order))
        else:
            n_test = max(1, round(spec.test_fraction * n))
            if n - n_test < 1:
                raise UsageError(f"data.train has {n} sample(s): too few to hold out a "
                                 "test split; add samples or set data.test")
            train = _split(xs, y, np.sort(order[n_test:]))
            test = _split(xs, y, np.sort(order[:n_test]))
    if "test" in arrays:
        test = _split(*arrays["test"], np.arange(len(next(iter(arrays["test"][0].values())))))
    if "calibration" in arrays:
        calib = _split(*arrays["calibration"],
                       np.arange(len(next(iter(arrays["calibration"][0].values())))))
    elif len(train):
        pick = np.sort(rng.permutation(len(train))[:calibration_samples])
        calib = train.take(pick)
    else:  # a finished model with one data set: calibrate on part of it, verify on the rest
        n = len(test)
        if n < 2:
            raise UsageError("a finished model needs samples to calibrate INT8 and to verify "
                             "it: set data.calibration, or give data.test at least 2 samples")
        order = rng.permutation(n)
        k = min(calibration_samples, n // 2)
        calib = test.take(np.sort(order[:k]))
        test = test.take(np.sort(order[k:]))
    if len(test) == 0:
        raise UsageError("no samples to verify the artifacts on: set data.test or data.train")
    validation = (_split(*arrays["validation"],
                         np.arange(len(next(iter(arrays["validation"][0].values())))))
                  if "validation" in arrays else None)
    return Dataset(name=f"project ({', '.join(found)})", train=train, test=test,
                   calibration=calib, preprocessing=prep,
                   num_classes=len(classes) if classes else None, seed=seed,
                   validation=validation, sources={n: s.source for n, s in found.items()},
                   classes=classes)


def _classes(found: dict[str, Any]) -> tuple[str, ...] | None:
    """The class names of image folders, the same in every split: label i is the i-th
    sub-folder in sorted order, so a test folder named differently from the training one
    would shift every label after it."""
    named = {n: s.classes for n, s in found.items() if s.classes}
    if not named:
        return None
    first, want = next(iter(named.items()))
    for name, got in named.items():
        if got != want:
            only = [f"only in data.{first}: {', '.join(sorted(set(want) - set(got))[:5])}",
                    f"only in data.{name}: {', '.join(sorted(set(got) - set(want))[:5])}"]
            diff = "; ".join(o for o in only if not o.endswith(": ")) or "in another order"
            raise UsageError(f"data.{name} and data.{first} have different class folders "
                             f"({diff}): name the class sub-folders the same in every split "
                             "(labels follow the sorted folder names)")
    return want


def check_labels(data: Dataset, num_classes: int) -> Dataset:
    for name in ("train", "test", "calibration", "validation"):
        split = getattr(data, name)
        if split is None or split.y is None or len(split) == 0:
            continue
        y = split.y
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise UsageError(f"data.{name}: a classifier needs one integer class label per "
                             f"sample, got labels of dtype {y.dtype} and shape {list(y.shape)}:"
                             " fix the labels or set model.task = \"regression\"")
        bad = (y < 0) | (y >= num_classes)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise UsageError(f"data.{name}: label {int(y[i])} (sample {i}) is out of range for "
                             f"a model with {num_classes} outputs: labels must be 0..."
                             f"{num_classes - 1}; fix the labels or the model's class count")
    return dataclasses.replace(data, num_classes=num_classes)
