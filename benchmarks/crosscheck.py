"""Cross-check `edgekd bench` against the runtimes' own benchmark tools and /usr/bin/time.

    python benchmarks/crosscheck.py [--size 224] [--threads 2] [--runs 300] [--digits DIR]

Makes MobileNetV2 (width 1.0, SIZExSIZE, random weights: latency does not depend on weight
values) as FP32 and INT8 artifacts for OpenVINO and LiteRT, then for each artifact, back to
back on the same machine:

(``--repeat`` times, alternating, median of each):

- edgekd's worker under ``/usr/bin/time -v`` (its p50 and peak RSS, and time's "Maximum
  resident set size" of the very same process);
- the runtime's own tool under ``/usr/bin/time -v``: ``benchmark_app`` (openvino wheel;
  ``-hint none -nstreams 1 -nthreads N -api sync``, median) and ``litert-benchmark``
  (ai-edge-litert; median).

It prints the p50 ratio (edgekd / tool) and the peak-RSS ratio (edgekd / time -v); the aim
is agreement within 10 %. The tools' own peak RSS is listed for information: they are
different programs (benchmark_app is C++ with its own allocations; neither loads NumPy the
same way), so their memory is not expected to match. ``--digits DIR`` adds the artifacts of
a digits build, whose microsecond inferences show the fixed per-call cost of each harness.
ONNX Runtime's wheel ships no benchmark tool (onnxruntime_perf_test is built from source), so
ONNX Runtime has no tool column here.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgekd import BenchSpec
from edgekd.device.runtimes import openvino_config

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def make_artifacts(out: Path, size: int) -> list[tuple[str, Path]]:
    import torch

    from edgekd import ExportSource, mobilenet_v2, quantize_int8, to_onnx
    from edgekd.backends import openvino as ov_backend
    from edgekd.backends import tflite as tflite_backend

    torch.manual_seed(0)
    model = mobilenet_v2(1000).eval()
    rng = np.random.default_rng(0)
    example = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    calibration = rng.standard_normal((16, 3, size, size)).astype(np.float32)
    out.mkdir(parents=True, exist_ok=True)
    fp32 = to_onnx(model, example, out / "mbv2_fp32.onnx")
    int8 = quantize_int8(fp32, out / "mbv2_int8.onnx", calibration, per_channel=True)
    source = ExportSource(model, example, calibration, {"fp32": fp32, "int8": int8},
                          stem="mbv2")
    ov = ov_backend.export(source, out)
    tfl = tflite_backend.export(source, out)
    return [("openvino", ov["fp32"]), ("openvino", ov["int8"]),
            ("tflite", tfl["fp32"]), ("tflite", tfl["int8"])]


def _time_v(cmd: list[str]) -> tuple[str, float]:
    """(stdout + stderr of cmd, its maximum resident set size in MiB per /usr/bin/time -v)."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True,
                          check=True, cwd=tempfile.gettempdir())
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    assert kb, proc.stderr[-500:]
    return proc.stdout + proc.stderr, int(kb.group(1)) / 1024


def edgekd_run(runtime: str, path: Path, threads: int, runs: int, warmup: int
               ) -> tuple[dict, float]:
    spec = BenchSpec(path, runtime, threads, warmup, runs, samples=False)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec.to_dict(), f)
    text, rss = _time_v([sys.executable, "-m", "edgekd.device.worker", f.name])
    Path(f.name).unlink()
    result = json.loads(next(ln for ln in text.splitlines() if ln.startswith('{"artifact"')))
    return result, rss


def tool_run(runtime: str, path: Path, shape: list[int], threads: int, runs: int,
             warmup: int) -> tuple[float, float, str]:
    """(tool's p50 in ms, tool's max RSS in MiB, tool name)."""
    if runtime == "openvino":
        cfg = openvino_config(threads)
        with tempfile.TemporaryDirectory() as tmp:
            text, rss = _time_v([
                str(BIN / "benchmark_app"), "-m", str(path), "-d", "CPU", "-hint", "none",
                "-nstreams", cfg["NUM_STREAMS"], "-nthreads", str(threads), "-api", "sync",
                "-niter", str(runs), "-infer_precision", cfg["INFERENCE_PRECISION_HINT"],
                "-shape", str(shape).replace(" ", ""), "-report_folder", tmp])
        m = re.search(r"Median:\s+([\d.]+) (ms|us)", text)
        assert m, text[-800:]
        return float(m.group(1)) / (1000 if m.group(2) == "us" else 1), rss, "benchmark_app"
    with tempfile.TemporaryDirectory() as tmp:
        text, rss = _time_v([str(BIN / "litert-benchmark"), "--model", str(path),
                             "--num_threads", str(threads), "--num_runs", str(runs),
                             "--warmup_runs", str(warmup), "--result_json",
                             f"{tmp}/r.json"])
        p50 = json.loads(Path(f"{tmp}/r.json").read_text())["latency"]["median_ms"]
    return float(p50), rss, "litert-benchmark"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="alternating runs of each tool")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "crosscheck")
    ap.add_argument("--digits", type=Path, help="a digits build folder (build/raspberrypi)")
    args = ap.parse_args()

    items = [(rt, p, [1, 3, args.size, args.size]) for rt, p in make_artifacts(args.out,
                                                                              args.size)]
    if args.digits:
        for p in sorted(args.digits.glob("student_*.tflite")):
            items.append(("tflite", p, [1, 1, 8, 8]))
        for p in sorted(args.digits.glob("student_*.onnx")):
            items.append(("openvino", p, [1, 1, 8, 8]))
    rows = []
    for runtime, path, shape in items:
        # Alternate the two tools --repeat times and take each one's median p50: this VM's
        # speed drifts by tens of percent between runs a minute apart, so one run of each
        # compares the drift, not the tools.
        mine, theirs = [], []
        for _ in range(args.repeat):
            mine.append(edgekd_run(runtime, path, args.threads, args.runs, args.warmup))
            theirs.append(tool_run(runtime, path, shape, args.threads, args.runs, args.warmup))
        ours, time_rss = sorted(mine, key=lambda r: r[0]["latency_ms"]["p50"])[len(mine) // 2]
        tool_p50, tool_rss, tool = sorted(theirs)[len(theirs) // 2]
        p50, peak = ours["latency_ms"]["p50"], ours["memory"]["peak_rss_mb"]
        rows.append({"artifact": path.name, "runtime": runtime, "tool": tool,
                     "edgekd_p50_ms": p50, "tool_p50_ms": tool_p50,
                     "p50_ratio": round(p50 / tool_p50, 3) if tool_p50 else None,
                     "edgekd_peak_rss_mb": peak, "time_v_max_rss_mb": round(time_rss, 1),
                     "rss_ratio": round(peak / time_rss, 3), "tool_max_rss_mb": round(tool_rss, 1),
                     "edgekd_model_rss_mb": ours["memory"]["model_rss_mb"]})
    head = ("| artifact | runtime | tool | edgekd p50 ms | tool p50 ms | p50 ratio | "
            "edgekd peak RSS MiB | time -v max RSS MiB | RSS ratio | tool's own RSS MiB |")
    print(head)
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ratio = f"{r['p50_ratio']:.3f}" if r["p50_ratio"] else "–"
        print(f"| {r['artifact']} | {r['runtime']} | {r['tool']} | {r['edgekd_p50_ms']:.4g} | "
              f"{r['tool_p50_ms']:.4g} | {ratio} | {r['edgekd_peak_rss_mb']:.1f} | "
              f"{r['time_v_max_rss_mb']:.1f} | {r['rss_ratio']:.3f} | {r['tool_max_rss_mb']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "crosscheck.json").write_text(json.dumps(rows, indent=2) + "\n")
    within = [r for r in rows if r["p50_ratio"] and abs(r["p50_ratio"] - 1) <= 0.10]
    print(f"\np50 within 10 %: {len(within)} of {len(rows)}; RSS within 10 %: "
          f"{sum(abs(r['rss_ratio'] - 1) <= 0.10 for r in rows)} of {len(rows)}")


if __name__ == "__main__":
    main()
