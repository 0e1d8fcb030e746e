"""Static (and dynamic) INT8 post-training quantization of ONNX models with ONNX Runtime's
own tools; the accuracy-aware search around it is :mod:`edgekd.compress.int8_search`.

``quantize`` pre-processes the FP32 model (shape inference + graph optimisation, which folds
BatchNorm), picks the recipe (:func:`recipe_for`), calibrates activation ranges once (ORT's
calibrators) and writes a QDQ model, which the search then keeps within budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import edgekd
from edgekd.common.cache import CacheDir, digest_of
from edgekd.common.progress import tracking
from edgekd.compress.int8_search import Judge, first_output, resolve_keep_float, search
from edgekd.compress.int8_search import judged as judged  # re-exported for older callers
from edgekd.compress.ort_calibration import (
    Calibration,
    CalibrationReader,
    strip_shapes,
)
from edgekd.errors import BuildError
from edgekd.inputs.dataset import Feeds
from edgekd.settings.config import QuantConfig

log = logging.getLogger(__name__)

# Ops whose weights ORT quantizes: the "layers" the mixed-precision search may keep in float
# (and Gather from a weight table: an embedding).
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WEIGHT_MATMULS = ("MatMul", "Gemm")
ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}



@dataclass(frozen=True)
class Quantized:
    """An INT8 model and how it was made. Accuracies are fractions on the validation split
    (top-1 agreement with the FP32 model where no labels were given; None for a model
    judged by cosine or output error). ``recipe``: ``static`` (every op ORT quantizes, QDQ),
    ``transformer`` (static QDQ of the weight MatMul/Gemm only, see :func:`recipe_for`) or
    ``dynamic`` (weights INT8, activations quantized at run time); ``why`` says why it was
    chosen; ``trials`` each model the search measured, with its figure."""

    path: Path
    method: str
    float_layers: tuple[str, ...] = ()
    fp32_accuracy: float | None = None
    int8_accuracy: float | None = None
    steps: tuple[dict[str, Any], ...] = ()  # {"float_layers": [...], "accuracy": ...} each
    cached: bool = False  # taken from the stage cache of an earlier build
    recipe: str = "static"
    why: str = ""
    figure: str = ""  # top1_agreement | accuracy | cosine | output_error; "" unchecked
    trials: tuple[dict[str, Any], ...] = ()
    keep_float: tuple[str, ...] = ()  # the project's quant.keep_float (in float_layers too)
    skip_int8: tuple[str, ...] = ()  # quant.skip_int8: runtimes that ship FP32 only

    def to_dict(self) -> dict[str, Any]:
        """The report's ``quantization`` fields (schema 1.4: with :meth:`recipe_dict`)."""
        return {"path": self.path.name, "method": self.method,
                "float_layers": list(self.float_layers), "fp32_accuracy": self.fp32_accuracy,
                "int8_accuracy": self.int8_accuracy, "steps": list(self.steps),
                "cached": self.cached, **self.recipe_dict()}

    def recipe_dict(self) -> dict[str, Any]:
        """How the recipe was chosen and searched (the report's quantization fields since 1.4)."""
        return {"recipe": self.recipe, "recipe_reason": self.why, "search_figure": self.figure,
                "search": list(self.trials), "keep_float": list(self.keep_float),
                "skip_int8": list(self.skip_int8)}

    def meta(self) -> dict[str, Any]:  # what the stage cache keeps
        return self.to_dict()


def activation_type(config: QuantConfig, *, tensorrt: bool = False) -> str:
    """``auto``: unsigned activations for CPUs (ORT's U8S8 kernels; measured 1.8-1.9x faster
    than S8S8 on a VNNI Xeon, benchmarks/int8_speed.py), signed symmetric for TensorRT, whose
    explicit quantization accepts only zero-point 0."""
    if config.activation_type != "auto":
        return config.activation_type
    return "int8" if tensorrt else "uint8"


def reduce_range(config: QuantConfig, activations: str) -> bool:
    """7-bit weights where the CPU kernels could saturate (see ``QuantConfig``): with uint8
    activations (ONNX Runtime's and OpenVINO's u8 x s8 CPU path) unless set."""
    if config.reduce_range is not None:
        return config.reduce_range
    return activations == "uint8"


def layers(model_path: Path, recipe: str = "static") -> list[str]:
    """Names of the nodes ORT quantizes with weights (conv, matmul, gemm, embedding
    lookups), in graph order; for the ``transformer`` and ``dynamic`` recipes only the
    MatMul/Gemm with a weight (the ones those recipes quantize)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    tables = {i.name for i in graph.initializer}
    if recipe in ("transformer", "dynamic"):
        return [n.name for n in graph.node if n.op_type in WEIGHT_MATMULS
                and len(n.input) > 1 and n.input[1] in tables]
    return [n.name for n in graph.node if n.op_type in LAYER_OPS
            or n.op_type == "Gather" and n.input and n.input[0] in tables]


def is_transformer(model_path: Path) -> bool:
    """An attention graph: fused attention ops, or MatMul + Softmax with a layer norm
    (LayerNormalization, or the ReduceMean form older exporters write)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    return bool(ops & ATTENTION_OPS) or {"MatMul", "Softmax"} <= ops and bool(
        ops & {"LayerNormalization", "SimplifiedLayerNormalization", "ReduceMean"})


def recipe_for(config: QuantConfig, transformer: bool, tensorrt: bool) -> tuple[str, str]:
    """(recipe, why). For a transformer graph, static INT8 of every op ORT quantizes is
    what destroyed a sentence encoder's embeddings (issue 16: worst cosine 0.10): the
    ``transformer`` recipe quantizes only the MatMul/Gemm with a weight (per-channel,
    ``MatMulConstBOnly``) and leaves LayerNorm, Softmax, GELU/Erf, the embedding Gather,
    the residual Adds and the activation x activation MatMuls of attention in float
    (measured in tests/test_transformer_int8.py and the report of issue 16)."""
    if config.recipe != "auto":
        return config.recipe, f"quant.recipe = \"{config.recipe}\""
    if transformer and not tensorrt:
        return "transformer", ("transformer graph (MatMul + Softmax + layer norm): static INT8 "
                               "of the weight MatMul/Gemm only, per-channel; LayerNorm, "
                               "Softmax, GELU, embedding Gather kept in float")
    return "static", ("not a transformer graph" if not transformer else
                      "TensorRT: explicit QDQ of every op")


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's recommended pre-processing: shape inference and graph optimisation."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.common.quiet import quiet

    with quiet("onnxruntime.quantization"):
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


def _write(recipe: str, pre: Path, out: Path, calibration: np.ndarray | Feeds,
           config: QuantConfig, act: tuple[str, bool], cache: Path, exclude: list[str]) -> Path:
    if recipe == "dynamic":
        return _write_dynamic(pre, out, config, exclude)
    return _write_qdq(pre, out, calibration, config, act, cache, exclude, recipe)


def _write_dynamic(pre: Path, out: Path, config: QuantConfig, exclude: list[str]) -> Path:
    """Dynamic INT8 of the weight MatMuls (ORT's ``quantize_dynamic``): INT8 weights,
    activations quantized per tensor at run time from their actual range, so no calibrated
    range can clip an outlier. Gemm stays float (ORT has no dynamic Gemm)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgekd.common.quiet import quiet

    try:
        with quiet("onnxruntime.quantization"):
            quantize_dynamic(str(pre), str(out), op_types_to_quantize=["MatMul"],
                             per_channel=config.per_channel,
                             reduce_range=reduce_range(config, "uint8"),
                             weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                             extra_options={"MatMulConstBOnly": True})
    except (MemoryError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT's quantizer fails in its own types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BuildError(f"dynamic INT8 (quant.recipe = \"dynamic\") failed inside ONNX "
                         f"Runtime's quantizer ({type(exc).__name__}: {first}): set quant.recipe "
                         "= \"transformer\" or \"static\" (--debug shows the trace)") from exc
    model = onnx.load(str(out))
    model.graph.ClearField("value_info")
    onnx.save_model(model, str(out))
    return out


def _write_qdq(pre: Path, out: Path, calibration: np.ndarray | Feeds, config: QuantConfig,
               act: tuple[str, bool], cache: Path, exclude: list[str],
               recipe: str = "static") -> Path:
    """One quantize_static call; ``act`` is (activation type, symmetric). The first call
    with ``cache`` calibrates and stores the ranges there; later calls (other layers kept in
    float) reuse them. ``recipe`` ``transformer``: only the MatMul/Gemm with a weight."""
    from onnxruntime.quantization import QuantFormat, quantize_static

    from edgekd.common.quiet import quiet

    c = Calibration.of(pre, calibration, config)
    n = len(calibration)
    extra: dict[str, Any] = {"CalibStridedMinMax": c.chunk,
                             "CalibPercentile": config.percentile,
                             "ActivationSymmetric": act[1]}
    ops = None
    if recipe == "transformer":
        ops, extra["MatMulConstBOnly"] = list(WEIGHT_MATMULS), True
    # Progress: calibration reads the samples once; later calls reuse the ranges in ``cache``.
    counting = (tracking("calibrate onnxruntime", n, "sample") if not cache.exists()
                else contextlib.nullcontext())
    try:
        with quiet("onnxruntime.quantization"), counting as tracker:
            quantize_static(str(pre), str(out),
                            CalibrationReader(calibration, c.input_name, tracker),
                            quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                            op_types_to_quantize=ops,
                            reduce_range=reduce_range(config, act[0]),
                            activation_type=c.types[act[0]],
                            weight_type=c.types[config.weight_type], calibrate_method=c.method,
                            nodes_to_exclude=exclude, extra_options=extra,
                            calibration_cache_path=cache)
    except (MemoryError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT's calibrators fail in their own types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        other = " or ".join(f'"{m}"' for m in ("minmax", "percentile", "entropy")
                            if m != config.method)
        if "is not finite" in first and config.method != "minmax":
            # The histogram calibrators bin each activation between its min and max: an
            # activation that overflows to inf (exp, a division) inside the model has no bins.
            raise BuildError(f"INT8 calibration with quant.method = \"{config.method}\" "
                             "failed: an activation inside the model is infinite on the "
                             f"calibration samples ({first}): keep the model's intermediate "
                             "values finite (clamp before exp, guard divisions), or set "
                             "quant.method = \"minmax\"") from exc
        raise BuildError(f"INT8 calibration with quant.method = \"{config.method}\" failed "
                         f"inside ONNX Runtime ({type(exc).__name__}: {first}): set "
                         f"quant.method = {other}, or quant.recipe = \"dynamic\" (no "
                         "calibration) (--debug shows the trace)") from exc
    return strip_shapes(out)


def ort_accuracy(model_path: Path, x: np.ndarray | Feeds, y: np.ndarray | None,
             reference: np.ndarray | None = None, threads: int = 2
             ) -> tuple[float, np.ndarray]:
    """(accuracy, logits) in ONNX Runtime; without labels, accuracy is top-1 agreement with
    ``reference`` logits."""
    logits = first_output(model_path, x, threads)
    if y is not None:
        truth = y
    else:  # no labels: agreement with the reference (the FP32 model: itself, 100 %)
        truth = (np.asarray(reference) if reference is not None else logits).argmax(1)
    return float((logits.argmax(1) == truth).mean()), logits


def _require_finite(model_path: Path, calibration: np.ndarray | Feeds) -> None:
    """Calibrating on NaN/inf activations fails deep in ORT ("scale issue"): refuse first."""
    feeds = Feeds.of(calibration)
    bad_x = np.zeros(len(feeds), bool)
    for arr in feeds.arrays.values():
        bad_x |= ~np.isfinite(arr.astype(np.float64)).reshape(len(arr), -1).all(1)
    outputs = first_output(model_path, feeds.select(~bad_x))
    bad = ~np.isfinite(outputs.astype(np.float64)).reshape(len(outputs), -1).all(1)
    if bad_x.any() or bad.any():
        what = ("samples" if bad_x.any() else "FP32 model's outputs on the calibration samples")
        raise BuildError(f"cannot calibrate INT8: the {what} are not finite (NaN or inf in "
                         f"{int(bad_x.sum() or bad.sum())} of {len(calibration)}): check the "
                         "model's weights, the training (did it diverge?) and the data")


def quantize(fp32: Path, out: Path, calibration: np.ndarray | Feeds, config: QuantConfig, *,
             validation: tuple[np.ndarray | Feeds, np.ndarray | None] | None = None,
             judge: Judge | None = None, tensorrt: bool = False) -> Quantized:
    """INT8 model of ``fp32``, calibrated on ``calibration`` (all of it; the caller picks
    ``config.calibration_samples``), with the recipe :func:`recipe_for` picks and
    ``config.keep_float`` in float. With ``validation`` (inputs, labels or None) and a
    ``judge`` (default: a classifier within ``config.max_accuracy_drop``), a miss is
    searched: a transformer's static INT8 falls back to dynamic INT8 first, then layers are
    kept in float, most helpful first, until the task's figure holds."""
    # TensorRT's explicit quantization needs zero-point 0 on activations.
    act = (activation_type(config, tensorrt=tensorrt), tensorrt)
    if judge is None and config.max_accuracy_drop is not None:
        judge = Judge(classifier=True, max_drop=config.max_accuracy_drop)
    with tempfile.TemporaryDirectory() as tmp:
        pre = preprocess(fp32, Path(tmp) / "pre.onnx")
        keep = resolve_keep_float(pre, config.keep_float,
                                  layers(pre) if config.keep_float else [])
        recipe, why = recipe_for(config, is_transformer(pre), tensorrt)
        if recipe != "dynamic":
            _require_finite(pre, calibration)
        cache = Path(tmp) / "ranges.json"

        def write(how: str, path: Path, exclude: list[str]) -> Path:
            return _write(how, pre, path, calibration, config, act, cache, exclude)

        write(recipe, out, keep)
        made = partial(Quantized, out, config.method, keep_float=tuple(keep),
                       skip_int8=config.skip_int8)
        if validation is None or judge is None:
            return made(float_layers=tuple(keep), recipe=recipe, why=why)
        found = search(write, pre, out, Path(tmp), validation, judge, recipe=recipe, why=why,
                       keep=keep, candidates=[n for n in layers(pre, recipe) if n not in keep],
                       try_dynamic=recipe == "transformer" and config.recipe == "auto")
        return made(float_layers=found.float_layers, fp32_accuracy=found.fp32_accuracy,
                    int8_accuracy=found.int8_accuracy, steps=found.steps(),
                    recipe=found.recipe, why=found.why, figure=found.figure,
                    trials=found.trials)


def quantize_int8(fp32: Path, out: Path, calibration: np.ndarray | Feeds, *,
                  per_channel: bool = True, config: QuantConfig | None = None) -> Path:
    """Static INT8 QDQ model of ``fp32`` without the accuracy check (which needs a validation
    split): :func:`quantize` with default settings."""
    config = config or QuantConfig(per_channel=per_channel)
    return quantize(fp32, out, calibration, config).path


def _parts(x: np.ndarray | Feeds) -> tuple[object, ...]:
    """What identifies calibration or validation samples in a cache key (one array as
    before, so single-input cache entries keep their keys)."""
    return (x,) if isinstance(x, np.ndarray) else x.digest_parts()


def quantize_cached(cache: Path, key: str, fp32: Path, out: Path,
                    calibration: np.ndarray | Feeds, config: QuantConfig, *,
                    validation: tuple[np.ndarray | Feeds, np.ndarray | None] | None = None,
                    judge: Judge | None = None, tensorrt: bool = False,
                    fresh: bool = False) -> Quantized:
    """:func:`quantize`, cached under ``cache`` like a training stage (the accuracy-aware
    search runs the model many times). ``key`` identifies the FP32 model; the entry's key
    adds the settings, the calibration and validation samples and ONNX Runtime's version
    (its quantization tools write the model)."""
    import onnxruntime

    entries = CacheDir(cache, fresh=fresh)
    entry_key = digest_of(edgekd.__version__, onnxruntime.__version__, key, asdict(config),
                          tensorrt, asdict(judge) if judge else None, *_parts(calibration),
                          *(_parts(validation[0]) + (validation[1],) if validation else ()),
                          length=16)
    entry = entries.entry("int8", entry_key)
    if entry is not None:
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
            shutil.copyfile(entry / "model.onnx", out)
            return Quantized(out, meta["method"], tuple(meta["float_layers"]),
                             meta["fp32_accuracy"], meta["int8_accuracy"], tuple(meta["steps"]),
                             cached=True, recipe=meta["recipe"], why=meta["recipe_reason"],
                             figure=meta["search_figure"], trials=tuple(meta["search"]),
                             keep_float=tuple(meta["keep_float"]),
                             skip_int8=tuple(meta["skip_int8"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged: quantize again
            log.warning("ignoring unreadable INT8 cache entry %s: %s", entry, exc)
    q = quantize(fp32, out, calibration, config, validation=validation, judge=judge,
                 tensorrt=tensorrt)
    with entries.write("int8", entry_key) as tmp:
        shutil.copyfile(out, tmp / "model.onnx")
        (tmp / "meta.json").write_text(json.dumps(q.meta()), encoding="utf-8")
    return q
