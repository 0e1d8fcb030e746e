"""What makes edgekd's INT8 QDQ model fast: MobileNetV2 (width 1.0, 1x3x224x224, random
weights, seed 0), FP32 vs INT8 variants in ONNX Runtime and, converted by edgekd's OpenVINO
backend, in OpenVINO; batch 1, ``--threads`` threads, latency from ``run_bench`` (a fresh
process per artifact).

Accuracy here is top-1 agreement of each INT8 model with the FP32 ONNX model in ONNX Runtime
(random weights, so there are no labels) on real inputs: scikit-learn digits, bilinearly
upsampled to 224x224 and tiled to 3 channels; calibrated on ``--calibration`` samples of the
calibration split, evaluated on ``--eval`` samples of the test split.

    python benchmarks/int8_speed.py [--threads 2] [--seconds 3]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgekd import (
    BenchSpec,
    ExportSource,
    QuantConfig,
    default_calibration_file,
    load_digits,
    mobilenet_v2,
    ort_accuracy,
    run_bench,
    to_onnx,
)
from edgekd.backends import openvino as ov_backend
from edgekd.compress.quantize import quantize

# (name, config): activations x weights, per-channel or per-tensor weights; all QDQ, min-max.
VARIANTS = [
    ("S8S8 per-channel", QuantConfig(activation_type="int8", per_channel=True)),
    ("S8S8 per-tensor", QuantConfig(activation_type="int8", per_channel=False)),
    ("U8S8 per-channel (default)", QuantConfig(activation_type="uint8", per_channel=True)),
    ("U8S8 per-tensor", QuantConfig(activation_type="uint8", per_channel=False)),
]


def digits_224(x: np.ndarray) -> np.ndarray:
    """[N, 1, 8, 8] digits -> [N, 3, 224, 224] (bilinear upsampling, channel tiled)."""
    up = torch.nn.functional.interpolate(torch.from_numpy(x), size=(224, 224),
                                         mode="bilinear", align_corners=False)
    return up.repeat(1, 3, 1, 1).numpy().astype(np.float32)


def p50(path: Path, runtime: str, threads: int, seconds: float) -> float:
    spec = BenchSpec(path, runtime, threads, warmup=50, runs=100, seconds=seconds,
                     samples=False)
    return float(run_bench(spec)["latency_ms"]["p50"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--eval", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = mobilenet_v2(1000).eval()
    data = load_digits(default_calibration_file(), seed=0)
    calibration = digits_224(data.calibration.x[:args.calibration])
    x_eval = digits_224(data.test.x[:args.eval])
    table = Table("model", "ORT p50 ms", "ORT speedup", "OpenVINO p50 ms", "OpenVINO speedup",
                  "top-1 agreement",
                  title=f"MobileNetV2 1x3x224x224, {args.threads} threads, batch 1")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fp32 = to_onnx(model, calibration[:1], out / "fp32.onnx")
        _, ref = ort_accuracy(fp32, x_eval, np.zeros(len(x_eval), dtype=np.int64))  # logits only
        files = {"fp32": fp32}
        for i, (_, config) in enumerate(VARIANTS):
            files[f"v{i}"] = quantize(fp32, out / f"v{i}.onnx", calibration, config).path
        xml = ov_backend.export(ExportSource(model, calibration[:1], calibration, files,
                                             stem="mbv2"), out)
        base = {rt: p50(files["fp32"] if rt == "onnxruntime" else xml["fp32"], rt,
                        args.threads, args.seconds) for rt in ("onnxruntime", "openvino")}
        table.add_row("FP32", f"{base['onnxruntime']:.2f}", "1.00x", f"{base['openvino']:.2f}",
                      "1.00x", "")
        for i, (name, _) in enumerate(VARIANTS):
            ort = p50(files[f"v{i}"], "onnxruntime", args.threads, args.seconds)
            ov = p50(xml[f"v{i}"], "openvino", args.threads, args.seconds)
            agree, _ = ort_accuracy(files[f"v{i}"], x_eval, None, ref)
            table.add_row(name, f"{ort:.2f}", f"{base['onnxruntime'] / ort:.2f}x", f"{ov:.2f}",
                          f"{base['openvino'] / ov:.2f}x", f"{agree:.1%}")
    Console().print(table)


if __name__ == "__main__":
    main()
