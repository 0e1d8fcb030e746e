"""The HTML report: self-contained, escaped, tolerant of missing keys, and drawn by a browser."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.report.html import render_html

_XML_NAMESPACES = ("http://www.w3.org/", "http://purl.org/dc/", "http://creativecommons.org/ns")


def _latency(samples: np.ndarray) -> dict[str, Any]:
    q = np.percentile(samples, [50, 90, 95, 99])
    return {"p50": q[0], "p90": q[1], "p95": q[2], "p99": q[3], "mean": samples.mean(),
            "std": samples.std(), "min": samples.min(), "max": samples.max(),
            "p50_ci95": [q[0] * 0.98, q[0] * 1.02]}


def _artifact(path: str, runtime: str, precision: str, size: int, median_ms: float,
              rng: np.random.Generator, **extra: Any) -> dict[str, Any]:
    samples = rng.lognormal(np.log(median_ms), 0.15, 300)
    return {"path": path, "runtime": runtime, "precision": precision, "size_bytes": size,
            "size_gzip_bytes": int(size * 0.75), "accuracy": 0.990625, "top1_agreement": 1.0,
            "latency_ms": _latency(samples), "latency_samples_ms": samples.tolist(),
            "memory": {"baseline_rss_mb": 30.1, "model_rss_mb": 17.0, "peak_rss_mb": 47.3},
            "placement": {"quantized": precision == "int8", "nodes": 7, "not_as_intended": [],
                          "how": "per-node profiling"}, **extra}


@pytest.fixture
def report() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    remote_samples = rng.lognormal(np.log(0.09), 0.2, 200)
    int8_tflite = _artifact(
        "student_int8.tflite", "tflite", "int8", 40755, 0.03, rng,
        remote=[{"remote": "pi@raspberrypi.local", "latency_ms": _latency(remote_samples),
                 "latency_samples_ms": remote_samples.tolist(),
                 "device": {"machine": "aarch64", "model": "Raspberry Pi 4 Model B"},
                 "memory": {"peak_rss_mb": 40.2, "model_rss_mb": 9.5}}])
    int8_tflite["placement"]["not_as_intended"] = [
        {"node": "x", "op": "TRANSPOSE", "ran": "builtin kernel (not XNNPACK)"}]
    no_samples = _artifact("student_int8.onnx", "onnxruntime", "int8", 42000, 0.05, rng)
    no_samples["latency_samples_ms"] = []
    no_latency = _artifact("student_int8.xml", "openvino", "int8", 45000, 0.05, rng)
    del no_latency["latency_ms"], no_latency["latency_samples_ms"], no_latency["placement"]
    return {
        "target": "raspberrypi", "edgekd_version": "0.1.0", "build_seconds": 23.1,
        "target_description": "Pi 4 <b>bold</b> & friends",
        "stages": [
            {"name": "teacher", "params": 900042, "nonzero_params": 900042, "accuracy": 0.99375},
            {"name": "student_scratch", "params": 31574, "nonzero_params": 31574,
             "accuracy": 0.98125},
            {"name": "student_distilled", "params": 31574, "nonzero_params": 31574,
             "accuracy": 0.99063},
            {"name": "student_pruned", "params": 31574, "nonzero_params": 15876,
             "accuracy": 0.990625, "weight_sparsity": 0.5}],
        "artifacts": [_artifact("student_fp32.tflite", "tflite", "fp32", 130000, 0.012, rng),
                      int8_tflite, no_samples, no_latency],
        "payoff": [{"runtime": "tflite", "step": "int8", "baseline": "student_fp32.tflite",
                    "candidate": "student_int8.tflite", "speedup": 0.42, "verdict": "slower",
                    "size_ratio": 3.2, "detail": "INT8 is 2.4x slower than FP32"}],
        "flags": ["SLOWER: INT8 is 2.4x slower than FP32 on tflite", "check <script>"],
        "budget": {"source": "targets/raspberrypi.toml", "checks": [
            {"budget": "max_size_kb", "subject": "student_int8.tflite", "measured": 39.8,
             "limit": 64, "margin": 24.2, "ok": True, "unit": "KiB"},
            {"budget": "max_p50_ms", "subject": "student_int8.tflite", "measured": 0.09,
             "limit": 0.05, "margin": -0.04, "ok": False, "unit": "ms"}]},
        "bench": {"warmup": 50, "runs": 300, "batch": 1, "threads": 2, "target_threads": 4},
        "host": {"machine": "x86_64", "cpus": 2, "processor": "x86_64"},
    }


def test_page_is_self_contained_and_escaped(report: dict[str, Any]) -> None:
    page = render_html(report)
    urls = re.findall(r"https?://[^\s\"'<>)]+", page)
    assert all(u.startswith(_XML_NAMESPACES) for u in urls), urls
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert page.count('<figure class="plot" id="plot-accuracy-size"><svg') == 1
    assert page.count('<figure class="plot" id="plot-latency"><svg') == 1
    assert "Pi 4 &lt;b&gt;bold&lt;/b&gt; &amp; friends" in page and "<b>bold" not in page
    assert "check &lt;script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own plot counter
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids))  # two inline SVGs, one id space
    refs = set(re.findall(r'(?:href="#|url\(#)([^")]+)', page))
    assert refs and refs <= set(ids)


def test_page_shows_what_the_report_says(report: dict[str, Any]) -> None:
    page = render_html(report)
    assert '<div class="flag red">SLOWER: INT8 is 2.4x slower' in page
    assert '<div class="flag amber">check' in page
    assert page.count('<tr class="pass"><td>max_size_kb') == 1
    assert page.count('<tr class="fail"><td>max_p50_ms') == 1
    assert "x (TRANSPOSE): builtin kernel (not XNNPACK)" in page
    assert page.count("all as intended") == 2 and "not recorded" in page  # fp32, onnx; xml
    assert "student_int8.tflite @ pi@raspberrypi.local" in page  # table row and plot label
    assert "900,042" in page and "50%" in page and "99.06 %" in page
    assert "0.42×" in page and "3.20×" in page
    # the artifact without raw samples is drawn from its summary instead
    assert "p50 ± 95 % CI (no raw samples)" in page


@pytest.mark.parametrize("report", [{}, {"artifacts": [{}], "stages": [{}], "budget": {},
                                         "flags": None, "payoff": [None], "bench": None}])
def test_missing_keys_degrade_gracefully(report: dict[str, Any]) -> None:
    page = render_html(report)
    assert 'id="plot-accuracy-size"' in page and 'id="plot-latency"' in page
    assert "Flags" not in page and "Budget" not in page


def test_import_does_not_load_matplotlib() -> None:
    code = "import sys, edgekd.report.html; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def _browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("no chromium, chromium-browser or google-chrome on PATH")


def test_headless_browser_draws_both_plots(report: dict[str, Any], tmp_path: Path) -> None:
    browser = _browser()
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000"]
    dom = subprocess.run(base + ["--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=60)
    assert 'data-plots-rendered="2"' in dom.stdout, dom.stderr[-2000:]
    png = tmp_path / "report.png"
    subprocess.run(base + [f"--screenshot={png}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=60)
    assert png.exists() and png.stat().st_size > 10_000
