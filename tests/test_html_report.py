"""The HTML report: self-contained, escaped, tolerant of missing keys, and drawn by a browser."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.report import format as fmt
from edgekd.report.html import render_html
from edgekd.report.latency_plot import latency_figure
from edgekd.report.plots import MARKER_PT, accuracy_size_figure, accuracy_size_svg, colour_range

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
    int8_tflite["accuracy"] = 0.98125
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
             "accuracy": 0.990625, "weight_sparsity": 0.5, "method": "unstructured",
             "schedule": "gradual", "target_sparsity": 0.5, "mask_updates": 14,
             "layers": [{"layer": "0", "type": "Conv2d", "before": [4, 1, 3, 3],
                         "after": [4, 1, 3, 3], "params": 36, "zeros": 11,
                         "zero_fraction": 0.3056}]}],
        "dataset": {"splits": {"train": 1277, "test": 320, "calibration": 200}},
        "quantization": {
            "path": "student_int8.onnx", "method": "minmax", "float_layers": ["conv1"],
            "fp32_accuracy": 0.975, "int8_accuracy": 0.97,
            "steps": [{"float_layers": [], "accuracy": 0.955},
                      {"float_layers": ["conv1"], "accuracy": 0.97}],
            "by_runtime": {"tflite": {"tool": "LiteRT", "when": "during conversion",
                                      "applies": [], "ignored": ["method"]}}},
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
    for section in ("Pruning: layers", "Quantization: static INT8",
                    "Quantization: accuracy check and mixed-precision search"):
        assert f"<h2>{section}</h2>" in dom.stdout, section
    png = tmp_path / "report.png"
    subprocess.run(base + [f"--screenshot={png}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=60)
    assert png.exists() and png.stat().st_size > 10_000


# -- plots: readable on a real build's clustered artifacts ------------------------------------

def _near_identical() -> dict[str, Any]:
    """FP32 and INT8 files of three runtimes a few hundred bytes apart at one accuracy (as a
    default build makes them), one timed on a remote device too, and a stage at the same
    place: every marker's true position within a pixel or two of another's."""
    rng = np.random.default_rng(3)
    arts = []
    for k, (runtime, ext) in enumerate([("onnxruntime", "onnx"), ("tflite", "tflite"),
                                        ("openvino", "xml")]):
        arts.append(_artifact(f"student_fp32.{ext}", runtime, "fp32", 129872 + 300 * k,
                              0.009 + 0.001 * k, rng))
        arts.append(_artifact(f"student_int8.{ext}", runtime, "int8", 40310 + 300 * k,
                              0.012 + 0.001 * k, rng))
    pi = rng.lognormal(np.log(0.15), 0.1, 200)
    arts[3]["remote"] = [{"remote": "pi@pi", "latency_ms": _latency(pi),
                          "latency_samples_ms": pi.tolist(), "memory": {}}]
    return {"stages": [{"name": "student_distilled", "params": 31574, "nonzero_params": 31574,
                        "accuracy": 0.990625}], "artifacts": arts}


def _marker_centres(fig: Any) -> list[tuple[float, float]]:
    ax = fig.axes[0]
    return [tuple(ax.transData.transform(c.get_offsets()[0])) for c in ax.collections
            if c.get_label() == "_marker"]


def test_no_two_markers_coincide_and_runtimes_differ_in_shape() -> None:
    r = _near_identical()
    fig = accuracy_size_figure(r)
    centres = _marker_centres(fig)
    assert len(centres) == 1 + 6 + 1  # the stage, six files, the remote timing
    width = MARKER_PT * fig.dpi / 72
    gaps = [math.dist(a, b) for i, a in enumerate(centres) for b in centres[:i]]
    assert min(gaps) >= width  # before: 0.9 px between the two INT8 ONNX/TFLite markers
    ax = fig.axes[0]
    arts = [c for c in ax.collections if c.get_label() == "_marker"][1:]
    shapes = {tuple(map(tuple, c.get_paths()[0].vertices.round(3))) for c in arts}
    assert len(shapes) == 3  # one per runtime
    edges = {tuple(c.get_edgecolor()[0].round(3)) for c in arts}
    assert len(edges) == 2  # one per precision
    labels = [t.get_text() for t in ax.texts]
    assert "student_int8.tflite @ pi@pi" in labels and len(labels) == len(centres)


def test_colour_bar_covers_every_plotted_latency_and_names_both_ends() -> None:
    r = _near_identical()
    p50s = [a["latency_ms"]["p50"] for a in r["artifacts"]] + [
        r["artifacts"][3]["remote"][0]["latency_ms"]["p50"]]  # the device: the slowest
    fig = accuracy_size_figure(r)
    norm = next(c.norm for c in fig.axes[0].collections if c.get_array() is not None)
    assert norm.vmin <= min(p50s) and norm.vmax >= max(p50s)
    lo, hi = colour_range([0.004, 0.2])
    assert lo < 0.004 and hi > 0.2 and colour_range([0.01]) == pytest.approx((0.01 / 1.1, 0.011))
    svg = accuracy_size_svg(r)
    assert f"{fmt.ms(max(p50s))} slowest" in svg and f"{fmt.ms(min(p50s))} fastest" in svg


def test_one_slow_run_does_not_squash_the_latency_boxes() -> None:
    rng = np.random.default_rng(4)
    arts = [_artifact(f"m{i}.onnx", "onnxruntime", "int8", 40000, 0.01 * (i + 1), rng)
            for i in range(3)]
    samples = arts[0]["latency_samples_ms"]
    samples[7] = 50.0  # one descheduled run: 5,000 times the median
    fig = latency_figure({"artifacts": arts})
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert hi < 1.0 and lo > 0.001  # the axis follows the whiskers, not the one slow run
    frame = ax.bbox.width
    for a in arts:
        q1, q3 = np.percentile(a["latency_samples_ms"], [25, 75])
        left, right = (ax.transData.transform((x, 0))[0] for x in (q1, q3))
        assert right - left > 0.02 * frame  # a box, not a hairline
    notes = [t.get_text() for t in ax.texts]
    assert any("slowest 50 ms" in n for n in notes), notes  # counted at the edge instead


def test_page_has_quantization_and_pruning_sections(report: dict[str, Any]) -> None:
    page = render_html(report)
    assert "<h2>Quantization: static INT8</h2>" in page
    assert "calibrated with minmax on the calibration split (200 samples)" in page
    assert "<td>1</td><td>conv1</td>" in page.replace(' class="num"', "")  # search step 1
    assert "Excluded from INT8 (kept in float): conv1." in page
    assert "99.06 % → 98.12 %" in page and "127.0 → 39.8" in page  # tflite FP32 → INT8
    assert "2.38× slower (host)" in page
    assert "<h2>Pruning: layers</h2>" in page
    assert "99.06 % before pruning (student_distilled) → 99.06 % after" in page
    assert "non-zero parameters 31,574 → 15,876" in page
