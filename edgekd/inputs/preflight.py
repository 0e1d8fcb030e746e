"""The preflight: every input a build names, checked before torch, a converter or a runtime
is imported, with every independent problem reported at once.

:func:`preflight` runs on a loaded :class:`~edgekd.settings.project.Project` (its keys and
value types were checked when it loaded, :mod:`edgekd.settings.typed`) and looks at what
the settings point to, as cheaply as it can:

- the target (and the project's ``runtimes`` against it) and a ``--budget`` file;
- model factories, judged from their source, never imported or run (:mod:`.factory_check`);
- weights and ONNX files exist and are non-empty regular files;
- data sources: folders have images (and class sub-folders where labels are needed);
  ``.npy`` / ``.npz`` headers are read, never the arrays (:mod:`.npy_headers`), for the
  dtype, the number of samples, labels, truncation and the sample shape shared by every
  split.

The messages are the ones the loaders (:mod:`.sources`, :mod:`.model_files`) give for the
same problem, so a problem reads the same whether the preflight or the loader finds it.
Everything the preflight cannot judge without running the user's code or a runtime (a
factory that raises, weights that do not fit, a model that rejects the data's shape) is
left to the loaders, which still check everything.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from functools import partial
from pathlib import Path

from edgekd.errors import UsageError
from edgekd.inputs.factory_check import factory_defined
from edgekd.inputs.npy_headers import Header, read_headers
from edgekd.inputs.paths import check_file, resolve_path
from edgekd.inputs.scope import IMAGE_SUFFIXES, Scope, listing
from edgekd.inputs.sources import _is_factory, no_labels
from edgekd.settings.budgets import load_budget_file
from edgekd.settings.project import DataSpec, ModelSpec, Project
from edgekd.settings.targets import load_target

SPLITS = ("train", "validation", "test", "calibration")


def preflight(project: Project, *, target: str | None = None, budget: Path | None = None,
              inputs: bool = True) -> None:
    """Raise one :class:`UsageError` naming every problem found in ``project`` (built for
    ``target``, default the project's, with the ``budget`` file if any; its model and data
    too with ``inputs``); return if none."""
    problems: list[str] = []

    def check(step: Callable[[], object]) -> bool:
        try:
            step()
        except UsageError as exc:
            problems.append(str(exc))
            return False
        return True

    name = target or project.target
    if name:
        check(lambda: _target(name, project))
    if budget is not None:
        check(lambda: load_budget_file(budget))
    if inputs and project.model is not None:
        _model(project.model, project.root, check)
    if inputs and project.data is not None:
        _data(project.data, project.root, project.model, check)
    if len(problems) == 1:
        raise UsageError(problems[0])
    if problems:
        # One line, numbered, rather than an `error:` line followed by indented ones: the
        # project's standard is a single `error:` line (tests, CI logs and scripts that keep
        # the last line of stderr get the whole diagnosis), and the numbers keep the problems
        # apart in it.
        where = f" in {project.source}" if project.source != "built-in" else ""
        listed = "; ".join(f"({i}) {p}" for i, p in enumerate(problems, 1))
        raise UsageError(f"{len(problems)} problems{where}: {listed}")


def _target(name: str, project: Project) -> None:
    found = load_target(name)
    extra = [r for r in project.runtimes or () if r not in found.runtimes]
    if extra:  # the same rule as edgekd.pipeline.run, before any backend is imported
        raise UsageError(f"runtimes: {extra[0]!r} is not a runtime of target {found.name!r} "
                         f"({', '.join(found.runtimes)}): choose from those")


# -- models ------------------------------------------------------------------------------


def _model(spec: ModelSpec, root: Path, check: Callable[[Callable[[], object]], bool]) -> None:
    for role in ("student", "teacher"):
        factory = getattr(spec, role)
        if factory:
            check(partial(factory_defined, factory, root, f"model.{role}"))
        weights = getattr(spec, f"{role}_weights")
        if weights:
            check(partial(_file, weights, root, f"model.{role}_weights", "weights",
                          ": save the weights again"))
    if spec.onnx:
        check(partial(_file, spec.onnx, root, "model.onnx", ".onnx",
                      ", not a valid ONNX model: export it again"))


def _file(value: str, root: Path, what: str, kind: str, empty: str) -> None:
    check_file(resolve_path(value, root, what), what, kind, empty)


# -- data --------------------------------------------------------------------------------


def _data(spec: DataSpec, root: Path, model: ModelSpec | None,
          check: Callable[[Callable[[], object]], bool]) -> None:
    trains = model is not None and model.trains
    # Labels are needed where a teacher trains; a given teacher's outputs are what a student
    # distilled on unlabeled text learns from.
    labeled = model is not None and model.teacher_trains
    headers: dict[str, Header] = {}

    def one(name: str, value: str) -> None:
        header = _source(value, root, f"data.{name}", labeled and name == "train")
        if header is not None:
            headers[name] = header

    if trains and not spec.train:
        check(lambda: _raise("distillation trains the student: set data.train to "
                             + ("labeled samples" if labeled else "training samples")))
    for name in SPLITS:
        value = getattr(spec, name)
        if value:
            check(partial(one, name, value))
    with_x = {n: h.shapes["x"] for n, h in headers.items() if "x" in h.shapes}
    if len({s[1:] for s in with_x.values()}) > 1:
        detail = ", ".join(f"data.{n} x {list(s[1:])}" for n, s in with_x.items())
        check(lambda: _raise(f"the data sets have different sample shapes ({detail}): give "
                             "them one shape (data.image_size resizes images)"))
    if with_x:
        shape = next(iter(with_x.values()))
        channels = shape[1] if len(shape) > 1 else 1
        check(lambda: _channels(spec, channels))


def _raise(message: str) -> None:
    raise UsageError(message)


def _channels(spec: DataSpec, channels: int) -> None:
    for key in ("mean", "std"):
        value = getattr(spec, key)
        if isinstance(value, tuple) and len(value) not in (1, channels):
            raise UsageError(f"data.{key} has {len(value)} values but the samples have "
                             f"{channels} channels (axis 1): give one number or {channels}")


def _source(value: str, root: Path, what: str, labeled: bool) -> Header | None:
    """Check one data source; the headers of an array file."""
    if _is_factory(value, root):
        factory_defined(value, root, what)
        return None
    path = resolve_path(value, root, what)
    scope = Scope.of(value, path, root, what)
    mode = scope.check(path).stat().st_mode
    if stat.S_ISDIR(mode):
        _folder(path, what, labeled, scope)
        return None
    if not stat.S_ISREG(mode):
        raise scope.special(path, mode)
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".npy"):
        raise UsageError(f"{what}: {path} is not a data source edgekd reads: give a folder "
                         "of images, a .npz (x, y), a .npy, or file.py:function returning "
                         "a Dataset")
    header = read_headers(path, value, what, scope)
    if labeled and header.labels is None:
        raise no_labels(what, value, list(header.shapes) if suffix == ".npz" else None)
    return header


def _folder(folder: Path, what: str, labeled: bool, scope: Scope) -> None:
    subdirs, top = listing(folder, scope, folders=True)
    if not subdirs and not top:
        raise UsageError(f"{what}: no images in {folder} (looked for "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}): add images or fix the path")
    if not subdirs and labeled:
        raise UsageError(f"{what}: {folder} has no class sub-folders: a labeled set needs "
                         "one sub-folder of images per class (e.g. train/cat, train/dog)")
    for sub in subdirs:
        if not listing(sub, scope, folders=False)[1]:
            raise UsageError(f"{what}: class folder {sub} has no images: add images or "
                             "remove the folder")


