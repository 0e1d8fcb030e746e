"""Static INT8 post-training quantization of ONNX models with ONNX Runtime's own tools, and
the accuracy-aware mixed-precision search around it.

``quantize`` pre-processes the FP32 model (shape inference + graph optimisation, which folds
BatchNorm), calibrates activation ranges once (min-max, percentile or entropy; ORT's
calibrators), writes a QDQ model, and, given a validation split and a budget
(``QuantConfig.max_accuracy_drop``), measures the INT8 model in ONNX Runtime. When it loses
more than allowed, each quantizable layer is tried in float on its own (``nodes_to_exclude``),
and the layers whose exclusion helps most are kept in float, one more at a time, until the
model is within budget. OpenVINO converts the same QDQ file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import edgekd
from edgekd.common.cache import CacheDir, digest_of
from edgekd.common.progress import Tracker, tracking
from edgekd.errors import BuildError
from edgekd.inputs.dataset import Feeds
from edgekd.settings.config import QuantConfig

log = logging.getLogger(__name__)

INPUT_NAME = "input"
# Ops whose weights ORT quantizes: the "layers" the mixed-precision search may keep in float
# (and Gather from a weight table: an embedding).
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
WEIGHT_MATMULS = ("MatMul", "Gemm")
ATTENTION_OPS = {"Attention", "MultiHeadAttention", "GroupQueryAttention"}
# Calibration samples run per collect_data call: ORT's histogram calibrators (percentile,
# entropy) otherwise hold every intermediate tensor of every sample in memory at once
# (~10 GB for MobileNetV2 at 224x224 and 200 samples).
CALIBRATION_CHUNK = 16


class CalibrationReader:
    """ORT's CalibrationDataReader over preprocessed samples, one sample per ``get_next``,
    with the ``__len__`` / ``set_range`` that ORT's strided calibration (``CalibStridedMinMax``)
    uses to collect a chunk at a time."""

    def __init__(self, samples: np.ndarray | Feeds, input_name: str = INPUT_NAME,
                 tracker: Tracker | None = None) -> None:
        # Every input of the model, by name (fixed and state inputs with each sample).
        self.samples = Feeds.of(samples, input_name)
        self.tracker = tracker  # counts the samples read (progress events)
        self.set_range(0, len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, end_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        if self.tracker is not None:
            self.tracker.advance()
        return self.samples.batch(self._next - 1, self._next)

    def rewind(self) -> None:
        self.set_range(0, len(self.samples))


@dataclass(frozen=True)
class Judge:
    """How the accuracy-aware search judges an INT8 model on the validation split, by the
    task's own figure: top-1 agreement (or accuracy with labels) for a classifier, within
    ``max_drop`` points of FP32; the worst sample's cosine with FP32 for an output of at
    least ``COSINE_ELEMENTS`` elements, at least ``min_cosine``; else the worst |error| as a
    fraction of the FP32 output's range, at most ``max_error``."""

    classifier: bool
    max_drop: float = 1.0
    min_cosine: float = 0.99
    max_error: float = 0.2


# As edgekd.measure.verify.MIN_COSINE_ELEMENTS: from 8 elements on, cosine measures a direction.
COSINE_ELEMENTS = 8


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

    def to_dict(self) -> dict[str, Any]:
        """The report's ``quantization`` fields (schema 1.x); the recipe's data is in
        :meth:`recipe_dict`."""
        return {"path": self.path.name, "method": self.method,
                "float_layers": list(self.float_layers), "fp32_accuracy": self.fp32_accuracy,
                "int8_accuracy": self.int8_accuracy, "steps": list(self.steps),
                "cached": self.cached}

    def recipe_dict(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "recipe_reason": self.why, "search_figure": self.figure,
                "search": list(self.trials), "keep_float": list(self.keep_float)}

    def meta(self) -> dict[str, Any]:  # what the stage cache keeps
        return {**self.to_dict(), **self.recipe_dict()}


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
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgekd.common.quiet import quiet

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[config.method]
    types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    n = len(calibration)
    chunk = max(d for d in range(1, min(CALIBRATION_CHUNK, n) + 1) if n % d == 0)
    extra: dict[str, Any] = {"CalibStridedMinMax": chunk, "CalibPercentile": config.percentile,
                             "ActivationSymmetric": act[1]}
    ops = None
    if recipe == "transformer":
        ops, extra["MatMulConstBOnly"] = list(WEIGHT_MATMULS), True
    graph = onnx.load(str(pre), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    name = next(i.name for i in graph.input if i.name not in inits)  # a user's model: any name
    # Progress: calibration reads the samples once; later calls reuse the ranges in ``cache``.
    counting = (tracking("calibrate onnxruntime", n, "sample") if not cache.exists()
                else contextlib.nullcontext())
    try:
        with quiet("onnxruntime.quantization"), counting as tracker:
            quantize_static(str(pre), str(out), CalibrationReader(calibration, name, tracker),
                            quant_format=QuantFormat.QDQ, per_channel=config.per_channel,
                            op_types_to_quantize=ops,
                            reduce_range=reduce_range(config, act[0]),
                            activation_type=types[act[0]],
                            weight_type=types[config.weight_type], calibrate_method=method,
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
    # Shape annotations from pre-processing are re-derived by every runtime at load time.
    model = onnx.load(str(out))
    model.graph.ClearField("value_info")
    onnx.save_model(model, str(out))
    return out


def _first_output(model_path: Path, x: np.ndarray | Feeds, threads: int = 2) -> np.ndarray:
    from edgekd.backends import predict_all
    from edgekd.backends.onnxruntime import load

    feeds = Feeds.of(x)
    runner = load(model_path, threads)
    if len(feeds) == 0:
        return np.zeros((0,), np.float32)
    if len(runner.input_names) == 1 and len(feeds.specs) == 1:  # the name as the file has it
        feeds = Feeds((replace(feeds.specs[0], name=runner.input_names[0]),),
                      {runner.input_names[0]: next(iter(feeds.arrays.values()))})
    return predict_all(runner, feeds.specs, feeds.arrays)[0]


def ort_accuracy(model_path: Path, x: np.ndarray | Feeds, y: np.ndarray | None,
             reference: np.ndarray | None = None, threads: int = 2
             ) -> tuple[float, np.ndarray]:
    """(accuracy, logits) in ONNX Runtime; without labels, accuracy is top-1 agreement with
    ``reference`` logits."""
    logits = _first_output(model_path, x, threads)
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
    outputs = _first_output(model_path, feeds.select(~bad_x))
    bad = ~np.isfinite(outputs.astype(np.float64)).reshape(len(outputs), -1).all(1)
    if bad_x.any() or bad.any():
        what = ("samples" if bad_x.any() else "FP32 model's outputs on the calibration samples")
        raise BuildError(f"cannot calibrate INT8: the {what} are not finite (NaN or inf in "
                         f"{int(bad_x.sum() or bad.sum())} of {len(calibration)}): check the "
                         "model's weights, the training (did it diverge?) and the data")


def judged(outputs: np.ndarray, reference: np.ndarray, y: np.ndarray | None, judge: Judge,
           fp32_accuracy: float | None = None) -> dict[str, Any]:
    """The task's figure for ``outputs`` against the FP32 ``reference`` (first output, all
    validation samples): ``figure``, ``value``, ``holds`` (within the budget) and ``rank``
    (higher is better: how the search orders its trials)."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    if judge.classifier:
        truth = y if y is not None else b.argmax(1)
        acc = float((a.argmax(1) == truth).mean())
        base = fp32_accuracy if fp32_accuracy is not None else 1.0
        return {"figure": "accuracy" if y is not None else "top1_agreement",
                "value": round(acc, 6), "holds": base - acc <= judge.max_drop / 100 + 1e-9,
                "rank": (acc, -float(np.mean((a - b) ** 2)))}
    if a.shape[1] >= COSINE_ELEMENTS:
        tiny = np.finfo(np.float64).tiny
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = (a * b).sum(1) / np.maximum(na * nb, tiny)
        cos[(na == 0) & (nb == 0)] = 1.0
        worst, mean = float(cos.min()), float(cos.mean())
        return {"figure": "cosine", "value": round(worst, 6), "mean": round(mean, 6),
                "holds": worst >= judge.min_cosine, "rank": (worst, mean)}
    finite = b[np.isfinite(b)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    scale = spread if spread > 0 else (float(np.abs(finite).max()) if finite.size else 0.0) or 1.0
    rel = float(np.abs(a - b).max() / scale) if len(a) else 0.0
    return {"figure": "output_error", "value": round(rel, 6), "holds": rel <= judge.max_error,
            "rank": (-rel,)}


def resolve_keep_float(model_path: Path, names: tuple[str, ...]) -> list[str]:
    """``quant.keep_float`` as node names of the model: each name must be a node (or the
    weight of one, e.g. a PyTorch parameter name); an unknown name is one error that lists
    the closest node names."""
    import difflib

    import onnx

    from edgekd.errors import UsageError

    graph = onnx.load(str(model_path), load_external_data=False).graph
    nodes = [n.name for n in graph.node if n.name]
    by_weight = {i: n.name for n in graph.node for i in n.input[1:2] or n.input[:1]}
    out: list[str] = []
    for name in names:
        if name in nodes:
            out.append(name)
        elif name in by_weight or name + ".weight" in by_weight:
            out.append(by_weight.get(name) or by_weight[name + ".weight"])
        else:
            close = difflib.get_close_matches(name, nodes + list(by_weight), n=5, cutoff=0.5)
            raise UsageError(f"quant.keep_float: no node {name!r} in the model"
                             + (f"; close matches: {', '.join(close)}" if close else "")
                             + f"; the quantizable layers are {', '.join(layers(model_path)[:8])}"
                             + (", ..." if len(layers(model_path)) > 8 else "")
                             + " (the report's quantization steps list node names)")
    return list(dict.fromkeys(out))


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
        keep = resolve_keep_float(pre, config.keep_float)
        recipe, why = recipe_for(config, is_transformer(pre), tensorrt)
        if recipe != "dynamic":
            _require_finite(pre, calibration)
        cache = Path(tmp) / "ranges.json"
        made = partial(Quantized, method=config.method, keep_float=tuple(keep))
        _write(recipe, pre, out, calibration, config, act, cache, keep)
        if validation is None or judge is None:
            return made(out, float_layers=tuple(keep), recipe=recipe, why=why)
        x, y = validation
        fp_out = _first_output(pre, x)
        fp_acc = (float((fp_out.argmax(1) == y).mean()) if judge.classifier and y is not None
                  else 1.0 if judge.classifier else None)

        def trial(path: Path, how: str, kept: list[str]) -> dict[str, Any]:
            got = judged(_first_output(path, x), fp_out, y, judge, fp_acc)
            trials.append({"recipe": how, "float_layers": list(kept),
                           **{k: v for k, v in got.items() if k != "rank"}})
            return got

        def done(how: str, kept: list[str], got: dict[str, Any], reason: str) -> Quantized:
            acc = got["value"] if judge.classifier else None
            return made(out, float_layers=tuple(kept), fp32_accuracy=fp_acc, int8_accuracy=acc,
                        steps=tuple({"float_layers": t["float_layers"],
                                     "accuracy": t["value"] if judge.classifier else None}
                                    for t in trials), recipe=how, why=reason,
                        figure=got["figure"], trials=tuple(trials))

        trials: list[dict[str, Any]] = []
        got = trial(out, recipe, keep)
        if got["holds"]:
            return done(recipe, keep, got, why)
        missed = f"{recipe} INT8 missed the budget ({_said(got, judge)})"
        if recipe == "transformer" and config.recipe == "auto":
            dynamic = _write("dynamic", pre, Path(tmp) / "dynamic.onnx", calibration, config,
                             act, cache, keep)
            got = trial(dynamic, "dynamic", keep)
            if got["holds"]:
                shutil.copyfile(dynamic, out)
                return done("dynamic", keep, got, f"{missed}; dynamic INT8 of the weight "
                            f"MatMuls holds it ({_said(got, judge)})")
        candidates = [n for n in layers(pre, recipe) if n not in keep]
        probe = Path(tmp) / "trial.onnx"
        score: dict[str, tuple[float, ...]] = {}
        for name in candidates:  # sensitivity: this one layer in float, all others INT8
            _write(recipe, pre, probe, calibration, config, act, cache, [*keep, name])
            score[name] = judged(_first_output(probe, x), fp_out, y, judge, fp_acc)["rank"]
        ranked = sorted(candidates, key=lambda n: score[n], reverse=True)
        log.info("%s; layer sensitivity: %s", missed,
                 json.dumps({n: [round(v, 4) for v in score[n]] for n in ranked}))
        kept = list(keep)
        for name in ranked:
            kept.append(name)
            _write(recipe, pre, out, calibration, config, act, cache, kept)
            got = trial(out, recipe, kept)
            if got["holds"]:
                return done(recipe, kept, got, f"{missed}; {len(kept) - len(keep)} layer(s) "
                            f"kept in float by the search ({_said(got, judge)})")
    raise BuildError(
        f"INT8 misses its budget on the validation split even with all {len(candidates)} "
        f"quantizable layers in float ({_said(got, judge)}): keep the model FP32 for the "
        "runtimes that fail (quant.skip_int8), try quant.recipe = \"dynamic\" or another "
        "quant.method, or relax the budget (quant.max_accuracy_drop, quant.min_cosine)")


def _said(got: dict[str, Any], judge: Judge) -> str:
    """A trial's figure against its limit, in words."""
    if got["figure"] == "cosine":
        return (f"worst cosine {got['value']:.4f}, mean {got['mean']:.4f}, "
                f"quant.min_cosine {judge.min_cosine}")
    if got["figure"] == "output_error":
        return f"output error {got['value']:.2%} of its range, max_output_error {judge.max_error}"
    return (f"{got['figure'].replace('_', ' ')} {got['value']:.2%}, quant.max_accuracy_drop "
            f"{judge.max_drop} points")


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
                             keep_float=tuple(meta["keep_float"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged: quantize again
            log.warning("ignoring unreadable INT8 cache entry %s: %s", entry, exc)
    q = quantize(fp32, out, calibration, config, validation=validation, judge=judge,
                 tensorrt=tensorrt)
    with entries.write("int8", entry_key) as tmp:
        shutil.copyfile(out, tmp / "model.onnx")
        (tmp / "meta.json").write_text(json.dumps(q.meta()), encoding="utf-8")
    return q
