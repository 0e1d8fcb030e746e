"""What a build starts from, resolved from the project: the data splits (preprocessed and
checked against the model) and the models (factories, weights, or a finished ONNX file).

A project names its own data and models (see :mod:`edgekd.settings.project`); the built-in
demonstration (digits and the models of :mod:`edgekd.train.models`) is resolved by the
pipeline, which may import training code.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.cache import sha256_file
from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, InputSpec, OutputSpec, Preprocessing, join_batches
from edgekd.inputs.io import (
    Declared,
    check_declarations,
    constant_spec,
    data_kind,
    onnx_io,
    output_specs,
    session_feed,
    torch_io,
)
from edgekd.inputs.model_sources import (
    Derive,
    Factory,
    ModelSource,
    apply_derive,
    file_models,
    object_models,
)
from edgekd.inputs.objects import InMemory, data_objects
from edgekd.inputs.paths import first_line
from edgekd.inputs.probe import classes_of, fit_call, probe
from edgekd.inputs.splits import (
    Wanted,
    check_labels,
    data_names,
    integer_data,
    load_splits,
    user_data,
)
from edgekd.settings.declarations import InputDecl
from edgekd.settings.project import DataSpec, ModelSpec, Project


@dataclass(frozen=True)
class Inputs:
    data: Dataset
    task: str  # classification | regression
    student: Factory | None = None  # None: a finished ONNX model
    teacher: Factory | None = None  # None: no distillation, the student is finished
    teacher_trains: bool = False  # the teacher has no weights: train it first
    teacher_key: str = ""  # what identifies the teacher (factory code, arguments, weights)
    student_key: str = ""  # what identifies the student (factory code and weights, or object)
    onnx: Path | None = None
    model: dict[str, Any] = field(default_factory=dict)  # for the report and the manifest
    # model.student_from_teacher: the student is made from the (trained) teacher this way.
    derive: Callable[[Any], Any] | None = None

    @property
    def trains(self) -> bool:
        return self.teacher is not None


def _specs(declared: list[Declared], decls: dict[str, InputDecl], data: Dataset,
           what: str) -> tuple[InputSpec, ...]:
    """Every input's spec: data inputs from the data (shape, dtype, kind), the others from
    the project's declarations."""
    arrays = dict(data.test.extra) or {declared[0].name: data.test.x}  # specs not set yet
    images = data.preprocessing.layout == "NCHW"
    out = []
    for d in declared:
        decl = decls.get(d.name)
        if decl is not None and decl.role != "data":
            out.append(constant_spec(d, decl, what))
            continue
        x = arrays[d.name] if d.name in arrays else next(iter(arrays.values()))
        if decl is not None and decl.shape is not None and tuple(decl.shape) != x.shape[1:]:
            want, got = list(decl.shape), list(x.shape[1:])
            raise UsageError(f"inputs.{d.name}.shape = {want} but the data's {d.name} has "
                             f"{got} per sample: pad or truncate the data to {want} (the "
                             "sequence length deployed), or leave shape out")
        dtype = str(x.dtype)
        first_float = x.dtype.kind == "f" and x is next(
            (a for a in arrays.values() if a.dtype.kind == "f"), None)
        prep = (data.preprocessing.raw + f"; x = (raw * {data.preprocessing.scale:g} - mean) "
                "/ std (data.mean, data.std)" if first_float else
                "as stored (integers, not preprocessed)" if x.dtype.kind != "f" else
                "as stored (float32, not preprocessed)")
        kind = (decl.kind if decl is not None and decl.kind != "auto" else
                data_kind(d.name, _every_split(data, d.name) or [x], arrays,
                          images=images))
        out.append(InputSpec(d.name, dtype, tuple(x.shape[1:]), kind=kind, preprocessing=prep))
    return tuple(out)


def _every_split(data: Dataset, name: str) -> list[np.ndarray]:
    """Input ``name``'s samples in every split (what its kind is inferred from)."""
    splits = [data.test, data.train, data.calibration, data.validation]
    return [s.extra[name] if s.extra else s.x for s in splits
            if s is not None and len(s) and (name in s.extra or not s.extra)]


def _with_io(data: Dataset, declared: list[Declared], project: Project, what: str,
             single: bool) -> Dataset:
    """``data`` with the model's input specs (none for one float input: the legacy
    single-input path, named ``input``)."""
    if single:
        return data
    return dataclasses.replace(data, inputs=_specs(declared, project.inputs, data, what))


def _wanted(declared: list[Declared], decls: dict[str, InputDecl]) -> Wanted:
    return [(d.name, d.dtype) for d in declared
            if decls.get(d.name) is None or decls[d.name].role == "data"]


@dataclass(frozen=True)
class DataSource:
    """Where the samples come from: the project's files or objects (``found`` read),
    how to split and preprocess them, and the preprocessing in-memory samples already had."""

    spec: DataSpec
    root: Path
    found: dict[str, Any]
    preprocessing: Preprocessing | None = None  # None: ``spec``'s (applied here)
    name: str | None = None


def _data_source(project: Project, objects: InMemory | None, trains: bool,
                 labels: bool | None = None) -> DataSource:
    if objects is not None and objects.data is not None:
        given = data_objects(objects.data, trains=trains)
        named = {n: s.source for n, s in given.found.items()}  # no file: what was given
        spec = DataSpec(train=named.get("train"), test=named.get("test"),
                        calibration=named.get("calibration"),
                        validation=named.get("validation"), scale=1.0)
        return DataSource(spec, project.root, given.found, given.preprocessing, given.name)
    if project.data is None:
        raise UsageError("no data to build on: pass data= (arrays (x, y), an edgekd Dataset, "
                         "a torch Dataset or DataLoader) or a project file with [data]")
    return DataSource(project.data, project.root,
                      load_splits(project.data, project.root, trains=trains, labels=labels))


def _read(source: DataSource, *, trains: bool, calibration_samples: int, seed: int,
          wanted: Wanted | None) -> Dataset:
    """The splits (:func:`~edgekd.inputs.splits.user_data`), with in-memory samples'
    own preprocessing and name."""
    data = user_data(source.spec, source.root, trains=trains,
                     calibration_samples=calibration_samples, seed=seed, wanted=wanted,
                     found=source.found)
    if source.preprocessing is not None:
        data = dataclasses.replace(data, preprocessing=source.preprocessing,
                                   name=source.name or data.name)
    return data


def resolve(project: Project, *, trust_pickle: bool = False,
            objects: InMemory | None = None, derive: Derive | None = None) -> Inputs:
    """Data and models of ``project`` (or the ``objects`` given in memory instead of its
    ``[model]`` / ``[data]``), checked against each other."""
    if objects is not None and objects.student is not None:
        task = objects.task or (project.model.task if project.model else "classification")
        student, teacher = object_models(objects)
        trains, teacher_trains = objects.trains, objects.train_teacher
        source = _data_source(project, objects, trains)
    elif project.builtin:
        raise ValueError("the built-in demonstration is resolved by edgekd.pipeline")
    else:
        spec: ModelSpec = project.model  # type: ignore[assignment]
        task, trains, teacher_trains = spec.task, spec.trains, spec.teacher_trains
        source = _data_source(project, objects, trains, labels=teacher_trains)
        if spec.onnx:
            return _onnx_inputs(spec, project, source)
        student, teacher = file_models(spec, project, trust_pickle, derive)
    inputs = _torch_inputs(project, source, student, teacher, task=task, trains=trains,
                           teacher_trains=teacher_trains)
    how = project.model.student_from_teacher if project.model and objects is None else {}
    if how and derive is not None:
        inputs = dataclasses.replace(inputs, derive=functools.partial(apply_derive, derive, how))
    return inputs


def _torch_inputs(project: Project, source: DataSource, student: ModelSource,
                  teacher: ModelSource | None, *, task: str, trains: bool,
                  teacher_trains: bool) -> Inputs:
    config, found = project.build, source.found
    declared = torch_io(student.instance(), data_names(found), project.inputs)
    if not declared:
        declared = [Declared("input", None, None)]
    check_declarations(declared, project.inputs, [], project.outputs, student.what)
    wanted = _wanted(declared, project.inputs)
    single = (len(declared) == 1 and not project.inputs
              and not integer_data(found, declared[0].name))
    data = _read(source, trains=trains, calibration_samples=config.quant.calibration_samples,
                 seed=config.seed, wanted=None if single else wanted)
    data = _with_io(data, declared, project, student.what, single)
    fit = fit_call(data)
    make_student, s_info = student.bind(fit)
    model = make_student()
    fit(model, f"{student.what} ({student.label})")
    out_names, shapes = probe(model, data, task, student.what, finite=student.finished)
    check_declarations(declared, project.inputs, out_names, project.outputs, student.what)
    outputs = output_specs(out_names, project.outputs, data.input_specs,
                           task == "classification")
    classes = classes_of(task, outputs, shapes, student.what)
    info = {"student": s_info, "task": task}
    make_teacher, t_info = None, None
    if teacher is not None:
        make_teacher, t_info = teacher.bind(fit)
        t_model = make_teacher()
        fit(t_model, f"{teacher.what} ({teacher.label})")
        t_names, t_shapes = probe(t_model, data, task, teacher.what, finite=teacher.finished)
        t_classes = classes_of(task, output_specs(
            t_names, {}, data.input_specs, True), t_shapes, teacher.what)
        if t_classes != classes:
            raise UsageError(f"{teacher.what} has {t_classes} outputs and {student.what} "
                             f"{classes}: give both the same number of classes")
        info["teacher"] = t_info
    data = dataclasses.replace(data, outputs=outputs)
    if classes is not None:
        if data.num_classes is not None and data.num_classes != classes:
            raise UsageError(f"the data has {data.num_classes} classes (sub-folders) but the "
                             f"model outputs {classes}: make them match (student_args)")
        data = check_labels(data, classes)
    return Inputs(data=data, task=task, student=make_student, teacher=make_teacher,
                  teacher_trains=teacher_trains,
                  teacher_key=str(sorted((t_info or {}).items())),
                  student_key=str(sorted(s_info.items())), model=info)


def _run_onnx(path: Path, data: Dataset, outputs: tuple[OutputSpec, ...]
              ) -> list[np.ndarray]:
    """The ONNX model's outputs on the test split, run in ONNX Runtime (which names an op
    it cannot run), after its calibration outputs were checked to be finite too."""
    from edgekd.inputs.model_files import onnx_session

    session = onnx_session(path, "model.onnx")
    shape = next((i.shape for i in session.get_inputs() if i.shape), [None])
    fixed = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else 0
    size = fixed or 64
    output_names = [o.name for o in session.get_outputs()]
    result = {}
    for name in ("calibration", "test"):
        feeds = data.feeds(getattr(data, name))
        n = len(feeds) - (len(feeds) % fixed if fixed else 0)
        try:
            parts = [session.run(None, session_feed(session, feeds.batch(i, i + size)))
                     for i in range(0, n, size)]
        except Exception as exc:  # noqa: BLE001 - ORT's own error types
            raise UsageError(f"model.onnx cannot run on data.{name} in ONNX Runtime "
                             f"({type(exc).__name__}: {first_line(exc)}): export it for the "
                             "data's sample shape and dtype, or declare its other inputs "
                             "([inputs.<name>] value = ... or zeros = true)") from exc
        outs = join_batches(parts, outputs) if parts else []
        for out_name, out in zip(output_names, outs, strict=True):
            bad = ~np.isfinite(out.astype(np.float64)).reshape(len(out), -1).all(1)
            if bad.any():
                where = f" {out_name!r}" if len(outs) > 1 else ""
                raise UsageError(f"model.onnx's outputs{where} on data.{name} are not finite "
                                 f"(NaN or inf in {int(bad.sum())} of {len(out)} samples): "
                                 "check the weights (NaN in the file?) and the preprocessing")
        result[name] = outs
    return result["test"]


def _onnx_inputs(spec: ModelSpec, project: Project, source: DataSource) -> Inputs:
    from edgekd.inputs.model_files import inspect_onnx, resolve_path

    root, config = project.root, project.build
    path = resolve_path(spec.onnx, root, "model.onnx")  # type: ignore[arg-type]
    info = inspect_onnx(path, "model.onnx")
    declared, out_declared = onnx_io(path)
    out_names = [o.name for o in out_declared]
    check_declarations(declared, project.inputs, out_names, project.outputs, "model.onnx")
    wanted = _wanted(declared, project.inputs)
    if not wanted:
        raise UsageError("model.onnx has no input that comes from the data (every input is "
                         "declared fixed or state): leave at least one to [data]")
    data = _read(source, trains=False, calibration_samples=config.quant.calibration_samples,
                 seed=config.seed, wanted=wanted)
    single = len(declared) == 1 and declared[0].dtype == "float32" and not project.inputs
    data = _with_io(data, declared, project, "model.onnx", single)
    for d in declared:
        if project.inputs.get(d.name) is not None and project.inputs[d.name].role != "data":
            continue
        want = list(data.arrays(data.test)[d.name if not single else "input"].shape[1:])
        got = list((d.dims or ())[1:])
        if d.dims is not None and (len(got) != len(want) or any(
                isinstance(g, int) and g > 0 and g != w for g, w in zip(got, want, strict=True))):
            where = f" {d.name!r}" if len(declared) > 1 else ""
            raise UsageError(f"model.onnx expects input{where} of shape {list(d.dims)} but "
                             f"the data's samples are {want}: make them match "
                             "(data.image_size, or export the model for this shape)")
    if single:
        data = dataclasses.replace(data, inputs=())
    outputs = output_specs(out_names, project.outputs, data.input_specs,
                           spec.task == "classification", [o.dims for o in out_declared])
    outputs_test = _run_onnx(path, dataclasses.replace(
        data, inputs=data.inputs or (InputSpec(declared[0].name, "float32",
                                               tuple(data.test.x.shape[1:])),)), outputs)
    data = dataclasses.replace(data, outputs=outputs)
    if spec.task == "classification":
        shapes = [[1, *o.shape[1:]] for o in outputs_test]
        classes = classes_of(spec.task, outputs, shapes, "model.onnx's output")
        if classes is not None:  # a symbolic class axis ("classes") is known only from a run
            data = check_labels(data, classes)
    return Inputs(data=data, task=spec.task, onnx=path,
                  model={"onnx": spec.onnx, "onnx_sha256": sha256_file(path), "task": spec.task,
                         "input": info.input_name, "opset": info.opset})
