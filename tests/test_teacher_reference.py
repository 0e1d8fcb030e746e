"""The teacher as a reference artifact (issue 15, item 1): a build with a teacher exports the
teacher's FP32 for each runtime into ``reference/``, verifies it in the runtime against the
teacher in PyTorch, benchmarks it like the student, and the report opens with the headline
(deployed student vs teacher per runtime and machine), which ``min_speedup_vs_teacher``
gates. A finished model has no teacher: no headline, no teacher files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.measure.headline import headline
from edgekd.measure.payoff import compared, flags
from edgekd.report.schema import validate_report
from tests.projects import QUICK, RESIDUAL_BLOCK
from tests.rgb_data import shapes
from tests.test_bad_input import finished

MODELS = '''
"""A residual teacher (not an nn.Sequential) and a small student, 3-channel images."""
''' + RESIDUAL_BLOCK + '''


class Teacher(nn.Module):
    def __init__(self, num_classes=6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1), nn.ReLU())
        self.layer1 = Block(32, 64)
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean((2, 3)))


class Student(nn.Module):
    def __init__(self, num_classes=6):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU())
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def teacher(num_classes=6):
    return Teacher(num_classes)


def student(num_classes=6):
    return Student(num_classes)
'''

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}


# No shipped target has both ONNX Runtime and OpenVINO: the same project is built for
# x86-cpu (onnxruntime) and intel-cpu (openvino); the second reuses the cached training.
TARGETS = {"x86-cpu": "onnxruntime", "intel-cpu": "openvino"}
Built = dict[str, tuple[Path, dict[str, Any], str]]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """The builds with a teacher, shared by every assertion: target -> (folder, report, CLI
    output)."""
    root = tmp_path_factory.mktemp("teacher")
    x, y = shapes(30, seed=0, size=16)
    np.savez(root / "data.npz", x=x, y=y)
    (root / "models.py").write_text(MODELS)
    (root / "edgekd.toml").write_text("""
min_agreement = 0.0
[model]
teacher = "models.py:teacher"
student = "models.py:student"
[data]
train = "data.npz"
mean = [127.0, 127.0, 127.0]
std = [64.0, 64.0, 64.0]
""" + QUICK)
    out = {}
    for target in TARGETS:
        done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", target],
                              cwd=root, capture_output=True, text=True, env=ENV, timeout=900)
        assert done.returncode == 0, done.stderr
        folder = root / "build" / target
        out[target] = folder, json.loads((folder / "report.json").read_text()), done.stdout
    return out


@pytest.mark.slow
def test_teacher_artifacts_are_exported_verified_and_benched(built: Built) -> None:
    for target, runtime in TARGETS.items():
        out, report, _ = built[target]
        assert report["schema_version"] == "1.4"
        assert validate_report(report) == []
        (t,) = [r for r in report["references"] if r["role"] == "teacher"]
        suffix = {"onnxruntime": ".onnx", "openvino": ".xml"}[runtime]
        assert (t["runtime"], t["path"]) == (runtime, f"teacher_fp32{suffix}")
        assert {r["role"] for r in report["references"]} == {"dense", "teacher"}
        assert all((out / "reference" / f).is_file() for f in t["files"])
        stages = {s["name"]: s for s in report["stages"]}
        # Verified in its runtime against the teacher in PyTorch: FP32 agrees all but fully,
        # and its accuracy is the teacher's stage accuracy up to a tie or two.
        assert t["top1_agreement"] >= 0.97
        assert t["accuracy"] == pytest.approx(stages["teacher"]["accuracy"], abs=0.03)
        assert t["latency_ms"]["p50"] > 0 and t["memory"]["peak_rss_mb"] > 0
        assert t["size_bytes"] > max(a["size_bytes"] for a in report["artifacts"])


@pytest.mark.slow
def test_headline_rows_are_consistent_with_the_entries(built: Built) -> None:
    for target, runtime in TARGETS.items():
        out, report, stdout = built[target]
        assert report["headline"]["reference"] == "teacher"
        (row,) = report["headline"]["rows"]
        entries = {e["path"]: e for e in report["artifacts"] + report["references"]}
        student, teacher = entries[row["student"]], entries[row["teacher"]]
        # The deployed student: the one the ship policy marks, else the INT8 artifact.
        marked = any("shipped" in a for a in report["artifacts"])
        assert (row["runtime"], student["runtime"]) == (runtime, runtime)
        assert student["shipped"] if marked else student["precision"] == "int8"
        assert teacher["role"] == "teacher"
        assert row["where"] == "host" and row["measured_on"].startswith("build host")
        assert row["size_ratio"] == pytest.approx(
            teacher["size_bytes"] / student["size_bytes"], rel=1e-3)
        assert row["accuracy_delta_points"] == pytest.approx(
            100 * (student["accuracy"] - teacher["accuracy"]), abs=0.01)
        assert row["peak_rss_ratio"] == pytest.approx(
            teacher["memory"]["peak_rss_mb"] / student["memory"]["peak_rss_mb"], rel=1e-3)
        # The speed-up is the paired comparison's, with its interval around it.
        pay = next(p for p in report["payoff"] if p["step"] == "teacher")
        assert (pay["baseline"], pay["candidate"]) == (row["teacher"], row["student"])
        assert row["speedup_p50"] == pay["speedup"] and row["method"].startswith("paired")
        lo, hi = row["speedup_ci95"]
        assert lo <= row["speedup_p50"] <= hi
        assert row["detail"].startswith(f"{runtime} on host: {row['student']} vs "
                                        f"{row['teacher']}: ")
        assert row["detail"] in stdout  # the CLI's last lines say it
        md = (out / "report.md").read_text()
        first = md.index("## ")  # the first section of the page is the headline
        assert md[first:].startswith("## Deployed student vs teacher")
        assert f"| {runtime} | host |" in md and row["detail"] in md
        html = (out / "report.html").read_text()
        assert html.index('id="headline"') < html.index("<h2>", html.index('id="headline"') + 40)
        assert "p50 speed-up ×" in html
        if 'id="flags"' in html:
            assert html.index('id="headline"') < html.index('id="flags"')


@pytest.mark.slow
def test_min_speedup_vs_teacher_gates_the_report(built: Built, tmp_path: Path) -> None:
    loose, strict = tmp_path / "loose.toml", tmp_path / "strict.toml"
    loose.write_text("[budget]\nmin_speedup_vs_teacher = 0.01\n")
    strict.write_text("[budget]\nmin_speedup_vs_teacher = 1e6\n")
    for target in TARGETS:
        report = built[target][0] / "report.json"
        ok = CliRunner().invoke(app, ["check", str(report), "--budget", str(loose)])
        assert ok.exit_code == 0, ok.output
        assert "teacher_fp32" in ok.output
        bad = CliRunner().invoke(app, ["check", str(report), "--budget", str(strict)])
        assert bad.exit_code == 1, bad.output
        assert "min_speedup_vs_teacher" in bad.output


def test_finished_model_has_no_headline_and_no_teacher_files(tmp_path: Path) -> None:
    project = finished(tmp_path / "p", extra='runtimes = ["onnxruntime"]')
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--config", str(project),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          env=ENV, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    folder = next((tmp_path / "out").glob("*/report.json")).parent
    report = json.loads((folder / "report.json").read_text())
    assert "headline" not in report
    assert not list(folder.rglob("teacher_*"))
    assert "vs teacher" not in (folder / "report.md").read_text()
    # Gating on the teacher without one is one line that says so, exit 2.
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmin_speedup_vs_teacher = 1\n")
    res = subprocess.run([sys.executable, "-m", "edgekd", "check", str(folder / "report.json"),
                          "--budget", str(budget)], capture_output=True, text=True, env=ENV,
                         timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().startswith("error: min_speedup_vs_teacher needs the teacher")
    assert "Traceback" not in res.stderr


# -- the pure functions, on report entries -------------------------------------------------------

def _entry(path: str, runtime: str, precision: str, p50: float, size: int, **kw: Any
           ) -> dict[str, Any]:
    return {"path": path, "runtime": runtime, "precision": precision, "size_bytes": size,
            "latency_ms": {"p50": p50, "p50_ci95": [p50 * 0.98, p50 * 1.02]},
            "memory": {"peak_rss_mb": 100.0, "model_rss_mb": 2.0, "baseline_rss_mb": 50.0},
            "accuracy": 0.9, **kw}


def test_compared_picks_the_dense_reference_by_role_and_the_shipped_student() -> None:
    arts = [_entry("s_fp32.onnx", "onnxruntime", "fp32", 1.0, 400),
            _entry("s_int8.onnx", "onnxruntime", "int8", 1.5, 100)]
    refs = [_entry("teacher_fp32.onnx", "onnxruntime", "fp32", 9.0, 4000, role="teacher"),
            _entry("dense_fp32.onnx", "onnxruntime", "fp32", 1.0, 400, role="dense")]
    pairs = {step: (b["path"], c["path"]) for _, step, b, c in compared(arts, refs)}
    assert pairs == {"int8": ("s_fp32.onnx", "s_int8.onnx"),
                     "pruning": ("dense_fp32.onnx", "s_fp32.onnx"),
                     "teacher": ("teacher_fp32.onnx", "s_int8.onnx")}
    arts[0]["shipped"], arts[1]["shipped"] = True, False  # the FP32 ships: it is faster
    pairs = {step: (b["path"], c["path"]) for _, step, b, c in compared(arts, refs)}
    assert pairs["teacher"] == ("teacher_fp32.onnx", "s_fp32.onnx")
    top = headline(arts, refs, [])
    assert top is not None
    (row,) = top["rows"]
    assert (row["student"], row["speedup_p50"], row["size_ratio"]) == ("s_fp32.onnx", 9.0, 10.0)
    assert row["accuracy_delta_points"] == 0.0 and row["method"].startswith("separate")
    assert headline(arts, refs[1:], []) is None  # no teacher: no headline


def test_a_slower_int8_is_flagged_only_when_it_ships() -> None:
    arts = [_entry("s_fp32.onnx", "onnxruntime", "fp32", 1.0, 400),
            _entry("s_int8.onnx", "onnxruntime", "int8", 1.5, 100)]
    rows = [{"step": "int8", "verdict": "slower", "candidate": "s_int8.onnx",
             "detail": "INT8 vs FP32 on onnxruntime: 1.50× slower"}]
    assert flags(rows, arts) == ["SLOWER: INT8 vs FP32 on onnxruntime: 1.50× slower"]
    arts[0]["shipped"], arts[1]["shipped"] = True, False
    assert flags(rows, arts) == []
    arts[0]["shipped"], arts[1]["shipped"] = False, True
    arts[1]["int8_choice"] = {"policy": "int8", "why": "the project asks for INT8"}
    assert flags(rows, arts) == ["SLOWER: INT8 vs FP32 on onnxruntime: 1.50× slower; "
                                 "ships anyway: the project asks for INT8"]


def test_headline_and_its_budget_on_a_remote_device() -> None:
    """A remote device's row comes from the two separate benchmarks there; the budget counts
    the device's row for an aarch64 target and leaves the x86 host's out."""
    from edgekd.report.gate import budget_checks
    from edgekd.settings.budgets import Budget

    pi = {"machine": "aarch64", "model": "Raspberry Pi 5"}
    arts = [_entry("s_int8.onnx", "onnxruntime", "int8", 1.0, 100,
                   device={"machine": "x86_64", "cpu": "EPYC"},
                   remote=[{"remote": "pi@pi5", **_entry("", "", "", 4.0, 0), "device": pi}])]
    refs = [_entry("teacher_fp32.onnx", "onnxruntime", "fp32", 12.0, 2000, role="teacher",
                   accuracy=0.95,
                   remote=[{"remote": "pi@pi5", **_entry("", "", "", 60.0, 0), "device": pi}])]
    top = headline(arts, refs, [], "x86_64")
    assert top is not None
    rows = {r["where"]: r for r in top["rows"]}
    assert rows["pi@pi5"]["speedup_p50"] == 15.0 and rows["host"]["speedup_p50"] == 12.0
    assert rows["pi@pi5"]["measured_on"] == "pi@pi5 (aarch64, Raspberry Pi 5)"
    assert rows["host"]["accuracy_delta_points"] == -5.0
    assert rows["pi@pi5"]["detail"] == ("onnxruntime on pi@pi5: s_int8.onnx vs "
                                        "teacher_fp32.onnx: 15.0× faster, 20.0× smaller, "
                                        "−5.00 points, peak RSS 1.00× lower")
    report = {"host": {"machine": "x86_64"}, "artifacts": arts, "references": refs,
              "headline": top}
    (check,) = budget_checks(report, Budget(min_speedup_vs_teacher=14), machine="aarch64")
    assert (check.subject, check.measured, check.ok, check.on_target) == (
        "s_int8.onnx vs teacher_fp32.onnx @ pi@pi5", 15.0, True, True)
    # Measured on the host alone: not on the target (neither held nor broken).
    report["artifacts"][0]["remote"] = []
    report["headline"] = headline(arts, refs, [], "x86_64")
    (check,) = budget_checks(report, Budget(min_speedup_vs_teacher=14), machine="aarch64")
    assert (check.ok, check.on_target, check.measured_on) == (False, False,
                                                              "build host (x86_64, EPYC)")
