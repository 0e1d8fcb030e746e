"""Benchmarks run in a child process that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.bench import BenchSpec, run_bench


def test_bench_reports_ordered_percentiles_and_memory(onnx_pair) -> None:
    result = run_bench(BenchSpec(onnx_pair["int8"], "onnxruntime", (1, 1, 8, 8), threads=1,
                                 warmup=5, runs=50))
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"]
    assert result["runs"] == 50 and result["threads"] == 1
    # A Python process with numpy and onnxruntime loaded: tens of MB, and nowhere near the
    # ~800 MB of the torch process that launched it (ru_maxrss would report that).
    assert 20 < result["peak_rss_mb"] < 400
    assert result["load_ms"] > 0 and result["first_inference_ms"] > 0


def test_bench_failure_is_one_clear_line(tmp_path: Path) -> None:
    from edgekd.errors import BuildError

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"garbage")
    with pytest.raises(BuildError, match="benchmark of broken.onnx in onnxruntime failed"):
        run_bench(BenchSpec(bad, "onnxruntime", (1, 1, 8, 8), 1, 1, 10))


def test_running_artifacts_never_imports_torch(onnx_pair, tmp_path: Path) -> None:
    """What runs on a device (load, run, bench) must work where torch is not installed."""
    spec = BenchSpec(onnx_pair["int8"], "onnxruntime", (1, 1, 8, 8), 1, 1, 10).to_json()
    script = (
        "import sys, json\n"
        "from edgekd.bench_worker import measure\n"
        "from edgekd.verify import verify_artifact\n"
        f"r = measure(json.loads({spec!r}))\n"
        "import edgekd.backends.openvino, edgekd.backends.tflite, edgekd.backends.onnxruntime\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
