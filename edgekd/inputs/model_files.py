"""The user's models: factories named as ``module:function`` or ``file.py:function``, a
local Hugging Face checkpoint folder (:mod:`.hf`), weights (:mod:`.weights`), ONNX files
checked.

Paths from a project file stay inside the project folder unless the user wrote them absolute
(:mod:`.paths`). A factory is a plain function or class from the project's files or an
installed package, never the standard library (``os:system`` in a project file would run a
shell command). Every problem is one line naming the setting, the file, what is wrong and the
fix. torch and onnx are imported on first use.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import UsageError
from edgekd.inputs.paths import check_file, first_line, looks_like, resolve_path
from edgekd.inputs.weights import load_weights

if TYPE_CHECKING:
    from torch import nn

# Re-exported: edgekd.inputs.resolve and sources import them from here.
__all__ = ["OnnxInfo", "fit_check", "inspect_onnx", "load_factory", "load_weights",
           "make_model", "onnx_session", "resolve_path"]


def _import(target: str, root: Path, what: str) -> Any:
    """The module ``target`` names, a ``.py`` file or a dotted module. Its folder (the
    project folder for a dotted name) is on sys.path while it runs, so it can import its
    neighbours."""
    load: Callable[[], object]
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = resolve_path(target, root, what)
        check_file(path, what, ".py", None)
        # The name comes from the resolved path, so two projects' model.py never collide.
        name = "edgekd_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise UsageError(f"{what}: {path} is not a Python file: name a .py file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        folder, load = path.parent, lambda: spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        name, folder, load = target, root, lambda: importlib.import_module(target)
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()  # files written since the last import must be seen
    try:
        load()
        return sys.modules[name]
    except BaseException as exc:
        sys.modules.pop(name, None)
        if isinstance(exc, ModuleNotFoundError) and exc.name and (
                exc.name == target or target.startswith(f"{exc.name}.")):
            raise UsageError(f"{what}: no module named {exc.name!r} in the project folder or "
                             "the installed packages: check the spelling, install it, or give "
                             "the factory as path/to/file.py:function") from exc
        if isinstance(exc, ModuleNotFoundError) and exc.name:  # the user's code imports it
            raise UsageError(f"{what}: importing {target} needs the module {exc.name!r}, which "
                             f"is not installed: install it (pip install "
                             f"{exc.name.split('.')[0]})") from exc
        if isinstance(exc, SyntaxError):
            raise UsageError(f"{what}: syntax error in {exc.filename}:{exc.lineno}: "
                             f"{exc.msg}: fix the file") from exc
        if isinstance(exc, Exception | SystemExit):  # the user's code failed while importing
            raise UsageError(f"{what}: importing {target} raised {type(exc).__name__}: "
                             f"{first_line(exc)}: fix the module") from exc
        raise  # KeyboardInterrupt stays what it is
    finally:
        sys.path.remove(str(folder))


def _folder(spec: str, root: Path, what: str) -> Path | None:
    """The checkpoint folder ``spec`` names (inside the project unless absolute), or None
    when it names a function."""
    if not spec.strip():
        return None
    path = Path(spec).expanduser()
    try:
        is_dir = (path if path.is_absolute() else root / path).is_dir()
    except OSError:
        is_dir = False
    return resolve_path(spec, root, what) if is_dir else None


def load_factory(spec: str, root: Path, what: str) -> Callable[..., Any]:
    """The function ``spec`` names: ``package.module:function`` or ``file.py:function``; for
    a Hugging Face checkpoint folder, a factory that loads it (:func:`.hf.hf_factory`)."""
    folder = _folder(spec, root, what)
    if folder is not None:
        from edgekd.inputs.hf import hf_factory

        return hf_factory(folder, what)
    target, sep, attr = spec.rpartition(":")
    if not sep and spec.strip() and not spec.endswith(".py"):
        raise UsageError(f"{what}: {spec!r} is not a folder and names no function: give a "
                         "Hugging Face checkpoint folder (config.json + model.safetensors) or "
                         "write it as path/to/file.py:function or package.module:function")
    if not sep or not target or not attr:
        raise UsageError(f"{what}: {spec!r} names no function: write it as "
                         "path/to/file.py:function or package.module:function")
    _refuse_stdlib(target, spec, what)
    module = _import(target, root, what)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        found = [n for n, v in vars(module).items()
                 if callable(v) and not n.startswith("_") and not inspect.ismodule(v)
                 and getattr(v, "__module__", None) == module.__name__][:5]
        where = getattr(module, "__file__", None) or target
        raise UsageError(f"{what}: {where} has no function {attr!r}"
                         + (f"; it has: {', '.join(found)}" if found else "")
                         + ": fix the name after the ':'")
    home = str(getattr(fn, "__module__", None) or "builtins").split(".")[0]
    if not (inspect.isfunction(fn) or inspect.isclass(fn)) or _stdlib(home):
        kind = (f"the standard-library {home}.{getattr(fn, '__name__', attr)}" if _stdlib(home)
                else f"a {type(fn).__name__}")
        raise UsageError(f"{what}: {spec!r} is {kind}, not a function or class that builds a "
                         "model: name a def or class from your own code or a model package")
    return fn  # type: ignore[no-any-return]


def _stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in sys.builtin_module_names or top in (
        "builtins", "__main__")


def _refuse_stdlib(target: str, spec: str, what: str) -> None:
    """A factory comes from the project's own files or an installed package, never from the
    standard library: ``os:system`` in a project file would otherwise run a shell command."""
    if target.endswith(".py") or "/" in target or "\\" in target:
        return
    top = target.split(".")[0]
    if _stdlib(top):
        raise UsageError(f"{what}: {spec!r} names the standard-library module {top!r}, which "
                         "builds no model: name a function in your own code "
                         "(path/to/file.py:function) or in an installed model package")


def make_model(spec: str, root: Path, what: str, kwargs: Mapping[str, Any] | None = None
               ) -> nn.Module:
    """Call the factory ``spec`` with ``kwargs``; it must return a ``torch.nn.Module``."""
    from torch import nn

    fn = load_factory(spec, root, what)
    if getattr(fn, "checkpoint_folder", None) is not None:  # its errors are one line already
        return fn(**dict(kwargs or {}))  # type: ignore[no-any-return]
    try:
        model = fn(**dict(kwargs or {}))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything the user's factory raises
        raise UsageError(f"{what}: the factory {spec} raised {type(exc).__name__}: "
                         f"{first_line(exc)}: fix the factory or its arguments") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(f"{what}: the factory {spec} returned a {type(model).__name__}, not a "
                         "torch.nn.Module: make it return the model")
    return model


@dataclass(frozen=True)
class OnnxInfo:
    """What edgekd needs to know about a user's ONNX model."""

    path: Path
    input_name: str
    input_shape: tuple[int | str | None, ...]
    input_dtype: str  # numpy dtype name
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int | str | None, ...], ...]
    opset: int


def _dims(value_info: Any) -> tuple[int | str | None, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in value_info.type.tensor_type.shape.dim)


# Input element types edgekd can feed (what the data and the project's declarations give).
FEEDABLE = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8",
            "bool")


def inspect_onnx(path: Path, what: str) -> OnnxInfo:
    """Read and check an ONNX model edgekd can feed: inputs of numeric types, outputs."""
    head = check_file(path, what, ".onnx", ", not a valid ONNX model: export it again")
    import onnx
    from onnx import external_data_helper, helper

    try:  # the external data is checked below, so a missing file gets its own message
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError for damaged files
        hint = looks_like(head)
        found = f"it looks like {hint}, not ONNX" if hint else "it may be truncated"
        raise UsageError(f"{what}: {path} is not a valid ONNX model ({first_line(exc)}): "
                         f"{found}; export it again (torch.onnx.export)") from exc
    for tensor in model.graph.initializer:
        if external_data_helper.uses_external_data(tensor):
            location = external_data_helper.ExternalDataInfo(tensor).location
            if not (path.parent / location).is_file():
                raise UsageError(f"{what}: {path} keeps its weights in {location}, which is "
                                 f"missing from {path.parent}: keep the .onnx file and its "
                                 "data file together")
    try:  # by path, so external data and models over 2 GB are checked too
        onnx.checker.check_model(str(path), full_check=False)
    except Exception as exc:  # noqa: BLE001 - ValidationError and friends
        raise UsageError(f"{what}: {path} is not a valid ONNX model ({first_line(exc)}): "
                         "export it again (torch.onnx.export)") from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if not inputs:
        raise UsageError(f"{what}: {path} has no inputs: export it again with its inputs")
    if not model.graph.output:
        raise UsageError(f"{what}: {path} has no outputs: export it again with its outputs")
    for value in inputs:  # float, integer (token ids, a sample rate) or bool (masks)
        elem = value.type.tensor_type.elem_type
        dtype = helper.tensor_dtype_to_np_dtype(elem).name if elem else "not a tensor"
        if dtype not in FEEDABLE:
            raise UsageError(f"{what}: {path}'s input {value.name!r} is {dtype}; edgekd feeds "
                             f"{', '.join(FEEDABLE)}: export the model with such inputs")
    dtype = helper.tensor_dtype_to_np_dtype(inputs[0].type.tensor_type.elem_type).name
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    return OnnxInfo(path=path, input_name=inputs[0].name, input_shape=_dims(inputs[0]),
                    input_dtype=dtype, output_names=tuple(o.name for o in model.graph.output),
                    output_shapes=tuple(_dims(o) for o in model.graph.output), opset=opset)


def onnx_session(path: Path, what: str) -> Any:
    """An ONNX Runtime session of ``path`` (CPU), or one line naming the op no runtime
    implements: a custom-domain op, or one newer than the installed ONNX Runtime."""
    import onnx
    import onnxruntime as ort

    from edgekd.common.quiet import quiet

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        with quiet(f"loading {path.name}"):
            return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/NotImplemented types
        graph = onnx.load(str(path), load_external_data=False).graph
        custom = sorted({f"{n.domain}:{n.op_type}" for n in graph.node
                         if n.domain not in ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")})
        found = (f"it uses the op{'s' if len(custom) > 1 else ''} {', '.join(custom[:3])} "
                 "from a custom domain, which no edgekd runtime implements" if custom else
                 f"ONNX Runtime cannot load it ({first_line(exc)})")
        raise UsageError(f"{what}: {path} cannot run: {found}: export it with standard ONNX "
                         "ops only") from exc


def fit_check(model: nn.Module, example: Any, what: str) -> None:
    """Run ``model`` once on ``example`` so a model that rejects the data's input shape fails
    here, in one line, not deep inside training or export."""
    import torch

    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as exc:  # noqa: BLE001 - any failure here is the user's model vs data
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{what} cannot run on inputs of shape {list(example.shape)} "
                         f"({type(exc).__name__}: {first}): make data.image_size / the data's "
                         "shape match what the model expects") from exc
