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
class Quantized:
    """An INT8 QDQ model and how it was made. Accuracies are fractions on the validation
    split (top-1 agreement with the FP32 model where no labels were given)."""

    path: Path
    method: str
    float_layers: tuple[str, ...] = ()
    fp32_accuracy: float | None = None
    int8_accuracy: float | None = None
    steps: tuple[dict[str, Any], ...] = ()  # {"float_layers": [...], "accuracy": ...} each
    cached: bool = False  # taken from the stage cache of an earlier build

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = self.path.name
        out["float_layers"] = list(self.float_layers)
        out["steps"] = list(self.steps)
        return out


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


def layers(model_path: Path) -> list[str]:
    """Names of the nodes ORT quantizes with weights (conv, matmul, gemm, embedding
    lookups), in graph order."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    tables = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in LAYER_OPS
            or n.op_type == "Gather" and n.input and n.input[0] in tables]


def preprocess(fp32: Path, out: Path) -> Path:
    """ORT's recommended pre-processing: shape inference and graph optimisation."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgekd.common.quiet import quiet

    with quiet("onnxruntime.quantization"):
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=True)
    return out


def _write_qdq(pre: Path, out: Path, calibration: np.ndarray | Feeds, config: QuantConfig,
               act: tuple[str, bool], cache: Path, exclude: list[str]) -> Path:
    """One quantize_static call; ``act`` is (activation type, symmetric). The first call
    with ``cache`` calibrates and stores the ranges there; later calls (other layers kept in
    float) reuse them."""
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
                         f"quant.method = {other} (--debug shows the trace)") from exc
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


def quantize(fp32: Path, out: Path, calibration: np.ndarray | Feeds, config: QuantConfig, *,
             validation: tuple[np.ndarray | Feeds, np.ndarray | None] | None = None,
             tensorrt: bool = False) -> Quantized:
    """Static INT8 QDQ model of ``fp32``, calibrated on ``calibration`` (all of it; the caller
    picks ``config.calibration_samples``). With ``validation`` (inputs, labels or None) and
    ``config.max_accuracy_drop``, layers are kept in float until the drop is within budget."""
    # TensorRT's explicit quantization needs zero-point 0 on activations.
    act = (activation_type(config, tensorrt=tensorrt), tensorrt)
    with tempfile.TemporaryDirectory() as tmp:
        pre = preprocess(fp32, Path(tmp) / "pre.onnx")
        _require_finite(pre, calibration)
        cache = Path(tmp) / "ranges.json"
        _write_qdq(pre, out, calibration, config, act, cache, [])
        if validation is None or config.max_accuracy_drop is None:
            return Quantized(out, config.method)
        x, y = validation
        fp_acc, fp_logits = ort_accuracy(pre, x, y)
        q_acc, _ = ort_accuracy(out, x, y, fp_logits)
        steps: list[dict[str, Any]] = [{"float_layers": [], "accuracy": round(q_acc, 6)}]
        budget = config.max_accuracy_drop / 100
        if fp_acc - q_acc <= budget:
            return Quantized(out, config.method, (), fp_acc, q_acc, tuple(steps))
        candidates = layers(pre)
        trial = Path(tmp) / "trial.onnx"
        score: dict[str, tuple[float, float]] = {}
        for name in candidates:  # sensitivity: this one layer in float, all others INT8
            acc, logits = ort_accuracy(_write_qdq(pre, trial, calibration, config, act, cache,
                                              [name]), x, y, fp_logits)
            score[name] = (acc, -float(np.mean((logits - fp_logits) ** 2)))
        ranked = sorted(candidates, key=lambda n: score[n], reverse=True)
        log.info("INT8 loses %.2f points; layer sensitivity: %s", 100 * (fp_acc - q_acc),
                 json.dumps({n: round(score[n][0], 4) for n in ranked}))
        kept: list[str] = []
        for name in ranked:
            kept.append(name)
            _write_qdq(pre, out, calibration, config, act, cache, kept)
            q_acc, _ = ort_accuracy(out, x, y, fp_logits)
            steps.append({"float_layers": list(kept), "accuracy": round(q_acc, 6)})
            if fp_acc - q_acc <= budget:
                return Quantized(out, config.method, tuple(kept), fp_acc, q_acc, tuple(steps))
    raise BuildError(
        f"INT8 loses {100 * (fp_acc - q_acc):.2f} accuracy points on the validation split even "
        f"with all {len(candidates)} quantizable layers in float (quant.max_accuracy_drop = "
        f"{config.max_accuracy_drop}): raise quant.max_accuracy_drop, calibrate with another "
        "quant.method or more quant.calibration_samples, or ship the FP32 artifact")


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
                    tensorrt: bool = False, fresh: bool = False) -> Quantized:
    """:func:`quantize`, cached under ``cache`` like a training stage (the accuracy-aware
    search runs the model many times). ``key`` identifies the FP32 model; the entry's key
    adds the settings, the calibration and validation samples and ONNX Runtime's version
    (its quantization tools write the model)."""
    import onnxruntime

    entries = CacheDir(cache, fresh=fresh)
    entry_key = digest_of(edgekd.__version__, onnxruntime.__version__, key, asdict(config),
                          tensorrt, *_parts(calibration),
                          *(_parts(validation[0]) + (validation[1],) if validation else ()),
                          length=16)
    entry = entries.entry("int8", entry_key)
    if entry is not None:
        try:
            meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
            shutil.copyfile(entry / "model.onnx", out)
            return Quantized(out, meta["method"], tuple(meta["float_layers"]),
                             meta["fp32_accuracy"], meta["int8_accuracy"], tuple(meta["steps"]),
                             cached=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged: quantize again
            log.warning("ignoring unreadable INT8 cache entry %s: %s", entry, exc)
    q = quantize(fp32, out, calibration, config, validation=validation, tensorrt=tensorrt)
    with entries.write("int8", entry_key) as tmp:
        shutil.copyfile(out, tmp / "model.onnx")
        (tmp / "meta.json").write_text(json.dumps(q.to_dict()), encoding="utf-8")
    return q
