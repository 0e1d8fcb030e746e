"""The user's models, loaded safely: factories named as ``module:function`` or
``file.py:function``, weights from safetensors or a PyTorch state dict, ONNX files checked.

Safe by default: weights are read with ``safetensors`` or ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers; a full pickle (which runs code from
the file while it loads) needs ``trust_pickle``. Paths from a project file stay inside the
project folder unless the user wrote them absolute. Every problem is one line naming the
setting, the file, what is wrong and the fix.
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
from typing import Any

from edgekd.errors import UsageError

# Checkpoint layouts of common trainers: the state dict sits under one of these keys.
_NESTED = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
# Key prefixes DDP / torch.compile / Lightning put in front of every parameter name.
_PREFIXES = ("module.", "_orig_mod.", "model.")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def resolve_path(value: str, root: Path, what: str, *, must_exist: bool = True) -> Path:
    """``value`` relative to the project folder ``root``; absolute paths as given. A relative
    path that leaves ``root`` (``..``, or a symlink pointing out) is refused."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        root = root.resolve()
        path = (root / path).resolve()
        if path != root and root not in path.parents:
            raise UsageError(f"{what}: {value} leaves the project folder {root}; give an "
                             "absolute path if you mean it")
    if must_exist and not path.exists():
        raise UsageError(f"{what}: {path} does not exist: check the path (relative paths "
                         "start at the project folder)")
    return path


def _import_file(path: Path, what: str) -> Any:
    name = "edgekd_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{what}: {path} is not a Python file: name a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    # The file's folder goes on sys.path while it runs, so it can import its neighbours.
    sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise UsageError(f"{what}: syntax error in {exc.filename}:{exc.lineno}: {exc.msg}: "
                         "fix the file") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        sys.modules.pop(name, None)
        raise UsageError(f"{what}: importing {path} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}: fix the file") from exc
    finally:
        sys.path.remove(str(path.parent))
    return module


def _import_module(name: str, root: Path, what: str) -> Any:
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"{what}: no module named {exc.name!r}: install it, or give the "
                         "factory as path/to/file.py:function") from exc
    except SyntaxError as exc:
        raise UsageError(f"{what}: syntax error in {exc.filename}:{exc.lineno}: {exc.msg}: "
                         "fix the file") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise UsageError(f"{what}: importing {name} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}: fix the module") from exc
    finally:
        sys.path.remove(str(root))


def load_factory(spec: str, root: Path, what: str) -> Callable[..., Any]:
    """The function ``spec`` names: ``package.module:function`` or ``file.py:function``."""
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise UsageError(f"{what}: {spec!r} names no function: write it as "
                         "path/to/file.py:function or package.module:function")
    if target.endswith(".py") or "/" in target or "\\" in target:
        module = _import_file(resolve_path(target, root, what), what)
    else:
        module = _import_module(target, root, what)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        found = [n for n, v in vars(module).items()
                 if callable(v) and not n.startswith("_") and not inspect.ismodule(v)
                 and getattr(v, "__module__", None) == module.__name__][:6]
        raise UsageError(f"{what}: {target} has no function {attr!r}"
                         + (f"; it has: {', '.join(found)}" if found else "")
                         + ": fix the name after the ':'")
    return fn  # type: ignore[no-any-return]


def make_model(spec: str, root: Path, what: str, kwargs: Mapping[str, Any] | None = None
               ) -> Any:
    """Call the factory ``spec`` with ``kwargs``; it must return a ``torch.nn.Module``."""
    from torch import nn

    fn = load_factory(spec, root, what)
    try:
        model = fn(**dict(kwargs or {}))
    except Exception as exc:  # noqa: BLE001 - anything the user's factory raises
        raise UsageError(f"{what}: the factory {spec} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}: fix the factory or its arguments") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(f"{what}: the factory {spec} returned a {type(model).__name__}, not a "
                         "torch.nn.Module: return the model")
    return model


def _read_checkpoint(path: Path, what: str, trust_pickle: bool) -> Any:
    import pickle

    import torch

    if path.is_dir():
        raise UsageError(f"{what}: {path} is a folder: name the weights file in it")
    try:
        if path.stat().st_size == 0:
            raise UsageError(f"{what}: {path} is empty: save the weights again")
        with path.open("rb"):
            pass
    except PermissionError as exc:
        raise UsageError(f"{what}: cannot read {path} (permission denied): fix its "
                         "permissions") from exc
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # noqa: BLE001 - SafetensorError for truncated/corrupt files
            raise UsageError(f"{what}: {path} is not a readable safetensors file "
                             f"({_first_line(exc)}): it may be truncated; save it again") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        # weights_only refuses a pickle that names Python globals (classes, functions): that
        # is a full pickle. Anything else it cannot unpickle is a damaged file.
        if trust_pickle or "global" not in str(exc).lower():
            raise UsageError(f"{what}: {path} is not a readable PyTorch checkpoint (it is "
                             "damaged, or not written by torch.save): save the weights "
                             "again") from exc
        raise UsageError(
            f"{what}: {path} is a full pickle, not plain weights (loading it would run code "
            "from the file): save it with torch.save(model.state_dict(), ...) or as "
            ".safetensors, or pass --trust-pickle if you trust where it came from") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged file fails anywhere in the unpickler
        raise UsageError(f"{what}: {path} is not a readable PyTorch checkpoint "
                         f"({_first_line(exc)}): it may be truncated or corrupt; save it "
                         "again") from exc


def _state_dict(raw: Any, path: Path, what: str) -> dict[str, Any]:
    import torch
    from torch import nn

    if isinstance(raw, nn.Module):  # a whole pickled model (only with trust_pickle)
        raw = raw.state_dict()
    for _ in range(3):  # {"state_dict": {...}}, {"model": {...}}, ...
        if isinstance(raw, Mapping) and not any(isinstance(v, torch.Tensor)
                                                for v in raw.values()):
            inner = next((raw[k] for k in _NESTED if isinstance(raw.get(k), Mapping | nn.Module)),
                         None)
            if inner is None:
                break
            raw = inner.state_dict() if isinstance(inner, nn.Module) else inner
    if not isinstance(raw, Mapping) or not raw or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in raw.items()):
        raise UsageError(f"{what}: {path} holds a {type(raw).__name__}, not a state dict of "
                         "tensors: save it with torch.save(model.state_dict(), ...)")
    state = dict(raw)
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: Any, path: Path, what: str, *, trust_pickle: bool = False) -> None:
    """Load ``path`` into ``model`` strictly; every mismatch is named."""
    state = _state_dict(_read_checkpoint(path, what, trust_pickle), path, what)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise UsageError(f"{what}: {path.name} does not fit the model: {', '.join(parts)}: "
                         "load the weights saved from this architecture (and its *_args)")
    for key, value in state.items():
        if tuple(own[key].shape) != tuple(value.shape) and not _lazy(own[key]):
            raise UsageError(f"{what}: {path.name} does not fit the model: {key} has shape "
                             f"{list(value.shape)} in the file but {list(own[key].shape)} in "
                             "the model: check the factory's arguments (*_args)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"{what}: {path.name} does not fit the model ({_first_line(exc)}): "
                         "load the weights saved from this architecture") from exc


def _lazy(tensor: Any) -> bool:
    from torch.nn.parameter import UninitializedParameter

    return isinstance(tensor, UninitializedParameter)


@dataclass(frozen=True)
class OnnxInfo:
    path: Path
    input_name: str
    input_shape: tuple[int | str | None, ...]
    input_dtype: str
    output_names: tuple[str, ...]
    output_shapes: tuple[tuple[int | str | None, ...], ...]
    opset: int


def _dims(value_info: Any) -> tuple[int | str | None, ...]:
    dims = value_info.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in dims)


def inspect_onnx(path: Path, what: str) -> OnnxInfo:
    """Read and check an ONNX model edgekd can feed: one float32 input, outputs."""
    import onnx
    from onnx import helper

    if path.is_dir():
        raise UsageError(f"{what}: {path} is a folder: name the .onnx file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except FileNotFoundError as exc:
        raise UsageError(f"{what}: {path} refers to external data that is missing "
                         f"({_first_line(exc)}): keep the .onnx file and its data files "
                         "together") from exc
    except Exception as exc:  # noqa: BLE001 - DecodeError, ValidationError, OSError...
        raise UsageError(f"{what}: {path} is not a valid ONNX model ({_first_line(exc)}): "
                         "export it again (torch.onnx.export)") from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UsageError(f"{what}: {path.name} has {len(inputs)} inputs "
                         f"({', '.join(i.name for i in inputs)}); edgekd feeds one tensor: "
                         "export a model with a single input")
    if not model.graph.output:
        raise UsageError(f"{what}: {path.name} has no outputs: export it again")
    elem = inputs[0].type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(elem).name if elem else "unknown"
    if dtype != "float32":
        raise UsageError(f"{what}: {path.name}'s input {inputs[0].name!r} is {dtype}; edgekd "
                         "feeds float32 samples: export the model with a float32 input")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                default=0)
    return OnnxInfo(path=path, input_name=inputs[0].name, input_shape=_dims(inputs[0]),
                    input_dtype=dtype, output_names=tuple(o.name for o in model.graph.output),
                    output_shapes=tuple(_dims(o) for o in model.graph.output), opset=opset)
