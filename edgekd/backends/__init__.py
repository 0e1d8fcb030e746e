"""Runtime backends: one module per runtime, listed in :data:`BACKENDS`, imported lazily.

Every backend module has the same few members:

- ``FORMAT`` (``onnx`` | ``openvino`` | ``tflite``) and ``SUFFIX`` of its artifacts;
- ``check(target)`` raises :class:`~edgekd.errors.RuntimeMissingError` when the runtime (or
  the converter it needs, or the execution provider a target asks for) is missing;
- ``export(source, out_dir)`` writes the FP32 and INT8 artifacts, returns ``{precision: path}``;
- ``load(path, threads, providers)`` returns a :class:`Runner`; it never imports torch;
- ``runtime_version()``.

Adding a backend is one module, one line in :data:`BACKENDS`, one test parameter.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgekd.errors import UsageError
from edgekd.settings.targets import RUNTIMES

if TYPE_CHECKING:
    from torch import nn

BACKENDS: dict[str, str] = {
    "onnxruntime": "edgekd.backends.onnxruntime",
    "openvino": "edgekd.backends.openvino",
    "tflite": "edgekd.backends.tflite",
}
assert tuple(BACKENDS) == RUNTIMES, "a target's runtimes are the backends listed here"


class Runner(Protocol):
    """A loaded artifact. ``run`` takes and returns float32 in the model's own layout."""

    runtime: str
    threads: int

    def run(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ExportSource:
    """What every backend may export from: the final PyTorch model and its ONNX forms.

    ONNX is the interchange format: ``onnx`` maps ``fp32`` and ``int8`` (QDQ, quantized with
    ONNX Runtime's tools) to files that the OpenVINO backend converts to IR.
    """

    model: nn.Module
    example: np.ndarray  # one preprocessed input, batch 1
    calibration: np.ndarray  # preprocessed calibration samples
    onnx: dict[str, Path]
    per_channel: bool = True
    stem: str = "student"  # artifact file names: <stem>_<precision><suffix>


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise UsageError(f"unknown runtime {name!r}; choose from {', '.join(BACKENDS)}")
    return importlib.import_module(BACKENDS[name])


def runtime_for_suffix(path: Path) -> str:
    """The runtime that runs an artifact, from its file name."""
    by_suffix = {".onnx": "onnxruntime", ".xml": "openvino", ".tflite": "tflite"}
    if path.suffix not in by_suffix:
        raise UsageError(f"{path}: cannot tell the runtime from the suffix {path.suffix!r}; "
                         f"expected one of {', '.join(by_suffix)}")
    return by_suffix[path.suffix]


def predict_batches(runner: Runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    # A model exported with a fixed batch (a user's ONNX file, often 1) takes that many.
    fixed = getattr(runner, "fixed_batch", None)
    size = fixed or batch_size
    if fixed and len(x) % fixed:
        raise UsageError(f"the model takes batches of exactly {fixed} and {len(x)} samples do "
                         "not divide into them: export it with a dynamic batch axis")
    return np.concatenate([runner.run(x[i:i + size]) for i in range(0, len(x), size)])
