"""The user's models, loaded safely: factories named as ``module:function`` or
``file.py:function``, weights from safetensors or a PyTorch state dict, ONNX files checked.

Safe by default: weights are read with ``safetensors`` or ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers; a full pickle (which runs code from
the file while it loads) needs ``trust_pickle``. Paths from a project file stay inside the
project folder unless the user wrote them absolute. A factory is a plain function or class
from the project's files or an installed package, never the standard library (``os:system``
in a project file would run a shell command). Every problem is one line naming the
setting, the file, what is wrong and the fix. torch and onnx are imported on first use.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

# Checkpoint layouts of common trainers: the state dict sits under one of these keys.
_NESTED = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
# Key prefixes DDP / torch.compile / Lightning put in front of every parameter name.
_PREFIXES = ("module.", "_orig_mod.", "model.")
_SAVE = "save it with torch.save(model.state_dict(), ...) or as .safetensors"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _missing(what: str, path: Path) -> UsageError:
    return UsageError(f"{what}: {path} does not exist: check the path (relative paths start "
                      "at the project folder)")


def _check_file(path: Path, what: str, kind: str, empty: str | None) -> bytes:
    """The first bytes of ``path``, or one line saying why it is not a readable file."""
    try:
        if not path.exists():
            raise _missing(what, path)
        if path.is_dir():
            raise UsageError(f"{what}: {path} is a folder, not a file: name the {kind} file "
                             "in it")
        # Opened without blocking and checked on the open handle: a named pipe would block
        # the build forever, and a path swapped between a check and the open is caught too.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                kind_of = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket"
                           if stat.S_ISSOCK(mode) else "a device")
                raise UsageError(f"{what}: {path} is {kind_of}, not a regular file: edgekd "
                                 f"reads only regular files; give the {kind} file itself")
            head = f.read(16)
    except PermissionError as exc:
        raise UsageError(f"{what}: cannot read {path} (permission denied): fix its "
                         "permissions (chmod a+r) or run as a user who can read it") from exc
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path} ({exc.strerror or _first_line(exc)}): "
                         "check the file") from exc
    if not head and empty is not None:
        raise UsageError(f"{what}: {path} is empty{empty}")
    return head


def _looks_like(head: bytes) -> str | None:
    """What a file is by its first bytes, for hints when it was named as something else."""
    # A zip (torch.save since 1.6), or a pickle's PROTO opcode (the legacy format).
    protocol = head[1] if len(head) > 1 else 0
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and 2 <= protocol <= 5):
        return "a torch.save checkpoint (name it .pt)"
    if head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file (name it .safetensors)"
    return None


def resolve_path(value: str, root: Path, what: str, *, must_exist: bool = True) -> Path:
    """``value`` relative to the project folder ``root``; absolute paths as given. A relative
    path that leaves ``root`` (``..``, or a symlink pointing out) is refused."""
    if not str(value).strip():
        raise UsageError(f"{what} is empty: give a path (relative to the project folder {root})")
    path = Path(value).expanduser()
    if not path.is_absolute():
        root = root.resolve()
        try:
            path = (root / path).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise UsageError(f"{what}: {value} cannot be resolved ({_first_line(exc)}): fix "
                             "the path or the links on it") from exc
        if path != root and root not in path.parents:
            raise UsageError(f"{what}: {value} leaves the project folder {root}; give an "
                             "absolute path if you mean it")
    if must_exist and not path.exists():
        raise _missing(what, path)
    return path


def _import(target: str, root: Path, what: str) -> Any:
    """The module ``target`` names, a ``.py`` file or a dotted module. Its folder (the
    project folder for a dotted name) is on sys.path while it runs, so it can import its
    neighbours."""
    load: Callable[[], object]
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = resolve_path(target, root, what)
        _check_file(path, what, ".py", None)
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
                             f"{_first_line(exc)}: fix the module") from exc
        raise  # KeyboardInterrupt stays what it is
    finally:
        sys.path.remove(str(folder))


def load_factory(spec: str, root: Path, what: str) -> Callable[..., Any]:
    """The function ``spec`` names: ``package.module:function`` or ``file.py:function``."""
    target, sep, attr = spec.rpartition(":")
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
    try:
        model = fn(**dict(kwargs or {}))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - anything the user's factory raises
        raise UsageError(f"{what}: the factory {spec} raised {type(exc).__name__}: "
                         f"{_first_line(exc)}: fix the factory or its arguments") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(f"{what}: the factory {spec} returned a {type(model).__name__}, not a "
                         "torch.nn.Module: make it return the model")
    return model


def _unsafe_globals(path: Path, exc: BaseException) -> list[str]:
    """The Python globals a pickle names (what it would import and call), read without
    running it; empty when the file is merely damaged."""
    import torch

    try:  # the documented API; it reads zip checkpoints only
        return sorted(set(torch.serialization.get_unsafe_globals_in_checkpoint(path)))
    except Exception:  # noqa: BLE001 - legacy format or damaged: fall back to torch's message
        return sorted(set(re.findall(r"GLOBAL ([A-Za-z_][\w.]*)", str(exc))))


def _read_checkpoint(path: Path, what: str, trust_pickle: bool) -> Any:
    import pickle

    head = _check_file(path, what, "weights", ": save the weights again")
    hint = _looks_like(head)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as exc:  # noqa: BLE001 - SafetensorError for truncated/corrupt files
            found = f"it looks like {hint}" if hint and "safetensors" not in hint else \
                "it may be truncated; save it again"
            raise UsageError(f"{what}: {path} is not a readable safetensors file "
                             f"({_first_line(exc)}): {found}") from exc
    import torch

    damaged: Exception
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except pickle.UnpicklingError as exc:
        names = [] if trust_pickle else _unsafe_globals(path, exc)
        if names:
            raise UsageError(
                f"{what}: {path} is a full pickle, not plain weights (it names "
                f"{', '.join(names[:3])}; loading it could run code from the file): {_SAVE}, "
                "or pass --trust-pickle if you trust where it came from") from exc
        damaged = exc
    except Exception as exc:  # noqa: BLE001 - a damaged file fails anywhere in the unpickler
        damaged = exc
    found = f"it looks like {hint}" if hint and "safetensors" in hint else \
        "it may be truncated or corrupt, or not written by torch.save; save it again"
    raise UsageError(f"{what}: {path} is not a readable PyTorch checkpoint "
                     f"({type(damaged).__name__}): {found}") from damaged


def _state_dict(raw: Any, own: Mapping[str, Any], path: Path, what: str) -> dict[str, Any]:
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
    if not isinstance(raw, Mapping) or not raw:
        empty = "an empty " if isinstance(raw, Mapping) else "a "
        raise UsageError(f"{what}: {path} holds {empty}{type(raw).__name__}, not a state dict "
                         f"of tensors: {_SAVE}")
    bad = next(((k, v) for k, v in raw.items()
                if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise UsageError(f"{what}: {path} is not a state dict of tensors (its entry "
                         f"{bad[0]!r} is a {type(bad[1]).__name__}): {_SAVE}")
    state = dict(raw)
    for prefix in _PREFIXES:  # only when the model's own names lack it
        if all(k.startswith(prefix) for k in state) and not any(k in own for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def _dtype(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def load_weights(model: nn.Module, path: Path, what: str, *, trust_pickle: bool = False
                 ) -> None:
    """Load ``path`` into ``model`` strictly; every mismatch is named."""
    from torch.nn.parameter import UninitializedParameter

    own = model.state_dict()
    state = _state_dict(_read_checkpoint(path, what, trust_pickle), own, path, what)
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = [f"{len(keys)} {label} (first: {keys[0]})"
             for label, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
    if parts:
        raise UsageError(f"{what}: {path} does not fit the model: {', '.join(parts)}: "
                         "load the weights saved from this architecture (and its *_args)")
    for key, mine in own.items():  # in the model's order: the first layer that differs
        value = state[key]
        if not isinstance(mine, UninitializedParameter) and mine.shape != value.shape:
            raise UsageError(f"{what}: {path} does not fit the model: {key} has shape "
                             f"{list(value.shape)} in the file but {list(mine.shape)} in "
                             "the model: check the factory's arguments (*_args)")
        # load_state_dict casts silently: int8 (quantized) weights would become float
        # parameters holding the raw integers, a model at chance that builds green.
        if mine.dtype.is_floating_point and not (value.dtype.is_floating_point
                                                 or value.dtype.is_complex):
            raise UsageError(f"{what}: {path} holds {key} as {_dtype(value.dtype)} but the "
                             f"model's parameter is {_dtype(mine.dtype)}: save the float "
                             "weights (not quantized or integer ones) of this model")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UsageError(f"{what}: {path} does not fit the model ({_first_line(exc)}): "
                         "load the weights saved from this architecture") from exc


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


def inspect_onnx(path: Path, what: str) -> OnnxInfo:
    """Read and check an ONNX model edgekd can feed: one float32 input, outputs."""
    head = _check_file(path, what, ".onnx", ", not a valid ONNX model: export it again")
    import onnx
    from onnx import external_data_helper, helper

    try:  # the external data is checked below, so a missing file gets its own message
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError for damaged files
        hint = _looks_like(head)
        found = f"it looks like {hint}, not ONNX" if hint else "it may be truncated"
        raise UsageError(f"{what}: {path} is not a valid ONNX model ({_first_line(exc)}): "
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
        raise UsageError(f"{what}: {path} is not a valid ONNX model ({_first_line(exc)}): "
                         "export it again (torch.onnx.export)") from exc
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        names = f" ({', '.join(i.name for i in inputs)})" if inputs else ""
        raise UsageError(f"{what}: {path} has {len(inputs)} inputs{names}; edgekd feeds one "
                         "tensor: export a model with a single input")
    if not model.graph.output:
        raise UsageError(f"{what}: {path} has no outputs: export it again with its outputs")
    elem = inputs[0].type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(elem).name if elem else "not a tensor"
    if dtype != "float32":
        raise UsageError(f"{what}: {path}'s input {inputs[0].name!r} is {dtype}; edgekd "
                         "feeds float32 samples: export the model with a float32 input")
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
                 f"ONNX Runtime cannot load it ({_first_line(exc)})")
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
