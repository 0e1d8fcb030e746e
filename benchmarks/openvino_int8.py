"""OpenVINO INT8 IR vs FP32 IR, before and after storing quantized weights as INT8: size,
p50, paired speed-up, the compute layers that run INT8, and what ``inference_precision``
says a plain ``compile_model`` runs.

"before": the QDQ ONNX read with ``Core.read_model`` and saved (edgekd up to issue 15);
"after": edgekd's OpenVINO backend (``ov.convert_model``: INT8 weight constants, the f32
hint in the IR's runtime info). Models: MobileNetV2 (width 1.0, 1x3x224x224, random
weights, seed 0) and the default digits student (1x1x8x8), both calibrated on scikit-learn
digits (upsampled to 224x224 RGB for MobileNetV2), quantized with edgekd's default settings
(U8S8 QDQ, per-channel). Timing: :func:`edgekd.measure.bench.run_pair`, both files in one
fresh worker process, alternating rounds; speed-up = median over rounds of FP32 p50 / INT8
p50, with its 95 % interval (:func:`edgekd.measure.payoff.paired_speedup`).

    python benchmarks/openvino_int8.py [--threads 2] [--seconds 6]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgekd import ExportSource, default_calibration_file, load_digits, mobilenet_v2, to_onnx
from edgekd.backends import get_backend
from edgekd.backends import openvino as ov_backend
from edgekd.compress.quantize import quantize_int8
from edgekd.device.runtimes import OV_COMPUTE, OV_INT8
from edgekd.measure.bench import BenchSpec, PairSpec, run_pair
from edgekd.measure.payoff import paired_speedup
from edgekd.train.models import student_cnn


def digits_224(x: np.ndarray) -> np.ndarray:
    """[N, 1, 8, 8] digits -> [N, 3, 224, 224] (bilinear upsampling, channel tiled)."""
    up = torch.nn.functional.interpolate(torch.from_numpy(x), size=(224, 224),
                                         mode="bilinear", align_corners=False)
    return up.repeat(1, 3, 1, 1).numpy().astype(np.float32)


def ir_kib(xml: Path) -> float:
    return (xml.stat().st_size + xml.with_suffix(".bin").stat().st_size) / 1024


def int8_layers(xml: Path, threads: int) -> str:
    """Compute layers that run INT8 / all compute layers, with edgekd's measuring config."""
    compiled = get_backend("openvino").load(xml, threads).compiled  # type: ignore[attr-defined]
    ran = [op.get_rt_info()["runtimePrecision"].astype(str)
           for op in compiled.get_runtime_model().get_ops()
           if op.get_rt_info()["layerType"].astype(str) in OV_COMPUTE]
    return f"{sum(p in OV_INT8 for p in ran)}/{len(ran)}"


def rows(name: str, model: torch.nn.Module, calibration: np.ndarray, out: Path,
         threads: int, seconds: float) -> list[list[str]]:
    import openvino as ov

    out.mkdir()
    fp32 = to_onnx(model, calibration[:1], out / "fp32.onnx")
    int8 = quantize_int8(fp32, out / "int8.onnx", calibration)
    after = ov_backend.export(ExportSource(model, calibration[:1], calibration,
                                           {"fp32": fp32, "int8": int8}), out)
    before = out / "before_int8.xml"
    ov.save_model(ov.Core().read_model(str(int8)), str(before), compress_to_fp16=False)
    base = BenchSpec(after["fp32"], "openvino", threads, samples=False)
    table = []
    for label, xml in (("FP32 IR", after["fp32"]), ("INT8 IR before", before),
                       ("INT8 IR after", after["int8"])):
        if xml == after["fp32"]:
            p50, speed, layers = "", "1 (baseline)", "-"
        else:
            pair = paired_speedup(run_pair(PairSpec(
                base, BenchSpec(xml, "openvino", threads, samples=False), seconds=seconds)))
            lo, hi = pair["speedup_ci95"]
            p50 = f"{pair['p50_ms'][0]:.3f} → {pair['p50_ms'][1]:.3f}"
            speed = f"{pair['speedup']:.2f}× [{lo:.2f}, {hi:.2f}]"
            layers = int8_layers(xml, threads)
        table.append([name, label, f"{ir_kib(xml):,.1f}", p50, speed, layers,
                      ov_backend.inference_precision(xml)])
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--calibration", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits(default_calibration_file(), seed=0)
    table = Table("model", "IR", "size KiB", "p50 ms FP32 → this", "speed-up vs FP32 [95 %]",
                  "INT8 compute layers", "inference_precision",
                  title=f"OpenVINO {ov_backend.runtime_version()}, {args.threads} threads, "
                        "batch 1, paired rounds")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        models = [("MobileNetV2-224", mobilenet_v2(1000).eval(),
                   digits_224(data.calibration.x[:args.calibration])),
                  ("digits student", student_cnn().eval(), data.calibration.x)]
        for i, (name, model, calibration) in enumerate(models):
            for row in rows(name, model, calibration, Path(tmp) / str(i), args.threads,
                            args.seconds):
                table.add_row(*row)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
