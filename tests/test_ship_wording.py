"""How the report words what ships (issue 15, user test items 6-8): "What ships" shows the
same paired figure as the payoff row, as this host's figure where the target is a device of
another architecture; the Pruning section compares the pruned student with the dense
reference only, never the teacher; the Quantization section describes the INT8 file in the
build (a kept variant's settings). Report dicts rendered directly, plus one tiny real build
for a Raspberry Pi target on this (x86) host. No assertion is on a timing."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.report.html import render_html
from edgekd.report.markdown_compression import pruning_lines, quantization_lines
from edgekd.report.shipping import markdown_lines
from tests.projects import QUICK
from tests.rgb_data import shapes
from tests.test_teacher_reference import MODELS

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}


def _art(path: str, runtime: str, precision: str, size: int, p50: float,
         **extra: Any) -> dict[str, Any]:
    return {"path": path, "runtime": runtime, "precision": precision, "size_bytes": size,
            "size_gzip_bytes": size // 2, "accuracy": 0.9,
            "latency_ms": {"p50": p50, "p50_ci95": [p50, p50]}, **extra}


VARIANT = {"format": "QOperator", "activation_type": "uint8", "weight_type": "int8",
           "per_channel": False, "reduce_range": True, "op_types": "layers"}
BUILD = {"format": "QDQ", "activation_type": "uint8", "weight_type": "int8",
         "per_channel": True, "reduce_range": True, "op_types": "all"}


def _report() -> dict[str, Any]:
    """An x86 build whose ONNX Runtime INT8 was replaced by a variant, with a dense and a
    teacher reference: what the Pruning and Quantization sections read."""
    choice = {"runtime": "onnxruntime", "policy": "fastest", "policy_from": "project",
              "int8": "qoperator-layers-only", "shipped": "student_fp32.onnx",
              "shipped_precision": "fp32", "why": "fP32 ships: a report before the fix",
              "tried": [{"name": "build", "settings": BUILD, "kept": False, "speedup": 0.5,
                         "verdict": "slower", "why": "slower than qoperator-layers-only"},
                        {"name": "qoperator-layers-only", "settings": VARIANT, "kept": True,
                         "speedup": 0.6, "verdict": "slower",
                         "why": "fastest that holds accuracy"}]}
    stage = {"name": "student_pruned", "method": "unstructured", "schedule": "gradual",
             "target_sparsity": 0.5, "layers": [], "accuracy": 0.9, "nonzero_params": 5,
             "params": 10}
    return {
        "target": "x86-cpu",
        "stages": [{"name": "student_distilled", "accuracy": 0.9, "params": 10,
                    "nonzero_params": 10}, stage],
        "artifacts": [_art("student_fp32.onnx", "onnxruntime", "fp32", 4000, 0.01,
                           shipped=True),
                      _art("student_int8.onnx", "onnxruntime", "int8", 1000, 0.02,
                           shipped=False, int8_choice=choice)],
        "references": [_art("dense_fp32.onnx", "onnxruntime", "fp32", 4000, 0.01,
                            role="dense"),
                       _art("teacher_fp32.onnx", "onnxruntime", "fp32", 90000, 0.4,
                            role="teacher")],
        "payoff": [{"runtime": "onnxruntime", "where": "host", "step": "int8",
                    "candidate": "student_int8.onnx", "speedup": 0.6, "verdict": "slower"},
                   {"runtime": "onnxruntime", "where": "host", "step": "pruning",
                    "candidate": "student_fp32.onnx", "speedup": 1.0,
                    "verdict": "no measurable change"}],
        "dataset": {"splits": {"calibration": 200}},
        "quantization": {"path": "student_int8.onnx", "method": "minmax",
                         "settings": {"calibration_samples": 200, "per_channel": True,
                                      "activation_type": "uint8", "weight_type": "int8",
                                      "reduce_range": True, "equalize": False,
                                      "max_accuracy_drop": 1.0},
                         "by_runtime": {"onnxruntime": {
                             "tool": "ONNX Runtime quantize_static (QDQ)",
                             "when": "before export", "ignored": []}}},
    }


def test_pruning_compares_with_the_dense_reference_only() -> None:
    report = _report()
    text = "\n".join(pruning_lines(report))
    assert "reference/dense_fp32.onnx" in text and "teacher_fp32" not in text
    # A report before roles (schema < 1.3): its one reference is the dense one.
    del report["references"][0]["role"]
    report["references"].reverse()
    assert "reference/dense_fp32.onnx" in "\n".join(pruning_lines(report))
    # A report with only a teacher reference has no dense-vs-pruned line at all.
    report["references"] = report["references"][:1]
    assert "reference/" not in "\n".join(pruning_lines(report))


def test_quantization_describes_the_kept_variant_in_md_and_html() -> None:
    report = _report()
    md = "\n".join(quantization_lines(report))
    page = render_html(report)
    for text in (md, page):
        assert "(QOperator)" in text and "qoperator-layers-only" in text
        assert "per-tensor weights" in text and "per-channel weights" not in text
        assert "only the conv/linear layers quantized" in text
        assert "(QDQ)" not in text.split("Quantization")[1].split("What ships")[0]
    # The speed-up cell reads in the words of its verdict: 1/0.6, never "0.60× slower".
    assert "1.67× slower (host)" in md and "0.60× slower" not in md
    # Without a kept variant, the build's own settings.
    report["artifacts"][1]["int8_choice"]["tried"][1]["kept"] = False
    md = "\n".join(quantization_lines(report))
    assert "(QDQ)" in md and "per-channel weights" in md and "variant" not in md


def test_ship_lead_is_a_sentence_and_the_headline_leads_the_page() -> None:
    report = _report()
    lines = markdown_lines(report)
    lead = next(line for line in lines if line.startswith("onnxruntime: ships"))
    assert ". FP32 ships: a report before the fix." in lead
    report["headline"] = {"rows": [{"runtime": "onnxruntime", "where": "host",
                                    "speedup_p50": 40.0, "size_ratio": 90.0}]}
    report["flags"] = ["SLOWER: something"]
    page = render_html(report)
    first = page.index('id="headline"')
    assert first < page.index('id="flags"') and "<h2>" not in page[:first]


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="needs a build host of another architecture than the Pi's")
def test_foreign_target_shows_the_host_figure_and_ships_by_policy(tmp_path: Path) -> None:
    """raspberrypi (aarch64) built here: the choose step times INT8 vs FP32 (the measure
    step reuses the very result: one paired figure in both places), calls it this host's,
    and does not let it decide; nothing variant-made replaces the build's INT8."""
    x, y = shapes(30, seed=0, size=16)
    np.savez(tmp_path / "data.npz", x=x, y=y)
    (tmp_path / "models.py").write_text(MODELS)
    (tmp_path / "edgekd.toml").write_text(
        'min_agreement = 0.0\nship = "fastest"\n[model]\nteacher = "models.py:teacher"\n'
        'student = "models.py:student"\n[data]\ntrain = "data.npz"\n'
        "mean = [127.0, 127.0, 127.0]\nstd = [64.0, 64.0, 64.0]\n" + QUICK)
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", "raspberrypi"],
                          cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "build" / "raspberrypi"
    report = json.loads((folder / "report.json").read_text())
    rows = {p["runtime"]: p for p in report["payoff"] if p["step"] == "int8"}
    choices = [a["int8_choice"] for a in report["artifacts"] if a.get("int8_choice")]
    assert {c["runtime"] for c in choices} == {"tflite", "onnxruntime"} == set(rows)
    for c in choices:
        (own,) = c["tried"]  # the host's figure decides nothing: no variants tried
        assert own["name"] == "build" and own["kept"] and own["verdict"] != "not timed"
        assert "this host's figure" in own["why"] and "aarch64" in own["why"]
        row = rows[c["runtime"]]
        assert (own["speedup"], own["verdict"], own["rounds"]) == (
            row["speedup"], row["verdict"], row["rounds"])
        # ship = "fastest" needs the target's timing: INT8 ships whatever this host says.
        assert c["shipped_precision"] == "int8" and c["why"][0].isupper()
        assert "this host" in c["why"] and "not timed" not in c["why"]
    md = (folder / "report.md").read_text()
    ships = md.split("## What ships")[1].split("\n## ")[0]
    assert "not timed" not in ships and ". The build's INT8 ships" in ships
    pruning = md.split("## Pruning")[1].split("\n## ")[0]
    assert "reference/dense_fp32" in pruning and "teacher_fp32" not in pruning
