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
"""

from __future__ import annotations

import importlib.util
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
                               "max_accuracy_drop"))
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
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(dtype))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        # Converted models have a static batch; feed larger batches in model-sized slices.
        if len(x) == self.batch:
            return self._invoke(x)
        if len(x) % self.batch:
            raise BuildError(f"batch of {len(x)} does not divide the model's batch {self.batch}")
        return np.concatenate([self._invoke(x[i:i + self.batch])
                               for i in range(0, len(x), self.batch)])

    def ops(self) -> list[str]:
        """Operator names as the interpreter will execute them (``DELEGATE`` = XNNPACK)."""
        return [d["op_name"] for d in self.interpreter._get_ops_details()]


def load(path: Path, threads: int, providers: tuple[str, ...] = ()) -> TfliteRunner:
    return TfliteRunner(path, threads)
