"""Where a build's models come from: factories named in the project file (with their weights,
or a Hugging Face folder), modules given in memory, or a student made from the teacher
(``model.student_from_teacher``). Each is a :class:`ModelSource`: a fresh instance (forward's
parameters) and, once the data is known, a factory with what identifies it (report, cache
keys)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.cache import sha256_file
from edgekd.errors import UsageError
from edgekd.inputs.objects import InMemory, describe_module, module_factory
from edgekd.settings.project import ModelSpec, Project

Factory = Callable[[], Any]  # () -> torch.nn.Module


def _code_digest(fn: Callable[..., Any]) -> str:
    """The factory's source file: editing the model definition invalidates cached stages."""
    try:
        return sha256_file(Path(inspect.getfile(fn)))
    except (TypeError, OSError):
        return getattr(fn, "__qualname__", repr(fn))


def _factory(spec: str, args: dict[str, Any], weights: str | None, root: Path, what: str,
             trust_pickle: bool, fit: Callable[[Any, str], None]
             ) -> tuple[Factory, dict[str, Any]]:
    """``fit(model, what)`` runs the model once on the data (lazy layers take their shapes)."""
    import torch

    from edgekd.inputs.model_files import load_factory, load_weights, make_model, resolve_path

    fn = load_factory(spec, root, what)
    path = resolve_path(weights, root, f"{what}_weights") if weights else None

    def make() -> Any:
        model = make_model(spec, root, what, args)
        lazy = torch.nn.modules.lazy.LazyModuleMixin
        if any(isinstance(m, lazy) and m.has_uninitialized_params() for m in model.modules()):
            fit(model, f"{what} ({spec})")  # lazy layers take their shapes
            model.train()
        if path is not None:
            load_weights(model, path, f"{what}_weights", trust_pickle=trust_pickle)
        return model.eval() if path is not None else model

    info = {"factory": spec, "args": args, "code_sha256": _code_digest(fn),
            "weights": weights, "weights_sha256": sha256_file(path) if path else None}
    return make, info


@dataclass(frozen=True)
class ModelSource:
    """One model to resolve, named in a project file or given as an object: ``instance()``
    a fresh module without weights (forward's parameters), ``bind(fit)`` its factory once
    the data is known, with what identifies it (report, cache keys)."""

    what: str  # how errors name it: model.student, student=
    label: str  # what it is: the factory spec, the class
    instance: Callable[[], Any]
    bind: Callable[[Callable[[Any, str], None]], tuple[Factory, dict[str, Any]]]
    finished: bool  # trained weights: its outputs must be finite from the start


def file_models(spec: ModelSpec, project: Project, trust_pickle: bool,
                 derive: Derive | None = None) -> tuple[ModelSource, ModelSource | None]:
    from edgekd.inputs.model_files import make_model

    def source(what: str, factory: str, args: dict[str, Any], weights: str | None,
               finished: bool) -> ModelSource:
        return ModelSource(
            what, factory, lambda: make_model(factory, project.root, what, args),
            lambda fit: _factory(factory, args, weights, project.root, what, trust_pickle,
                                 fit), finished)

    teacher = (source("model.teacher", spec.teacher, spec.teacher_args, spec.teacher_weights,
                      not spec.teacher_trains) if spec.teacher else None)
    if spec.student_from_teacher and teacher is not None:
        if derive is None:
            raise UsageError("model.student_from_teacher: this entry point cannot make "
                             "students from teachers; run edgekd build")
        return _derived(teacher, spec.student_from_teacher, derive), teacher
    student = source("model.student", spec.student, spec.student_args,  # type: ignore[arg-type]
                     spec.student_weights, bool(spec.student_weights) or not spec.trains)
    return student, teacher


# ``(teacher, **how) -> student``: edgekd.train.students.student_from_teacher, passed in by
# the pipeline (this room sits below train and does not import it).
Derive = Callable[..., Any]


def apply_derive(make: Derive, how: dict[str, Any], teacher: Any) -> Any:
    try:
        return make(teacher, **how)
    except UsageError as exc:
        raise UsageError(f"model.student_from_teacher: {exc}") from exc
    except TypeError as exc:  # a key student_from_teacher does not take
        raise UsageError(f"model.student_from_teacher: {exc}: use every, layers or config "
                         "fields such as hidden_size") from exc


def _derived(teacher: ModelSource, how: dict[str, Any], make: Derive) -> ModelSource:
    """The student made from the teacher: probed from the teacher's factory here; training
    makes it again from the teacher it trained or loaded (:attr:`Inputs.derive`)."""
    def derive(model: Any) -> Any:
        return apply_derive(make, how, model)

    def bind(fit: Callable[[Any, str], None]) -> tuple[Factory, dict[str, Any]]:
        make_teacher, info = teacher.bind(fit)
        return (lambda: derive(make_teacher()),
                {"from_teacher": dict(sorted(how.items())), "teacher": info})

    return ModelSource("model.student_from_teacher", f"{teacher.label} ({how})",
                       lambda: derive(teacher.instance()), bind, False)


def object_models(objects: InMemory) -> tuple[ModelSource, ModelSource | None]:
    def source(what: str, module: Any, finished: bool) -> ModelSource:
        def bind(fit: Callable[[Any, str], None]) -> tuple[Factory, dict[str, Any]]:
            return (module_factory(module, what, fit, finished=finished),
                    describe_module(module, trains=not finished))
        return ModelSource(what, type(module).__qualname__, lambda: module, bind, finished)

    student = source("student=", objects.student, not objects.trains)
    teacher = (source("teacher=", objects.teacher, not objects.train_teacher)
               if objects.teacher is not None else None)
    return student, teacher
