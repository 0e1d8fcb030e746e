"""The preflight: every input a build names, checked before torch, a converter or a runtime
is imported, with every independent problem reported at once.

:func:`preflight` runs on a loaded :class:`~edgekd.settings.project.Project` (its keys and
value types were checked when it loaded, :mod:`edgekd.settings.typed`) and looks at what
the settings point to, as cheaply as it can:

- the target (and the project's ``runtimes`` against it) and a ``--budget`` file;
- model factories: ``file.py:function`` is parsed with :mod:`ast` (never imported or run)
  and must define the function; ``package.module:function`` is found with
  :mod:`importlib.machinery` without importing anything; a checkpoint folder has
  ``config.json``;
- weights and ONNX files exist and are non-empty regular files;
- data sources: folders have images (and class sub-folders where labels are needed);
  ``.npy`` / ``.npz`` headers are read (never the arrays) for the dtype, the number of
  samples, labels, truncation and the sample shape shared by every split.

The messages are the ones the loaders (:mod:`.sources`, :mod:`.model_files`) give for the
same problem, so a problem reads the same whether the preflight or the loader finds it.
Everything the preflight cannot judge without running the user's code or a runtime (a
factory that raises, weights that do not fit, a model that rejects the data's shape) is
left to the loaders, which still check everything.
"""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.model_files import _refuse_stdlib
from edgekd.inputs.paths import check_file, first_line, resolve_path
from edgekd.inputs.scope import IMAGE_SUFFIXES, Scope, listing
from edgekd.inputs.sources import _is_factory
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


def factory_defined(spec: str, root: Path, what: str) -> None:
    """``spec`` names a checkpoint folder with ``config.json``, or a function that its
    ``file.py`` or ``package.module`` defines, judged from the source without running it."""
    target, sep, attr = spec.rpartition(":")
    if not sep:
        _checkpoint(spec, root, what)
        return
    if not target or not attr:
        raise UsageError(f"{what}: {spec!r} names no function: write it as "
                         "path/to/file.py:function or package.module:function")
    _refuse_stdlib(target, spec, what)
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = resolve_path(target, root, what)
        check_file(path, what, ".py", None)
    else:
        found = _find_module(target, root, what)
        if found is None:  # compiled, namespace, or a package that builds itself at run time
            return
        path = found
    _defines(path, attr, what)


def _checkpoint(spec: str, root: Path, what: str) -> None:
    if not spec.strip():
        raise UsageError(f"{what} is empty: name a factory as path/to/file.py:function")
    local = Path(spec).expanduser()
    if not (local if local.is_absolute() else root / local).is_dir():
        raise UsageError(f"{what}: {spec!r} is not a folder and names no function: give a "
                         "Hugging Face checkpoint folder (config.json + model.safetensors) or "
                         "write it as path/to/file.py:function or package.module:function")
    folder = resolve_path(spec, root, what)
    if not (folder / "config.json").exists():
        raise UsageError(f"{what}: {folder} is a folder without config.json: name a Hugging "
                         "Face checkpoint folder (model.save_pretrained writes config.json and "
                         "model.safetensors) or a factory as path/to/file.py:function")


def _find_module(target: str, root: Path, what: str) -> Path | None:
    """The source file of module ``target`` (the project folder first, as the loader puts
    it first on sys.path), found without importing it or its parent packages; None when it
    exists but has no Python source to read."""
    parts = target.split(".")
    spec = importlib.machinery.PathFinder.find_spec(parts[0], [str(root)])
    if spec is None:
        try:  # a top-level name: finders only, nothing is imported
            spec = importlib.util.find_spec(parts[0])
        except (ImportError, ValueError):
            spec = None
    if spec is None:
        raise UsageError(f"{what}: no module named {parts[0]!r} in the project folder or the "
                         "installed packages: check the spelling, install it, or give the "
                         "factory as path/to/file.py:function")
    for i in range(1, len(parts)):
        places = spec.submodule_search_locations
        if places is None or _dynamic_package(spec.origin):
            return None  # the loader says what is wrong once it imports it
        sub = importlib.machinery.PathFinder.find_spec(".".join(parts[:i + 1]), list(places))
        if sub is None:
            name = ".".join(parts[:i + 1])
            raise UsageError(f"{what}: no module named {name!r} in the project folder or the "
                             "installed packages: check the spelling, install it, or give "
                             "the factory as path/to/file.py:function")
        spec = sub
    origin = spec.origin
    return Path(origin) if origin and origin.endswith(".py") else None


def _dynamic_package(origin: str | None) -> bool:
    """A package whose ``__init__`` may add sub-modules at run time (extends ``__path__``,
    edits ``sys.modules``): only an import can tell what it holds."""
    if not origin or not origin.endswith(".py"):
        return True
    try:
        text = Path(origin).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    return "__path__" in text or "sys.modules" in text


def _defines(path: Path, attr: str, what: str) -> None:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise UsageError(f"{what}: syntax error in {exc.filename}:{exc.lineno}: {exc.msg}: "
                         "fix the file") from exc
    except (OSError, ValueError) as exc:  # ValueError: null bytes in the source
        raise UsageError(f"{what}: cannot read {path} ({first_line(exc)}): check the "
                         "file") from exc
    names = _module_names(tree)
    if names is None or attr in names:
        return
    own = [n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef
                                                   | ast.ClassDef) and not n.name.startswith("_")]
    close = difflib.get_close_matches(attr, own, n=1)
    raise UsageError(f"{what}: {path} has no function {attr!r}"
                     + (f"; it has: {', '.join(own[:5])}" if own else "")
                     + (f" (did you mean {close[0]!r}?)" if close else "")
                     + ": fix the name after the ':'")


def _module_names(tree: ast.Module) -> set[str] | None:
    """Every name the module may bind at its top level, generously (anything assigned,
    imported or defined outside a top-level function or class body), or None when it may
    bind names no parser can see (``from x import *``, a module ``__getattr__``,
    ``globals()``, ``exec``, ``global`` in a function)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)
                or isinstance(node, ast.Global)
                or isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("globals", "exec")):
            return None
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
            continue
        for sub in ast.walk(node):  # if / try / with / for blocks, assignments, imports
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(sub.name)
            elif isinstance(sub, ast.Import | ast.ImportFrom):
                names.update((a.asname or a.name).split(".")[0] for a in sub.names)
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                names.add(sub.id)
    return None if "__getattr__" in names else names


# -- data --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Header:
    """What a data file's headers say, without reading its arrays."""

    shapes: dict[str, tuple[int, ...]]  # input arrays by name ("x" for a .npy)
    labels: int | None  # the number of labels, None without y


def _data(spec: DataSpec, root: Path, model: ModelSpec | None,
          check: Callable[[Callable[[], object]], bool]) -> None:
    labeled = model is not None and model.trains
    headers: dict[str, _Header] = {}

    def one(name: str, value: str) -> None:
        header = _source(value, root, f"data.{name}", labeled and name == "train")
        if header is not None:
            headers[name] = header

    if labeled and not spec.train:
        check(lambda: _raise("distillation trains the student: set data.train to labeled "
                             "samples"))
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


def _source(value: str, root: Path, what: str, labeled: bool) -> _Header | None:
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
    header = _arrays(path, value, what, scope)
    if labeled and header.labels is None:
        raise UsageError(f"{what}: {value} has no labels: training needs them (a .npz with y, "
                         "class sub-folders, or a Dataset returning (x, y))")
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


_DAMAGED = "it may be truncated or not written by numpy: save it again (np.savez / np.save)"


def _arrays(path: Path, spec: str, what: str, scope: Scope) -> _Header:
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
    return _Header(shapes, labels)


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
