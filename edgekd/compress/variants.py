"""The known ONNX Runtime INT8 alternatives to the build's QDQ model, made with ORT's own
``quantize_static`` from the same FP32 file and the same calibration ranges.

Which INT8 form is fastest depends on the CPU and the model, not on a rule:

- ``QOperator`` (QLinearConv, QLinearMatMul, ...) instead of ``QDQ``: the integer ops are in
  the file, nothing is left for ORT's QDQ fusion to find; small, overhead-bound models lose
  the DequantizeLinear/QuantizeLinear pairs ORT keeps around ops it does not fuse.
- Only the weighted layers quantized (Conv, Gemm, MatMul: ``op_types_to_quantize``):
  element-wise ops (Add of a residual, pooling, activations) stay in float, so the graph
  does not pay a Q/DQ pair at each of them.
- Per-tensor instead of per-channel weight scales: one scale per layer, cheaper
  requantization on kernels without a per-channel path.
- U8S8 (uint8 activations, int8 weights) vs S8S8: on x86 ORT's u8 x s8 kernels are the fast
  path (VNNI, AVX2 ``pmaddubsw``); ORT's docs call S8S8 QOperator slow on x86-64; on ARM
  S8S8 with dot-product instructions can win.

Graph optimisation is not a variant: ONNX Runtime applies ``ORT_ENABLE_ALL`` when it loads a
model (edgekd's benchmark worker, the verifier and the shipped ``run_onnxruntime.py`` all use
it), and a file saved after those optimisations may hold ops specific to the CPU it was made
on, which would not be the file that was verified if the device differs.

Each :class:`Variant` keeps the build's float layers (``nodes_to_exclude``, the accuracy-aware
search's result) so its accuracy starts from the same place; whether it holds accuracy and
runs faster is measured by :mod:`edgekd.pipeline.choosing`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.compress.ort_calibration import Calibration, CalibrationReader, strip_shapes
from edgekd.compress.quantize import (
    LAYER_OPS,
    WEIGHT_MATMULS,
    activation_type,
    is_transformer,
    preprocess,
    recipe_for,
    reduce_range,
)
from edgekd.errors import BuildError
from edgekd.inputs.dataset import Feeds
from edgekd.settings.config import QuantConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One INT8 file and the ``quantize_static`` settings it was made with."""

    name: str
    settings: dict[str, Any]
    path: Path


def build_settings(config: QuantConfig, *, tensorrt: bool = False,
                   recipe: str = "static") -> dict[str, Any]:
    """The settings of the build's own INT8 model (:func:`edgekd.compress.quantize.quantize`,
    made with ``recipe``), in the form every variant records."""
    act = activation_type(config, tensorrt=tensorrt)
    if recipe == "dynamic":
        return {"format": "dynamic", "activation_type": "uint8", "weight_type": "int8",
                "per_channel": config.per_channel, "reduce_range": reduce_range(config, "uint8"),
                "op_types": "weight-matmuls"}
    return {"format": "QDQ", "activation_type": act, "weight_type": config.weight_type,
            "per_channel": config.per_channel, "reduce_range": reduce_range(config, act),
            "op_types": "weight-matmuls" if recipe == "transformer" else "all"}


def candidates(config: QuantConfig, *, tensorrt: bool = False,
               recipe: str = "static") -> list[tuple[str, dict[str, Any]]]:
    """(name, settings) of each alternative to the build's INT8 settings, in the order they
    are worth trying; a variant with the build's own settings is left out. A dynamic INT8
    build has none: its static forms are what the accuracy-aware search already rejected;
    a transformer build's variants keep its recipe (the weight MatMuls only)."""
    if recipe == "dynamic":
        return []
    own = build_settings(config, tensorrt=tensorrt, recipe=recipe)
    other_act = "int8" if own["activation_type"] == "uint8" else "uint8"
    act = {"uint8": "u8s8", "int8": "s8s8"}
    tried: list[tuple[str, dict[str, Any]]] = [
        ("qoperator", {"format": "QOperator"}),
        ("qdq-layers-only", {"op_types": "layers"}),
        ("qoperator-layers-only", {"format": "QOperator", "op_types": "layers"}),
        ("qdq-per-tensor", {"per_channel": False}),
        (f"qdq-{act[other_act]}", {"activation_type": other_act,
                                  "reduce_range": other_act == "uint8"}),
    ]
    out = []
    for name, change in tried:
        if recipe == "transformer" and "op_types" in change:
            continue  # the transformer recipe already quantizes the weight MatMuls only
        settings = {**own, **change}
        if settings != own:
            suffix = f"-{act[settings['activation_type']]}" if "activation_type" not in change \
                else ""
            out.append((name + suffix, settings))
    return out


def make_variants(fp32: Path, out_dir: Path, calibration: np.ndarray | Feeds,
                  config: QuantConfig, *, float_layers: Sequence[str] = (),
                  tensorrt: bool = False, only: Sequence[str] | None = None,
                  recipe: str | None = None) -> list[Variant]:
    """Write each alternative INT8 model of ``fp32`` into ``out_dir`` (``<name>.onnx``),
    calibrated once on ``calibration`` with ``config.method``; ``float_layers`` stay in float
    as in the build's model. ``only``: just these variant names. ``recipe``: the build's
    (``Quantized.recipe``); None: the one :func:`recipe_for` picks for this model."""
    out_dir.mkdir(parents=True, exist_ok=True)
    variants: list[Variant] = []
    with tempfile.TemporaryDirectory() as tmp:
        pre = preprocess(fp32, Path(tmp) / "pre.onnx")
        if recipe is None:
            recipe = recipe_for(config, is_transformer(pre), tensorrt)[0]
        chosen = [(n, s) for n, s in candidates(config, tensorrt=tensorrt, recipe=recipe)
                  if only is None or n in only]
        ranges = Path(tmp) / "ranges.json"  # the first call calibrates, the rest reuse
        for name, settings in chosen:
            path = out_dir / f"{name}.onnx"
            _write(pre, path, calibration, config, settings, ranges, list(float_layers))
            variants.append(Variant(name, settings, path))
    return variants


def _write(pre: Path, out: Path, calibration: np.ndarray | Feeds, config: QuantConfig,
           settings: dict[str, Any], ranges: Path, exclude: list[str]) -> None:
    from onnxruntime.quantization import QuantFormat, quantize_static

    from edgekd.common.quiet import quiet

    c = Calibration.of(pre, calibration, config)
    try:
        with quiet("onnxruntime.quantization"):
            quantize_static(
                str(pre), str(out), CalibrationReader(calibration, c.input_name),
                quant_format=QuantFormat.QOperator if settings["format"] == "QOperator"
                else QuantFormat.QDQ,
                op_types_to_quantize=list(LAYER_OPS) if settings["op_types"] == "layers"
                else list(WEIGHT_MATMULS) if settings["op_types"] == "weight-matmuls" else None,
                per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                activation_type=c.types[settings["activation_type"]],
                weight_type=c.types[settings["weight_type"]], calibrate_method=c.method,
                nodes_to_exclude=exclude, calibration_cache_path=ranges,
                extra_options={"CalibStridedMinMax": c.chunk,
                               "CalibPercentile": config.percentile,
                               "ActivationSymmetric": settings["activation_type"] == "int8",
                               "MatMulConstBOnly": settings["op_types"] == "weight-matmuls"})
    except (MemoryError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - ORT's quantizer fails in its own types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BuildError(f"INT8 variant {out.stem} (quant.method = \"{config.method}\") failed "
                         f"inside ONNX Runtime's quantizer ({type(exc).__name__}: {first}): "
                         "try another quant.method (--debug shows the trace)") from exc
    strip_shapes(out)