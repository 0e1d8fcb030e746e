"""edgekd: distill, prune, quantize, export and verify PyTorch models for edge runtimes.

The public API is what ``__all__`` lists; everything else may move between releases.

- a whole build: :func:`build` (the ``edgekd build`` command, same options; models and
  data as files or as objects: ``build(teacher=nn.Module, student=nn.Module, data=(x, y))``);
- one step at a time (the ``edgekd quantize / export / verify / bench`` commands):
  :func:`quantize`, :func:`export`, :func:`verify`, :func:`bench`, each returning its
  figures (:class:`CheckedArtifact`); :class:`Progress` is what ``on_progress`` hears;
- lower-level pieces: :func:`to_onnx`, :func:`quantize_int8` (INT8 of an ONNX file, no
  check), :func:`verify_artifact`, :func:`run_bench` with :class:`BenchSpec`,
  :func:`budget_checks`;
- training pieces: :func:`train_model` (the training loop) with :class:`Schedule`,
  :class:`Distillation`, :func:`prune_model`, the built-in models and the demonstration data;
- settings: :class:`BuildConfig` and its sections, :func:`load_target`.

``import edgekd`` stays light (no torch): running and benchmarking artifacts must work on a
device that has only a runtime installed. Each name is imported from its room on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> the module that defines it (the rooms: edgekd/<room>/, see docs/architecture.md).
_PUBLIC: dict[str, str] = {
    "build": "edgekd.pipeline.api",
    "BuildResult": "edgekd.pipeline.run",
    "BuildConfig": "edgekd.settings.config",
    "TrainConfig": "edgekd.settings.config",
    "DistillConfig": "edgekd.settings.config",
    "PruneConfig": "edgekd.settings.config",
    "QuantConfig": "edgekd.settings.config",
    "BenchConfig": "edgekd.settings.config",
    "RobustnessConfig": "edgekd.settings.config",
    "Target": "edgekd.settings.targets",
    "load_target": "edgekd.settings.targets",
    "Dataset": "edgekd.inputs.dataset",
    "Split": "edgekd.inputs.dataset",
    "load_digits": "edgekd.inputs.digits",
    "default_calibration_file": "edgekd.settings.resources",
    "to_onnx": "edgekd.backends.from_torch",
    "get_backend": "edgekd.backends",
    "ExportSource": "edgekd.backends",
    "predict_batches": "edgekd.backends",
    "quantize": "edgekd.pipeline.steps",
    "export": "edgekd.pipeline.steps",
    "verify": "edgekd.pipeline.steps",
    "bench": "edgekd.pipeline.steps",
    "CheckedArtifact": "edgekd.pipeline.steps",
    "quantize_int8": "edgekd.compress.quantize",
    "ort_accuracy": "edgekd.compress.quantize",
    "prune_model": "edgekd.compress.prune",
    "verify_artifact": "edgekd.measure.verify",
    "run_bench": "edgekd.measure.bench",
    "BenchSpec": "edgekd.measure.bench",
    "budget_checks": "edgekd.report.gate",
    "load_report": "edgekd.report.reading",
    "train_model": "edgekd.train.loop",
    "Schedule": "edgekd.train.loop",
    "EpochReport": "edgekd.train.loop",
    "set_seed": "edgekd.train.loop",
    "accuracy": "edgekd.train.loop",
    "Distillation": "edgekd.train.distill",
    "LogitDistillation": "edgekd.train.distill",
    "teacher_cnn": "edgekd.train.models",
    "student_cnn": "edgekd.train.models",
    "mobilenet_v2": "edgekd.train.models",
    "count_params": "edgekd.train.models",
    "Progress": "edgekd.common.progress",
    "EdgekdError": "edgekd.errors",
    "UsageError": "edgekd.errors",
    "BuildError": "edgekd.errors",
}
__all__ = ["__version__", *_PUBLIC]


# A public name may not be the name of a room: importing edgekd.train (the folder) sets the
# attribute ``edgekd.train`` to the package, and the function of that name would be hidden.
# So the training loop is ``train_model``.
_ALIASES = {"train_model": "train"}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), _ALIASES.get(name, name))
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
