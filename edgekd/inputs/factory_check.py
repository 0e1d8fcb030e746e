"""A model factory named in a project (``model.student``, ``model.teacher``, a data source
``file.py:function``) judged from its source, never imported or run: ``file.py:function``
is parsed with :mod:`ast` and must define the function (or may bind it in a way no parser
can see); ``package.module:function`` is found with :mod:`importlib.machinery` without
importing anything; a checkpoint folder has ``config.json``. Used by the preflight
(:mod:`.preflight`); the loader (:mod:`.model_files`) still imports and calls it."""

from __future__ import annotations

import ast
import difflib
import importlib.machinery
import importlib.util
from pathlib import Path

from edgekd.errors import UsageError
from edgekd.inputs.model_files import _refuse_stdlib
from edgekd.inputs.paths import check_file, first_line, resolve_path


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
