"""TFLite (LiteRT) backend: conversion with LiteRT-Torch (:mod:`edgekd.backends.from_torch`),
and an interpreter runner that accepts ``ai-edge-litert`` or ``tflite-runtime``.

Who quantizes: LiteRT-Torch's PT2E quantizer, *during* conversion from PyTorch, calibrated on
the same samples (``quant.calibration_samples``) with ``quant.per_channel``; it observes
min-max ranges itself, so ``quant.method``, ``percentile``, ``activation_type``,
``weight_type`` and the accuracy-aware search (``max_accuracy_drop``) do not apply to it. The
report says so (``quantization.by_runtime``).

The INT8 model is full-integer: weights per-channel INT8, activations INT8, and the model's
input and output tensors INT8 too (XNNPACK runs it end to end in integer). The runner
quantizes inputs and dequantizes outputs with the tensors' own scale and zero point, so
callers always pass and get float32.

Token-id encoders: integer inputs (ids, masks) are never observed or quantized (see
:func:`edgekd.backends.from_torch.to_tflite`): they stay integer inputs of both files, which
LiteRT-Torch declares int32 for int64 ids; the runner casts int64 feeds to them (values out
of range are an error, never wrapped), as the device worker does (``edgekd.device.feeds``).
Ops computed from them (position ids, the additive attention mask) run in float.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.backends import ExportSource, Quantizer
from edgekd.errors import BuildError, RuntimeMissingError

if TYPE_CHECKING:
    from edgekd.settings.targets import Target

FORMAT = "tflite"
SUFFIX = ".tflite"
# LiteRT-Torch quantizes while converting from PyTorch, with its own min-max observers and
# symmetric INT8: the calibration samples, per_channel and equalize apply; the rest does not.
QUANTIZER = Quantizer("LiteRT-Torch PT2E quantizer (full-integer INT8)", "during conversion",
                      ignores=("method", "percentile", "activation_type", "weight_type",
                               "max_accuracy_drop", "reduce_range"))
_INSTALL = "pip install ai-edge-litert (or tflite-runtime on a device with numpy<2)"


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeMissingError(f"no TFLite runtime is installed: {_INSTALL}") from exc
    return Interpreter


def runtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def check(target: Target) -> None:
    _interpreter_class()
    # Looked up, not imported: importing litert_torch imports torch, jax and transformers.
    if importlib.util.find_spec("litert_torch") is None:
        raise RuntimeMissingError("litert-torch is not installed, so TFLite models cannot be "
                                  "converted: pip install 'edgekd[litert]'")


def export(source: ExportSource, out_dir: Path) -> dict[str, Path]:
    """FP32 and (when the source has an INT8 form) full-integer INT8 ``.tflite`` files,
    converted from the PyTorch model by LiteRT-Torch (:mod:`edgekd.backends.from_torch`)."""
    from edgekd.backends.from_torch import to_tflite

    if source.model is None:
        raise BuildError("TFLite is converted from the PyTorch model, and this build has none "
                         "(a finished ONNX model): leave tflite out of runtimes")
    fp32 = out_dir / f"{source.stem}_fp32{SUFFIX}"
    int8 = out_dir / f"{source.stem}_int8{SUFFIX}" if "int8" in source.onnx else None
    to_tflite(source.model, source.example, fp32, int8, calibration=source.calibration,
              per_channel=source.per_channel)
    return {"fp32": fp32} if int8 is None else {"fp32": fp32, "int8": int8}


class TfliteRunner:
    runtime = "tflite"

    def __init__(self, path: Path, threads: int) -> None:
        interpreter_class = _interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BuildError(f"{path}: the TFLite interpreter cannot load it ({exc}); re-export "
                             "the model or check the file is complete") from exc
        self.threads = threads
        # LiteRT-Torch names a model's positional inputs args_0, args_1, ... in forward's
        # order, inputs given by name (several inputs: edgekd.backends.from_torch) by their
        # names, in the signature's alphabetical order, and its outputs output_0, ...;
        # tensor indices need not follow either.
        by_name = {d["name"]: d for d in self.interpreter.get_input_details()}
        out_by_name = {d["name"]: d for d in self.interpreter.get_output_details()}
        signature = next(iter(self.interpreter.get_signature_list().values()), None)
        runner = (self.interpreter.get_signature_runner() if signature else None)
        if runner is not None and signature is not None:
            ins, outs = runner.get_input_details(), runner.get_output_details()
            self._names = sorted(signature["inputs"], key=_arg_order)
            self._inputs = [ins[n] for n in self._names]
            self._outputs = [outs[n] for n in sorted(signature["outputs"], key=_arg_order)]
        else:
            self._inputs = list(by_name.values())
            self._names = list(by_name)
            self._outputs = list(out_by_name.values())
        self.input_names = [str(d["name"]) for d in self._inputs]
        self.output_names = [str(d["name"]) for d in self._outputs]
        self.input = self._inputs[0]
        self.output = self._outputs[0]
        self.batch = int(self.input["shape"][0]) if len(self.input["shape"]) else 1
        # Converted models have a static batch: callers feed batches of it (a state with
        # its batch on another axis is then made with that batch, edgekd.backends.feed).
        self.fixed_batch = self.batch

    @staticmethod
    def _quantized(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
        dtype = detail["dtype"]
        scale, zero = detail["quantization"]
        if dtype != np.float32 and np.issubdtype(dtype, np.integer) and scale:
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        elif np.issubdtype(dtype, np.integer) and np.asarray(x).dtype.kind in "iu":
            # Token ids and masks: LiteRT-Torch makes int64 inputs int32; cast, never wrap.
            info, x = np.iinfo(dtype), np.asarray(x)
            if x.size and (x.min() < info.min or x.max() > info.max):
                raise BuildError(f"input {detail['name']} takes {np.dtype(dtype).name} and "
                                 f"is given values in {x.min()}..{x.max()}: keep token ids "
                                 f"within {info.min}..{info.max}")
        return np.asarray(x).astype(dtype)

    @staticmethod
    def _float(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
        scale, zero = detail["quantization"]
        if detail["dtype"] != np.float32 and scale:
            return (y.astype(np.float32) - zero) * np.float32(scale)
        return np.array(y)

    def _invoke_all(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        for x, detail in zip(xs, self._inputs, strict=True):
            self.interpreter.set_tensor(detail["index"], self._quantized(x, detail))
        self.interpreter.invoke()
        return [self._float(self.interpreter.get_tensor(d["index"]), d) for d in self._outputs]

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._invoke_all([x])[0], dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        # Converted models have a static batch; feed larger batches in model-sized slices.
        if len(x) == self.batch:
            return self._invoke(x)
        if len(x) % self.batch:
            raise BuildError(f"batch of {len(x)} does not divide the model's batch {self.batch}")
        return np.concatenate([self._invoke(x[i:i + self.batch])
                               for i in range(0, len(x), self.batch)])

    def run_all(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """``feed`` by name where the signature names the inputs as the model does (inputs
        exported by name), else in its own order (forward's: args_0, args_1, ...)."""
        if set(feed) == set(self._names):
            feed = {n: feed[n] for n in self._names}
        xs = [np.asarray(v) for v in feed.values()]
        batched = [x for x, d in zip(xs, self._inputs, strict=True) if len(d["shape"])]
        n = len(batched[0]) if batched else self.batch
        if n == self.batch:
            return self._invoke_all(xs)
        parts = []
        for i in range(0, n, self.batch):
            parts.append(self._invoke_all([x[i:i + self.batch] if len(d["shape"]) and
                                           len(x) == n else x
                                           for x, d in zip(xs, self._inputs, strict=True)]))
        return [np.concatenate([p[k] for p in parts]) for k in range(len(parts[0]))]

    def ops(self) -> list[str]:
        """Operator names as the interpreter will execute them (``DELEGATE`` = XNNPACK)."""
        return [d["op_name"] for d in self.interpreter._get_ops_details()]


def inference_precision(path: Path) -> str:
    """The precision the TFLite interpreter (XNNPACK) runs ``path`` at by default, from the
    types of the tensors its operators compute: ``"int8"`` (full-integer), ``"int8 + fp32"``
    (some operators in float), ``"fp16"``, else ``"fp32"`` (FP16 *weights* alone are
    dequantized to fp32 when the model loads)."""
    interpreter_class = _interpreter_class()
    module = importlib.import_module(interpreter_class.__module__)
    try:  # the model's own operators, not one XNNPACK node that hides them
        interpreter = interpreter_class(
            model_path=str(path), experimental_op_resolver_type=(
                module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise BuildError(f"{path}: the TFLite interpreter cannot load it ({exc}); re-export "
                         "the model or check the file is complete") from exc
    tensors = {d["index"]: np.dtype(d["dtype"]) for d in interpreter.get_tensor_details()}
    computed = {tensors[i] for op in interpreter._get_ops_details()
                for i in op["outputs"] if i in tensors}
    integer = any(t in (np.dtype(np.int8), np.dtype(np.uint8)) for t in computed)
    if integer:
        return "int8 + fp32" if np.dtype(np.float32) in computed else "int8"
    return "fp16" if np.dtype(np.float16) in computed else "fp32"


def _arg_order(name: str) -> tuple[int, str]:
    """``output_10`` after ``output_9``."""
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def load(path: Path, threads: int, providers: tuple[str, ...] = ()) -> TfliteRunner:
    return TfliteRunner(path, threads)
