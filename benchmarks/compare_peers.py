"""edgekd's INT8 artifacts beside the peers' on the same model and calibration data, in one run.

Pairs (each INT8 model is measured in the runtime it is for):

- ONNX Runtime: edgekd's QDQ model (``edgekd.compress.quantize``: ORT pre-processing, U8S8,
  per-channel, min-max) vs ``onnxruntime.quantization.quantize_static`` called with its defaults.
- OpenVINO: edgekd's IR (its QDQ ONNX converted by OpenVINO) vs NNCF's ``nncf.quantize`` on the
  OpenVINO FP32 model (its defaults, ``subset_size`` = all calibration samples).
- LiteRT: edgekd's TFLite INT8 vs LiteRT-Torch's documented PT2E recipe
  (``PT2EQuantizer().set_global(get_symmetric_quantization_config(...))``, prepare_pt2e,
  calibrate, convert_pt2e, ``litert_torch.convert(..., quant_config=QuantConfig(...))``), static
  and per-channel. edgekd's TFLite backend is that recipe plus annotations for the residual
  adds the recipe's quantizer misses under torch 2.13 (they stay float there).

Model: ``edgekd.train.models.mobilenet_v2(10)`` (a 10-class head; random weights, seed 0; no
downloads here; BatchNorm statistics set from 256 training digits) at ``--size``. There are
no labels for it, so accuracy is measured as the error of the INT8 logits against the FP32
model's, relative to how much the FP32 logits vary between inputs (lower is better), on real
inputs: scikit-learn digits upsampled to the input size, tiled to 3 channels;
calibration samples from the calibration split, evaluation samples from the test split.
Latency: p50 from ``run_bench`` (a fresh process per artifact, batch 1), edgekd and peer
alternating ``--repeat`` times, medians shown (this VM drifts 20-30 % between minutes).

    python benchmarks/compare_peers.py [--size 224] [--threads 2] [--repeat 3]

``--train-epochs N`` trains the MobileNetV2 on the digits first (upsampled to ``--size``;
at 224 that is too slow for 2 cores, so use e.g. ``--size 32``): accuracy is then real top-1
on the whole test split, for FP32 and every INT8 artifact. ``--repeat 0`` skips latency.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from edgekd import (
    BenchSpec,
    ExportSource,
    QuantConfig,
    default_calibration_file,
    get_backend,
    load_digits,
    mobilenet_v2,
    predict_batches,
    run_bench,
    to_onnx,
)
from edgekd.common.quiet import quiet
from edgekd.compress.quantize import CalibrationReader, quantize


def upsampled(x: np.ndarray, size: int) -> np.ndarray:
    up = torch.nn.functional.interpolate(torch.from_numpy(x), size=(size, size),
                                         mode="bilinear", align_corners=False)
    return up.repeat(1, 3, 1, 1).numpy().astype(np.float32)


def with_batchnorm_statistics(model: torch.nn.Module, x: np.ndarray) -> torch.nn.Module:
    """Set BatchNorm's running statistics from ``x``: with random weights and the default
    statistics, the logits barely depend on the input and their argmax is the same class for
    every sample, so top-1 agreement would say nothing. Normalised activations make the
    prediction depend on the input."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over all batches
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 32):
            model(torch.from_numpy(x[i:i + 32]))
    return model.eval()


def ort_defaults(fp32: Path, out: Path, calibration: np.ndarray) -> Path:
    from onnxruntime.quantization import quantize_static

    with quiet("quantize_static"):
        quantize_static(str(fp32), str(out), CalibrationReader(calibration))
    return out


def nncf_openvino(xml: Path, out: Path, calibration: np.ndarray) -> Path:
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(xml))
    with quiet("nncf.quantize"):
        quantized = nncf.quantize(model, nncf.Dataset(list(calibration), lambda x: x[None]),
                                  subset_size=len(calibration))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def litert_pt2e(model: torch.nn.Module, example: np.ndarray, calibration: np.ndarray,
                out: Path) -> Path:
    """LiteRT-Torch's README recipe for PT2E quantization, static (calibrated) per-channel."""
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig as LiteRTQuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    args = (torch.from_numpy(example),)
    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    with quiet("litert_torch PT2E"), torch.no_grad():
        graph = torch.export.export(model.eval(), args).module()
        prepared = prepare_pt2e(graph, quantizer)
        for sample in calibration:
            prepared(torch.from_numpy(sample[None]))
        converted = convert_pt2e(prepared, fold_quantize=False)
        litert_torch.convert(converted, args, quant_config=LiteRTQuantConfig(
            pt2e_quantizer=quantizer)).export(str(out))
    return out


def error(path: Path, runtime: str, x: np.ndarray, reference: np.ndarray,
          threads: int) -> float:
    """Median over samples of |int8 - fp32| / |fp32 - mean fp32|: the quantization error of
    the logits relative to their input-dependent part. (A random-weight network gives nearly
    the same logits for every input, so top-1 agreement, or error relative to the raw logits,
    would look perfect whatever the quantizer did.)"""
    with quiet(f"loading {path.name}"):
        runner = get_backend(runtime).load(path, threads)
    got = predict_batches(runner, x, 1)
    signal = np.linalg.norm(reference - reference.mean(0), axis=1)
    return float(np.median(np.linalg.norm(got - reference, axis=1) / signal))


def top1(path: Path, runtime: str, x: np.ndarray, y: np.ndarray, threads: int) -> float:
    with quiet(f"loading {path.name}"):
        runner = get_backend(runtime).load(path, threads)
    return float((predict_batches(runner, x, 1).argmax(1) == y).mean())


def trained_mobilenet(data: Any, size: int, epochs: int) -> torch.nn.Module:
    """MobileNetV2 trained on the digits' training split, upsampled to ``size``."""
    from edgekd import Schedule, Split, train_model

    split = Split(upsampled(data.train.x, size), data.train.y, data.train.index)
    return train_model(mobilenet_v2(10), split, Schedule(epochs, 3e-3, 64), seed=0).eval()


def p50(path: Path, runtime: str, threads: int, seconds: float) -> float:
    spec = BenchSpec(path, runtime, threads, warmup=30, runs=100, seconds=seconds, samples=False)
    return float(run_bench(spec)["latency_ms"]["p50"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--calibration", type=int, default=64)
    ap.add_argument("--eval", type=int, default=200)
    ap.add_argument("--train-epochs", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = load_digits(default_calibration_file(), seed=0)
    # A 10-class head, as for the digits (the latency is the same as with 1000 classes).
    trained = args.train_epochs > 0
    model = (trained_mobilenet(data, args.size, args.train_epochs) if trained else
             with_batchnorm_statistics(mobilenet_v2(10),
                                       upsampled(data.train.x[:256], args.size)))
    calibration = upsampled(data.calibration.x[:args.calibration], args.size)
    n_eval = len(data.test) if trained else args.eval
    x_eval, y_eval = upsampled(data.test.x[:n_eval], args.size), data.test.y[:n_eval]
    with torch.no_grad():
        reference = torch.cat([model(torch.from_numpy(x_eval[i:i + 50]))
                               for i in range(0, len(x_eval), 50)]).numpy()

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        fp32 = to_onnx(model, calibration[:1], out / "mbv2_fp32.onnx")
        int8 = quantize(fp32, out / "mbv2_int8.onnx", calibration, QuantConfig()).path
        source = ExportSource(model, calibration[:1], calibration,
                              {"fp32": fp32, "int8": int8}, stem="mbv2")
        xml = get_backend("openvino").export(source, out)
        tfl = get_backend("tflite").export(source, out)
        pairs = {  # runtime: (FP32, edgekd INT8, peer INT8, peer's name)
            "onnxruntime": (fp32, int8, ort_defaults(fp32, out / "ort_defaults.onnx",
                                                     calibration), "quantize_static defaults"),
            "openvino": (xml["fp32"], xml["int8"], nncf_openvino(xml["fp32"], out / "nncf.xml",
                                                                calibration), "nncf.quantize"),
            "tflite": (tfl["fp32"], tfl["int8"], litert_pt2e(model, calibration[:1], calibration,
                                                             out / "pt2e.tflite"),
                       "LiteRT-Torch PT2E recipe"),
        }
        quality = (("FP32 top-1", "edgekd top-1", "peer top-1") if trained
                   else ("edgekd error", "peer error"))
        what = (f"trained {args.train_epochs} epochs on the digits; top-1 on all {n_eval} "
                "test digits" if trained else
                f"random weights; error = median |int8 - fp32| / |fp32 - mean fp32| of the "
                f"logits on {n_eval} upsampled digits")
        table = Table("runtime", "peer", "FP32 p50 ms", "edgekd INT8 p50", "peer INT8 p50",
                      "edgekd / peer latency", "edgekd INT8 vs FP32", *quality,
                      title=f"MobileNetV2 1x3x{args.size}x{args.size}, {what}; "
                            f"{args.threads} threads, batch 1, medians of {args.repeat} "
                            "alternating latency rounds")
        for runtime, (base, ours, peer, peer_name) in pairs.items():
            times: dict[str, list[float]] = {"fp32": [], "ours": [], "peer": []}
            for _ in range(args.repeat):
                for key, path in (("fp32", base), ("ours", ours), ("peer", peer)):
                    times[key].append(p50(path, runtime, args.threads, args.seconds))
            med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
            if trained:
                cells = [f"{100 * top1(p, runtime, x_eval, y_eval, args.threads):.2f} %"
                         for p in (base, ours, peer)]
            else:
                cells = [f"{error(p, runtime, x_eval, reference, args.threads):.3f}"
                         for p in (ours, peer)]
            table.add_row(runtime, peer_name, f"{med['fp32']:.3f}", f"{med['ours']:.3f}",
                          f"{med['peer']:.3f}", f"{med['ours'] / med['peer']:.3f}",
                          f"{med['fp32'] / med['ours']:.2f}x faster", *cells)
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
