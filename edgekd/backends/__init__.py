"""Runtime backends: one module per runtime, listed in :data:`BACKENDS`, imported lazily,
each satisfying the :class:`Backend` protocol:

- ``FORMAT`` (``onnx`` | ``openvino`` | ``tflite``) and ``SUFFIX`` of its artifacts;
- ``QUANTIZER``: who makes its INT8 artifact and which ``quant.*`` settings that tool ignores;
- ``check(target)`` raises :class:`~edgekd.errors.RuntimeMissingError` when the runtime (or
  the converter it needs, or the execution provider a target asks for) is missing;
- ``export(source, out_dir)`` writes the FP32 and INT8 artifacts, returns ``{precision: path}``;
- ``load(path, threads, providers)`` returns a :class:`Runner`; it never imports torch;
- ``inference_precision(path)``: the precision the runtime runs an artifact at with its
  *default* settings, as a deployer's plain load would (``fp32``, ``bf16``, ``int8 + fp32``,
  ``int8 (QDQ)``...), for the report;
- ``runtime_version()``.

The runtime modules never import torch; the PyTorch side of export (``torch.onnx``,
LiteRT-Torch) is :mod:`edgekd.backends.from_torch`, imported only when a build exports.
Adding a backend is one module, its name in ``edgekd.settings.targets.RUNTIMES`` (which
:data:`BACKENDS` maps to the module), one test parameter.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import Feeds, InputSpec, OutputSpec, feed, join_batches
from edgekd.settings.config import QuantConfig
from edgekd.settings.targets import RUNTIMES

if TYPE_CHECKING:
    from edgekd.settings.targets import Target

log = logging.getLogger(__name__)

# One module per runtime a target may name (the names are data, in edgekd.settings.targets).
BACKENDS: dict[str, str] = {name: f"edgekd.backends.{name}" for name in RUNTIMES}


class Runner(Protocol):
    """A loaded artifact. ``run_all`` takes every input by name (in its own dtype: float,
    int64 token ids, bool masks) and returns every output, in the model's order; ``run``
    is the one-input, first-output shorthand (float32)."""

    runtime: str
    threads: int
    input_names: list[str]
    output_names: list[str]

    def run(self, x: np.ndarray) -> np.ndarray: ...

    def run_all(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class ExportSource:
    """What every backend may export from: the final PyTorch model and its ONNX forms.

    ONNX is the interchange format: ``onnx`` maps ``fp32`` and ``int8`` (QDQ, quantized with
    ONNX Runtime's tools) to files that the OpenVINO backend converts to IR.
    """

    model: Any | None  # torch.nn.Module; None for a finished ONNX model (no TFLite then)
    example: np.ndarray | Feeds  # one preprocessed input, batch 1 (every input by name)
    calibration: np.ndarray | Feeds  # preprocessed calibration samples
    onnx: dict[str, Path]
    per_channel: bool = True
    stem: str = "student"  # artifact file names: <stem>_<precision><suffix>


@dataclass(frozen=True)
class Quantizer:
    """Who makes a runtime's INT8 artifact. ``when``: ``before export`` (an INT8 ONNX model
    that the runtime converts) or ``during conversion`` (the converter quantizes).
    ``ignores``: the ``quant.*`` settings that tool has no counterpart for."""

    tool: str
    when: str
    ignores: tuple[str, ...] = ()


class Backend(Protocol):
    """What every module in :data:`BACKENDS` provides (a module satisfies it structurally)."""

    FORMAT: str
    SUFFIX: str
    QUANTIZER: Quantizer

    def check(self, target: Target) -> None: ...

    def export(self, source: ExportSource, out_dir: Path) -> dict[str, Path]: ...

    def load(self, path: Path, threads: int,
             providers: tuple[Any, ...] = ("CPUExecutionProvider",)) -> Runner: ...

    def inference_precision(self, path: Path) -> str: ...

    def runtime_version(self) -> str: ...


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, tuple(BACKENDS), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(f"unknown runtime {name!r}; {hint}choose from {', '.join(BACKENDS)}")
    return cast(Backend, importlib.import_module(BACKENDS[name]))


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


def predict_all(runner: Runner, specs: Sequence[InputSpec],
                arrays: Mapping[str, np.ndarray], batch_size: int = 256,
                outputs: Sequence[OutputSpec] | None = None) -> list[np.ndarray]:
    """Every output of ``runner`` on every sample of ``arrays`` (the data inputs by name),
    in batches, with the fixed and state inputs of ``specs`` fed alongside each batch; each
    output batch-first (``outputs`` say where an output's batch axis is)."""
    n = len(next(iter(arrays.values())))
    fixed = getattr(runner, "fixed_batch", None)
    size = fixed or batch_size
    if fixed and n % fixed:
        raise UsageError(f"the model takes batches of exactly {fixed} and {n} samples do "
                         "not divide into them: export it with a dynamic batch axis")
    parts = [runner.run_all(feed(specs, arrays, i, i + size)) for i in range(0, n, size)]
    return join_batches(parts, outputs)


def quantizers(runtimes: Sequence[str], config: QuantConfig) -> dict[str, dict[str, Any]]:
    """Who quantizes for each runtime, and which ``quant.*`` settings it applies or ignores
    (a setting left at its default is listed too: the user may wonder)."""
    names = list(asdict(config))
    out = {}
    for runtime in runtimes:
        who = get_backend(runtime).QUANTIZER
        out[runtime] = {"tool": who.tool, "when": who.when,
                        "applies": [n for n in names if n not in who.ignores],
                        "ignored": [n for n in names if n in who.ignores]}
        changed = [n for n in who.ignores if getattr(config, n) != getattr(QuantConfig(), n)]
        if changed:
            log.warning("%s: %s quantizes %s and ignores %s", runtime, who.tool, who.when,
                        ", ".join(f"quant.{n}" for n in changed))
    return out
