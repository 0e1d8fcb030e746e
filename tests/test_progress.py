"""Progress you can see (issue 14): events from a real build for every long step, the CLI's
plain lines in a log (periodic, never wrapped), ``--quiet`` and ``--log-level``, and the one
latency rule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekd.cli.progress import PlainLines, describe
from edgekd.common.progress import Progress, reporting, tracking
from edgekd.report import format as fmt
from tests.projects import QUICK, digits

ROOT = Path(__file__).resolve().parents[1]

# A teacher whose training batches take at least 0.3 s each (a sleep: a lower bound on any
# machine), so its epoch of 10 batches is a "long" one that reports batches too.
MODELS = '''
import time

import torch
from torch import nn


class SlowTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        if self.training:
            time.sleep(0.3)
        return self.net(x)


def teacher():
    return SlowTeacher()


def student():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def old_student():
    # torch.nn.utils.weight_norm is deprecated: torch warns (FutureWarning) from its own file
    return nn.Sequential(nn.Flatten(), nn.utils.weight_norm(nn.Linear(64, 10)))
'''


def _data(folder: Path, n: int) -> None:
    x, y = digits(n)
    np.savez(folder / "data.npz", x=x / 16, y=y)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Progress], dict, dict]:
    """A real build through the Python API that trains (teacher, scratch, distilled, pruned)
    and exports for TFLite and ONNX Runtime: every progress event and step line it sent."""
    import edgekd

    root = tmp_path_factory.mktemp("progress")
    (root / "models.py").write_text(MODELS)
    _data(root, 400)
    (root / "edgekd.toml").write_text(textwrap.dedent("""
        min_agreement = 0.5  # two quick epochs: a student with near-tied logits
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "data.npz"
        """) + QUICK.replace("[teacher]\nepochs = 2", "[teacher]\nepochs = 1\nbatch_size = 32"))
    heard: list[Progress] = []
    steps: dict[str, str] = {}
    result = edgekd.build("raspberrypi", config=root / "edgekd.toml", out=root / "build",
                          on_progress=heard.append,
                          on_step=lambda n, d: steps.__setitem__(n, d))
    return heard, steps, result.report


def _of(heard: list[Progress], stage: str, task: str) -> list[Progress]:
    return [p for p in heard if p.stage == stage and p.task == task]


@pytest.mark.slow
def test_training_reports_epochs_and_batches_of_long_epochs(events) -> None:
    heard, _, _ = events
    for stage in ("teacher", "student_scratch", "student_distilled", "student_pruned"):
        train = _of(heard, stage, "train")
        epochs = [p for p in train if p.unit == "epoch"]
        assert epochs[0].started and epochs[-1].finished, stage
        last = epochs[-1]
        assert set(last.metrics) == {"loss", "accuracy"} and 0 <= last.metrics["accuracy"] <= 1
        assert last.fraction == 1.0
    batches = [p for p in _of(heard, "teacher", "train") if p.unit == "batch"]
    assert batches, "an epoch of 10 batches of >= 0.3 s each reports batches"
    for p in batches:
        assert 0 < p.done < p.total  # type: ignore[operator]
        assert p.metrics["epoch"] == 1 and p.metrics["epochs"] == 1 and "loss" in p.metrics
        assert 0 < p.fraction < 1 and p.eta is not None  # type: ignore[operator]
    assert [p.done for p in batches] == sorted(p.done for p in batches)
    # throttled: far fewer events than batches, whatever the machine's speed
    assert len(batches) <= 9
    forward = _of(heard, "teacher outputs", "forward")
    assert forward[0].started and forward[-1].finished and forward[-1].unit == "sample"


@pytest.mark.slow
def test_calibration_conversion_verification_and_benchmarks_report(events) -> None:
    heard, steps, report = events
    calibrate = _of(heard, "quantize", "calibrate onnxruntime")
    assert calibrate[0].started and calibrate[-1].finished and calibrate[-1].unit == "sample"
    tflite = {p.task for p in heard if p.stage == "export tflite"}
    assert {"convert student_fp32.tflite", "calibrate tflite",
            "convert student_int8.tflite", "step"} <= tflite
    assert _of(heard, "export onnx", "convert student_fp32.onnx")[-1].finished
    artifacts = [a["path"] for a in report["artifacts"]]
    for stage in [f"export {r}" for r in ("tflite", "onnxruntime")] + [
            f"verify {a}" for a in artifacts] + [f"bench {a}" for a in artifacts]:
        step = _of(heard, stage, "step")
        assert [p.done for p in step] == [0, 1], stage  # its start and its end
        assert stage in steps
    # Each step's line carries the time of its own work: the ONNX export has a step of its
    # own (it used to be timed inside "quantize", and "export onnxruntime" said 0.0 s).
    assert "export onnx" in steps and "torch.onnx" in steps["export onnx"]
    assert "copies of the ONNX files" in steps["export onnxruntime"]
    for p in heard:
        assert p.fraction is None or 0 <= p.fraction <= 1


def test_plain_lines_are_periodic_per_task() -> None:
    """Where stdout is a log: a task's start and end, and between them one line per period
    (the clock is given, so no wall-clock time is involved)."""
    lines: list[str] = []
    now = [0.0]
    plain = PlainLines(lines.append, every=12.0, clock=lambda: now[0])
    plain(Progress("teacher", "step", 0, 1, "step"))
    plain(Progress("teacher", "train", 0, 20, "epoch"))
    for i in range(1, 200):  # a batch event every second
        now[0] = float(i)
        plain(Progress("teacher", "train", i % 100 or 1, 100, "batch",
                       {"epoch": 1 + i // 100, "epochs": 20, "loss": 0.4123,
                        "accuracy": 0.881}, float(i)))
    plain(Progress("teacher", "train", 20, 20, "epoch", {"loss": 0.1}, 300.0))
    assert lines[0] == "teacher: training, 20 epochs"
    assert lines[-1] == "teacher: epoch 20/20, loss 0.100, done in 300.0 s"
    assert len(lines) == 2 + 199 // 12
    assert lines[1].startswith("teacher: epoch 1/20, batch 12/100, loss 0.412, acc 88.10 %,")
    assert "ETA " in lines[1] and "batch/s" in lines[1]


def test_events_are_throttled_and_free_outside_reporting() -> None:
    heard: list[Progress] = []
    with tracking("calibrate", 100_000, "sample") as t:  # nobody listens: nothing happens
        for _ in range(100_000):
            t.advance()
    with reporting(heard.append, "quantize"), tracking("calibrate", 100_000, "sample") as t:
        for _ in range(100_000):
            t.advance()
    assert heard[0].started and heard[-1].finished
    assert all(p.stage == "quantize" for p in heard)
    assert describe(heard[0]) == "quantize: calibrate, 100000 samples …"


def test_one_latency_rule() -> None:
    assert fmt.latency(0.00652) == "6.52 µs"
    assert fmt.latency(0.0944) == "94.4 µs"
    assert fmt.latency(0.142) == "0.142 ms"
    assert fmt.latency(12.34) == "12.3 ms"
    assert fmt.latency(1234.5) == "1234 ms"
    assert fmt.latency(None) == fmt.MISSING and fmt.latency(float("nan")) == fmt.MISSING
    assert fmt.latency_range([0.00621, 0.00684]) == "6.21–6.84 µs"


def _finished_project(folder: Path) -> Path:
    """A finished model whose factory uses a deprecated torch API (a real FutureWarning,
    raised in torch's own file)."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.py").write_text(MODELS)
    _data(folder, 300)
    spec = importlib.util.spec_from_file_location("progress_models", folder / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    torch.manual_seed(0)
    net = mod.old_student()
    data = np.load(folder / "data.npz")
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    save_file(net.state_dict(), folder / "student.safetensors")
    (folder / "edgekd.toml").write_text(
        '[model]\nstudent = "models.py:old_student"\nstudent_weights = "student.safetensors"\n'
        f'[data]\ntest = "data.npz"\n{QUICK}')
    return folder / "edgekd.toml"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``edgekd`` in its own process, stdout and stderr pipes (not a terminal: a CI log)."""
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT),
                               "COLUMNS": "80"})


@pytest.mark.slow
def test_log_lines_stay_whole_and_third_party_warnings_need_debug(tmp_path: Path) -> None:
    config = _finished_project(tmp_path / "p")
    out = tmp_path / ("a-folder-name-long-enough-that-rich-would-wrap-it-at-eighty-columns-"
                      "in-a-ci-log") / "build"
    done = _cli("build", "--config", str(config), "--target", "x86-cpu", "--out", str(out),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert f"{out / 'x86-cpu' / 'report.md'}," in done.stdout  # the long path, whole
    assert any(len(line) > 200 for line in lines)  # nothing cut at 80 columns
    assert "export onnx: convert student_fp32.onnx …" in lines
    assert any(line.startswith("export onnx: convert student_fp32.onnx, done in ")
               for line in lines)
    assert any(line.startswith("✓ bench student_int8.onnx p50 ") for line in lines)
    # torch's deprecation warning (raised in torch's file) is hidden by default
    assert "weight_norm" not in done.stderr and "FutureWarning" not in done.stderr

    shown = _cli("build", "--config", str(config), "--target", "x86-cpu", "--out", str(out),
                 "--quiet", "--log-level", "debug", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "FutureWarning" in shown.stderr and "weight_norm` is deprecated" in shown.stderr
    # --quiet: the summary only (no step lines, no progress lines)
    assert "✓" not in shown.stdout and "…" not in shown.stdout
    assert shown.stdout.lstrip().startswith("Models") or shown.stdout.lstrip().startswith(
        "Artifacts")
    assert "reports: " in shown.stdout
