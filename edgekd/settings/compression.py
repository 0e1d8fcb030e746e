"""The compression sections of a build's settings: ``[prune]`` (magnitude and structured
pruning, its fine-tune) and ``[quant]`` (post-training INT8, its search, the transformer
recipe, quantization-aware distillation). Re-exported by :mod:`edgekd.settings.config`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from edgekd.settings.typed import OneOf


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


PRUNE_METHODS = ("unstructured", "structured")
PRUNE_SCHEDULES = ("oneshot", "gradual")
PruneMethod = Annotated[str, OneOf(PRUNE_METHODS, "prune method")]
PruneSchedule = Annotated[str, OneOf(("auto", *PRUNE_SCHEDULES), "prune schedule")]


@dataclass(frozen=True)
class PruneConfig:
    """Magnitude pruning, then a distillation fine-tune (see :mod:`edgekd.compress.prune`).

    ``method``: ``unstructured`` zeroes the ``sparsity`` fraction of all conv/linear weights
    (smaller gzip, same latency on dense kernels); ``structured`` removes the ``sparsity``
    fraction of each layer's channels (smaller and faster everywhere). ``schedule``
    (unstructured only): ``oneshot`` masks once before the fine-tune; ``gradual`` follows Zhu &
    Gupta's cubic ramp during it, updating the masks every ``frequency`` optimizer steps;
    ``auto`` (the default) is ``gradual`` for unstructured and ``oneshot`` for structured.
    """

    method: PruneMethod = "unstructured"
    schedule: PruneSchedule = "auto"
    sparsity: float = 0.5
    frequency: int = 10
    finetune_epochs: int = 10
    lr: float = 1e-3

    def __post_init__(self) -> None:
        _check(self.method in PRUNE_METHODS,
               f"unknown prune method {self.method!r}; allowed: {', '.join(PRUNE_METHODS)}")
        _check(self.schedule in ("auto", *PRUNE_SCHEDULES),
               f"unknown prune schedule {self.schedule!r}; allowed: auto, "
               f"{', '.join(PRUNE_SCHEDULES)}")
        if self.schedule == "auto":  # measured best for unstructured; structured is one-shot
            object.__setattr__(self, "schedule",
                               "oneshot" if self.method == "structured" else "gradual")
        _check(0.0 <= self.sparsity < 1.0, f"sparsity must be in [0, 1), got {self.sparsity}")
        _check(self.frequency >= 1, f"prune frequency must be >= 1 step, got {self.frequency}")
        _check(self.finetune_epochs >= 0,
               f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        _check(self.lr > 0, f"prune lr must be > 0, got {self.lr}")
        _check(not (self.method == "structured" and self.schedule == "gradual"),
               "structured pruning is one-shot (removing channels changes the shapes the "
               "optimizer holds): set prune.schedule = \"oneshot\"")
        _check(not (self.schedule == "gradual" and self.finetune_epochs == 0),
               "gradual pruning happens during the fine-tune: set prune.finetune_epochs >= 1 "
               "or prune.schedule = \"oneshot\"")


QUANT_METHODS = ("minmax", "percentile", "entropy")
QUANT_RECIPES = ("auto", "static", "transformer", "dynamic")
# The same names as edgekd.settings.targets.RUNTIMES (quant.skip_int8).
INT8_RUNTIMES = ("onnxruntime", "openvino", "tflite")
QuantMethod = Annotated[str, OneOf(QUANT_METHODS, "quant method")]


@dataclass(frozen=True)
class QuantConfig:
    """Static INT8 post-training quantization (ONNX Runtime's tools; see edgekd.compress.quantize).

    ``method``: how activation ranges are calibrated (``percentile`` keeps ``percentile`` %
    of each tensor's values, ``entropy`` minimises KL divergence). ``activation_type``
    ``auto`` is ``uint8`` on CPUs and symmetric ``int8`` for TensorRT. ``equalize``: cross-
    layer equalisation of conv/linear pairs before export. ``max_accuracy_drop`` (points on
    the validation split, ``None`` = unchecked): layers are kept in float until INT8 is
    within it. ``reduce_range`` (None = auto: on with ``uint8`` activations) quantizes weights
    to 7 bits: ONNX Runtime's u8 x s8 kernels on x86 CPUs without VNNI (AVX2, AVX-512F) add
    pairs of products in saturating 16-bit lanes, and full-range weights overflow them. A
    recurrent cell's INT8 output was off by 41 % of its range on such a CPU and by 3 % with
    7-bit weights (tests/test_model_io.py); on VNNI and ARM it costs almost nothing.
    Defaults measured with benchmarks/calibration.py.
    """

    calibration_samples: int = 200
    method: QuantMethod = "minmax"
    percentile: float = 99.999
    per_channel: bool = True
    activation_type: str = "auto"
    weight_type: str = "int8"
    equalize: bool = False
    max_accuracy_drop: float | None = 1.0
    reduce_range: bool | None = None
    # Transformer INT8 (see edgekd.compress.quantize): ``recipe`` auto | static |
    # transformer | dynamic; ``keep_float``: ONNX node names kept in float; ``min_cosine``:
    # the search's worst-sample cosine for embedding-like outputs (None: the build's
    # min_cosine); ``skip_int8``: runtimes that ship FP32 only (no INT8 artifact).
    recipe: str = "auto"
    keep_float: tuple[str, ...] = ()
    min_cosine: float | None = None
    skip_int8: tuple[str, ...] = ()
    # Quantization-aware distillation (edgekd.compress.qat): ``qat`` "auto" fine-tunes the
    # fake-quantized student against its FP32 self when all-INT8 misses the budget, true
    # always, false never; ``qat_epochs`` epochs over the training split at ``qat_lr``.
    # Off by default until it recovers reliably: measured 25-50 % recovery on one case and
    # worse on others, and on a near-chance classifier it shipped INT8 whose top-1 left
    # the FP32 model's (92 % agreement) while its accuracy rose.
    qat: bool | str = False
    qat_epochs: int = 3
    qat_lr: float = 1e-4

    def __post_init__(self) -> None:
        _check(self.qat in (True, False, "auto"),
               f"quant.qat must be true, false or \"auto\", got {self.qat!r}")
        _check(self.qat_epochs >= 1, f"quant.qat_epochs must be >= 1, got {self.qat_epochs}")
        _check(0 < self.qat_lr <= 1, f"quant.qat_lr must be in (0, 1], got {self.qat_lr}")
        _check(self.recipe in QUANT_RECIPES, f"quant.recipe must be one of "
               f"{', '.join(QUANT_RECIPES)}, got {self.recipe!r}")
        object.__setattr__(self, "keep_float", tuple(self.keep_float))  # TOML gives lists
        object.__setattr__(self, "skip_int8", tuple(self.skip_int8))
        _check(all(isinstance(n, str) and n for n in self.keep_float),
               f"quant.keep_float must be a list of ONNX node names, got {self.keep_float!r}")
        _check(all(r in INT8_RUNTIMES for r in self.skip_int8),
               f"quant.skip_int8 must list runtimes among {', '.join(INT8_RUNTIMES)}, got "
               f"{list(self.skip_int8)!r}")
        _check(self.min_cosine is None or -1.0 <= self.min_cosine <= 1.0,
               f"quant.min_cosine must be in [-1, 1] or unset, got {self.min_cosine}")
        _check(self.calibration_samples >= 1,
               f"calibration_samples must be >= 1, got {self.calibration_samples}")
        _check(self.method in QUANT_METHODS,
               f"quant method must be one of {', '.join(QUANT_METHODS)}, got {self.method!r}")
        _check(90.0 <= self.percentile <= 100.0,
               f"percentile must be in [90, 100], got {self.percentile}")
        _check(self.activation_type in ("auto", "int8", "uint8"),
               f"activation_type must be one of auto, int8, uint8, got {self.activation_type!r}")
        _check(self.weight_type in ("int8", "uint8"),
               f"weight_type must be one of int8, uint8, got {self.weight_type!r}")
        _check(self.max_accuracy_drop is None or self.max_accuracy_drop >= 0,
               f"max_accuracy_drop must be >= 0 points or None, got {self.max_accuracy_drop}")


# The same bounds as edgekd.measure.bench.BenchSpec's (settings may not import measure).
