"""What a build starts from, resolved from the project: the data splits (preprocessed and
checked against the model) and the models (factories, weights, or a finished ONNX file).

A project names its own data and models (see :mod:`edgekd.settings.project`); the built-in
demonstration (digits and the models of :mod:`edgekd.train.models`) is resolved by the
pipeline, which may import training code.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.cache import sha256_file
from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, Preprocessing, Split
from edgekd.settings.project import DataSpec, ModelSpec, Project

Factory = Callable[[], Any]  # () -> torch.nn.Module


@dataclass(frozen=True)
class Inputs:
    data: Dataset
    task: str  # classification | regression
    student: Factory | None = None  # None: a finished ONNX model
    teacher: Factory | None = None  # None: no distillation, the student is finished
    teacher_trains: bool = False  # the teacher has no weights: train it first
    teacher_key: str = ""  # what identifies the teacher (factory code, arguments, weights)
    onnx: Path | None = None
    model: dict[str, Any] = field(default_factory=dict)  # for the report and the manifest

    @property
    def trains(self) -> bool:
        return self.teacher is not None


# -- data ------------------------------------------------------------------------------


def _load_splits(spec: DataSpec, root: Path, *, need_train_labels: bool) -> dict[str, Any]:
    from edgekd.inputs.sources import ImageOptions, load_samples

    images = ImageOptions(size=spec.image_size, color=spec.color)
    found = {}
    for name in ("train", "validation", "test", "calibration"):
        value = getattr(spec, name)
        if value:
            found[name] = load_samples(value, root=root, what=f"data.{name}", images=images,
                                       labeled=name == "train" and need_train_labels)
    shapes = {name: s.x.shape[1:] for name, s in found.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"data.{n} {list(s)}" for n, s in shapes.items())
        raise UsageError(f"the data sets have different sample shapes ({detail}): give them "
                         "one shape (data.image_size resizes images)")
    return found


def _preprocessing(spec: DataSpec, found: dict[str, Any], channels: int) -> Preprocessing:
    kinds = {s.kind for s in found.values()}
    scale = spec.scale if spec.scale is not None else (1 / 255 if "images" in kinds else 1.0)
    for key in ("mean", "std"):
        value = getattr(spec, key)
        if isinstance(value, tuple) and len(value) not in (1, channels):
            raise UsageError(f"data.{key} has {len(value)} values but the samples have "
                             f"{channels} channels (axis 1): give one number or {channels}")
    raw = ("images, pixels 0..255, [C, H, W]" if "images" in kinds
           else "arrays as stored in the data files")
    return Preprocessing(scale=scale, mean=spec.mean, std=spec.std, raw=raw,
                         layout="NCHW" if "images" in kinds else "as given")


def _split(x: np.ndarray, y: np.ndarray | None, idx: np.ndarray) -> Split:
    return Split(x=x[idx], y=None if y is None else y[idx], index=idx)


def user_data(spec: DataSpec, root: Path, *, trains: bool, calibration_samples: int,
              seed: int) -> Dataset:
    """The project's splits, preprocessed; missing splits come from the others (DataSpec)."""
    if trains and not spec.train:
        raise UsageError("distillation trains the student: set data.train to labeled samples")
    found = _load_splits(spec, root, need_train_labels=trains)
    first = next(iter(found.values()))
    prep = _preprocessing(spec, found, first.x.shape[1] if first.x.ndim > 1 else 1)
    classes = _classes(found)
    arrays = {n: (prep.apply(s.x), s.y) for n, s in found.items()}
    for name, (x, _) in arrays.items():  # data.std = 0 makes inf of finite samples
        bad = ~np.isfinite(x).reshape(len(x), -1).all(1)
        if bad.any():
            raise UsageError(f"data.{name}: {int(bad.sum())} of {len(x)} samples are NaN or "
                             "infinite after preprocessing (x = (raw * scale - mean) / std): "
                             "check data.scale, data.mean and data.std (no zeros in std)")
    rng = np.random.default_rng(seed)
    empty = Split(np.zeros((0, *first.x.shape[1:]), np.float32), None, np.arange(0))
    train = test = calib = empty
    if "train" in arrays:
        x, y = arrays["train"]
        order = rng.permutation(len(x))
        if "test" in arrays:
            train = _split(x, y, np.sort(order))
        else:
            n_test = max(1, round(spec.test_fraction * len(x)))
            if len(x) - n_test < 1:
                raise UsageError(f"data.train has {len(x)} sample(s): too few to hold out a "
                                 "test split; add samples or set data.test")
            train = _split(x, y, np.sort(order[n_test:]))
            test = _split(x, y, np.sort(order[:n_test]))
    if "test" in arrays:
        test = _split(*arrays["test"], np.arange(len(arrays["test"][0])))
    if "calibration" in arrays:
        calib = _split(*arrays["calibration"], np.arange(len(arrays["calibration"][0])))
    elif len(train):
        pick = np.sort(rng.permutation(len(train))[:calibration_samples])
        calib = Split(train.x[pick], None if train.y is None else train.y[pick],
                      train.index[pick])
    else:  # a finished model with one data set: calibrate on part of it, verify on the rest
        n = len(test)
        if n < 2:
            raise UsageError("a finished model needs samples to calibrate INT8 and to verify "
                             "it: set data.calibration, or give data.test at least 2 samples")
        order = rng.permutation(n)
        k = min(calibration_samples, n // 2)
        calib = _split(test.x, test.y, np.sort(order[:k]))
        test = _split(test.x, test.y, np.sort(order[k:]))
    if len(test) == 0:
        raise UsageError("no samples to verify the artifacts on: set data.test or data.train")
    validation = (_split(*arrays["validation"], np.arange(len(arrays["validation"][0])))
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


def _check_labels(data: Dataset, num_classes: int) -> Dataset:
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


# -- models ----------------------------------------------------------------------------


def _code_digest(fn: Callable[..., Any]) -> str:
    """The factory's source file: editing the model definition invalidates cached stages."""
    try:
        return sha256_file(Path(inspect.getfile(fn)))
    except (TypeError, OSError):
        return getattr(fn, "__qualname__", repr(fn))


def _factory(spec: str, args: dict[str, Any], weights: str | None, root: Path, what: str,
             trust_pickle: bool, example: Any) -> tuple[Factory, dict[str, Any]]:
    import torch

    from edgekd.inputs.model_files import (
        fit_check,
        load_factory,
        load_weights,
        make_model,
        resolve_path,
    )

    fn = load_factory(spec, root, what)
    path = resolve_path(weights, root, f"{what}_weights") if weights else None

    def make() -> Any:
        model = make_model(spec, root, what, args)
        lazy = torch.nn.modules.lazy.LazyModuleMixin
        if any(isinstance(m, lazy) and m.has_uninitialized_params() for m in model.modules()):
            fit_check(model, example, f"{what} ({spec})")  # lazy layers take their shapes
            model.train()
        if path is not None:
            load_weights(model, path, f"{what}_weights", trust_pickle=trust_pickle)
        return model.eval() if path is not None else model

    info = {"factory": spec, "args": args, "code_sha256": _code_digest(fn),
            "weights": weights, "weights_sha256": sha256_file(path) if path else None}
    return make, info


def _output_check(task: str, out: Any, what: str) -> int | None:
    shape = list(out.shape)
    if task == "classification":
        if len(shape) != 2:
            raise UsageError(f"{what} returns outputs of shape {shape}, not [batch, classes]: "
                             "set model.task = \"regression\" for models that are not "
                             "classifiers")
        return int(shape[1])
    return None


def _one_tensor(out: Any, what: str) -> Any:
    """``out`` when it is one tensor; a tuple, list or dict of outputs is refused by name."""
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, dict):
        keys = ", ".join(repr(k) for k in list(out)[:4]) + (", ..." if len(out) > 4 else "")
        found = f"a {type(out).__name__} with keys {keys}"
    elif isinstance(out, tuple | list):
        kind = "tensors" if all(isinstance(o, torch.Tensor) for o in out) else "values"
        found = f"a {type(out).__name__} of {len(out)} {kind}"
    else:
        found = f"a {type(out).__name__}"
    raise UsageError(f"{what} returns {found}; edgekd deploys models with one output tensor: "
                     "wrap the model so that forward returns the one tensor to deploy (e.g. "
                     "the logits); models with several outputs are not supported yet")


def _outputs(model: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([_one_tensor(model(torch.from_numpy(x[i:i + batch])), "")
                               .float().numpy() for i in range(0, len(x), batch)])


def _probe(model: Any, data: Dataset, task: str, what: str, *, finite: bool) -> int | None:
    """Run ``model`` (eval) on a batch of two test samples, twice, and (``finite``) on the
    test and calibration splits: it must return one tensor with the batch first, the same
    outputs for the same inputs, and finite outputs. Returns the class count of a
    classifier."""
    import torch

    model.eval()
    pair = np.concatenate([data.test.x[:2], data.test.x[:1]])[:2]  # two even with one sample
    with torch.no_grad():
        try:
            out = model(torch.from_numpy(pair))
        except Exception as exc:  # noqa: BLE001 - the user's forward, at batch 2
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise UsageError(f"{what} runs on one sample but fails on a batch of 2 "
                             f"({type(exc).__name__}: {first}): edgekd calibrates and verifies "
                             "in batches: make forward work for any batch size (x.flatten(1) "
                             "or x.shape[0], not a hard-coded 1)") from exc
        out = _one_tensor(out, what)
        if out.ndim == 0 or out.shape[0] != 2:
            raise UsageError(f"{what} returns outputs of shape {list(out.shape)} for a batch of "
                             "2 samples: the first axis of its output must be the batch; make "
                             "forward work for any batch size (no hard-coded 1 in reshape/view)")
        again = _one_tensor(model(torch.from_numpy(pair)), what)
    a, b = out.float().numpy(), again.float().numpy()
    both = np.isfinite(a) & np.isfinite(b)
    delta = float(np.abs(a - b)[both].max()) if both.any() else 0.0
    if delta > 1e-4 * (1 + float(np.abs(a[both]).max() if both.any() else 0)) or (
            np.isfinite(a) != np.isfinite(b)).any():
        raise UsageError(f"{what} gives different outputs for the same input twice in eval "
                         f"mode (max |Δ| {delta:.3g}): remove randomness from forward in "
                         "eval() (noise, torch.randn, F.dropout(training=True))")
    if finite:
        for name in ("test", "calibration"):
            split = getattr(data, name)
            if len(split) == 0:
                continue
            bad = ~np.isfinite(_outputs(model, split.x)).reshape(len(split), -1).all(1)
            if bad.any():
                raise UsageError(f"{what}'s outputs on data.{name} are not finite (NaN or inf "
                                 f"in {int(bad.sum())} of {len(split)} samples): check the "
                                 "weights (NaN in the file?) and the preprocessing")
    return _output_check(task, out, what)


def resolve(project: Project, *, trust_pickle: bool = False) -> Inputs:
    """Data and models of ``project``, checked against each other."""
    if project.builtin:
        raise ValueError("the built-in demonstration is resolved by edgekd.pipeline")
    import torch

    from edgekd.inputs.model_files import fit_check

    spec: ModelSpec = project.model  # type: ignore[assignment]
    assert project.data is not None
    config = project.build
    data = user_data(project.data, project.root, trains=spec.trains,
                     calibration_samples=config.quant.calibration_samples, seed=config.seed)
    example = torch.from_numpy(data.test.x[:1])
    if spec.onnx:
        return _onnx_inputs(spec, project.root, data)
    student, s_info = _factory(spec.student, spec.student_args,  # type: ignore[arg-type]
                               spec.student_weights, project.root, "model.student",
                               trust_pickle, example)
    model = student()
    fit_check(model, example, f"model.student ({spec.student})")
    classes = _probe(model, data, spec.task, "model.student",
                     finite=bool(spec.student_weights) or not spec.trains)
    info = {"student": s_info, "task": spec.task}
    teacher, t_info = None, None
    if spec.teacher:
        teacher, t_info = _factory(spec.teacher, spec.teacher_args, spec.teacher_weights,
                                   project.root, "model.teacher", trust_pickle, example)
        t_model = teacher()
        fit_check(t_model, example, f"model.teacher ({spec.teacher})")
        t_classes = _probe(t_model, data, spec.task, "model.teacher",
                           finite=bool(spec.teacher_weights))
        if t_classes != classes:
            raise UsageError(f"model.teacher has {t_classes} outputs and model.student "
                             f"{classes}: give both the same number of classes")
        info["teacher"] = t_info
    if classes is not None:
        if data.num_classes is not None and data.num_classes != classes:
            raise UsageError(f"the data has {data.num_classes} classes (sub-folders) but the "
                             f"model outputs {classes}: make them match (student_args)")
        data = _check_labels(data, classes)
    return Inputs(data=data, task=spec.task, student=student, teacher=teacher,
                  teacher_trains=bool(spec.teacher and not spec.teacher_weights),
                  teacher_key=str(sorted((t_info or {}).items())), model=info)


def _run_onnx(path: Path, info: Any, data: Dataset) -> np.ndarray:
    """The ONNX model's first output on the test split, run in ONNX Runtime (which names an
    op it cannot run), after its calibration outputs were checked to be finite too."""
    from edgekd.inputs.model_files import onnx_session

    session = onnx_session(path, "model.onnx")
    fixed = info.input_shape[0] if isinstance(info.input_shape[0], int) else 0
    size = fixed or 64
    first = session.get_outputs()[0].name
    result = {}
    for name in ("calibration", "test"):
        x = getattr(data, name).x
        if fixed and len(x) % fixed:
            x = x[:len(x) - len(x) % fixed]
        try:
            out = np.concatenate([session.run([first], {info.input_name: x[i:i + size]})[0]
                                  for i in range(0, len(x), size)]) if len(x) else x
        except Exception as exc:  # noqa: BLE001 - ORT's own error types
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise UsageError(f"model.onnx cannot run on data.{name} in ONNX Runtime "
                             f"({type(exc).__name__}: {first}): export it for the data's "
                             "sample shape and dtype") from exc
        bad = ~np.isfinite(out.astype(np.float64)).reshape(len(out), -1).all(1)
        if bad.any():
            raise UsageError(f"model.onnx's outputs on data.{name} are not finite (NaN or inf "
                             f"in {int(bad.sum())} of {len(out)} samples): check the weights "
                             "(NaN in the file?) and the preprocessing")
        result[name] = out
    return result["test"]


def _onnx_inputs(spec: ModelSpec, root: Path, data: Dataset) -> Inputs:
    from edgekd.inputs.model_files import inspect_onnx, resolve_path

    path = resolve_path(spec.onnx, root, "model.onnx")  # type: ignore[arg-type]
    info = inspect_onnx(path, "model.onnx")
    want = list(data.test.x.shape[1:])
    got = list(info.input_shape[1:])
    if len(got) != len(want) or any(isinstance(g, int) and g != w
                                    for g, w in zip(got, want, strict=True)):
        raise UsageError(f"model.onnx expects inputs of shape {list(info.input_shape)} but the "
                         f"data's samples are {want}: make them match (data.image_size, or "
                         "export the model for this shape)")
    outputs = _run_onnx(path, info, data)
    if spec.task == "classification":
        out = info.output_shapes[0]
        if len(out) != 2:
            raise UsageError(f"model.onnx's output has shape {list(out)}, not [batch, "
                             "classes]: set model.task = \"regression\" for models that are "
                             "not classifiers")
        # A symbolic class axis ("classes") is known only from a run.
        data = _check_labels(data, int(outputs.shape[1]))
    return Inputs(data=data, task=spec.task, onnx=path,
                  model={"onnx": spec.onnx, "onnx_sha256": sha256_file(path), "task": spec.task,
                         "input": info.input_name, "opset": info.opset})
