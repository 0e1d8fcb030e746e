"""Quantization-aware distillation (edgekd.train.qat, edgekd.compress.qat): the fake
quantization mirrors ONNX Runtime's static INT8, the fine-tune leaves the shipped student
alone, and a build runs it, reports what it bought and ships a verified INT8 model.
Real ONNX Runtime, real builds, tiny models made here, one thread."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from projects import QUICK, digits
from safetensors.torch import save_file
from torch import nn

from edgekd.backends.from_torch import to_onnx
from edgekd.compress.int8_search import first_output
from edgekd.compress.quantize import quantize
from edgekd.settings.config import QuantConfig
from edgekd.train.qat import FakeQuant, QATSettings, calibrate, mirror, qat_finetune

MODELS = '''
import torch
from torch import nn


class Res(nn.Module):
    """A 3-channel residual CNN whose first stem channel is 200x the others: one outlier
    sets the per-tensor INT8 range of the activations after it."""

    def __init__(self, scale=200.0):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        s = torch.ones(1, 8, 1, 1)
        s[0, 0] = scale
        self.register_buffer("s", s)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        h = torch.relu(self.stem(x) * self.s)
        h = h + self.c2(torch.relu(self.c1(h)))
        return self.head(torch.relu(h).flatten(1))


def student():
    return Res()
'''


def _module(folder: Path):  # the user's models.py, imported
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"qat{abs(hash(folder))}", folder / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def _data() -> tuple[np.ndarray, np.ndarray]:
    x, y = digits()
    return np.repeat(x / 16.0, 3, axis=1).astype(np.float32), y


def _trained(folder: Path, n: int = 1200) -> nn.Module:
    """The outlier CNN, trained briefly on the first ``n`` digits (3 channels)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.py").write_text(MODELS)
    x, y = _data()
    torch.manual_seed(0)
    model = _module(folder).student()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[:n]), torch.from_numpy(y[:n])
    for _ in range(3):
        for idx in torch.randperm(n).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_mirror_predicts_onnx_runtime_int8(tmp_path: Path) -> None:
    """The simulation is ORT's INT8: it agrees with ORT's INT8 model on top-1 more closely
    than with the FP32 model it was made from, and the plain layers are back after."""
    model = _trained(tmp_path)
    x, _ = _data()
    val, cal = x[1200:], x[:200]
    to_onnx(model, x[:2], tmp_path / "m.onnx")
    q = quantize(tmp_path / "m.onnx", tmp_path / "m_int8.onnx", cal,
                 QuantConfig(max_accuracy_drop=None))
    ort = first_output(q.path, val, 1).argmax(1)
    with torch.no_grad():
        fp = model(torch.from_numpy(val)).argmax(1).numpy()
    keys = list(model.state_dict())
    with mirror(model) as quants:
        assert len(quants) == 4 and all(isinstance(m, FakeQuant) for m in quants)
        calibrate(model, quants, cal)
        with torch.no_grad():
            sim = model(torch.from_numpy(val)).argmax(1).numpy()
    assert list(model.state_dict()) == keys
    assert not any(isinstance(m, FakeQuant) for m in model.modules())
    assert (sim == ort).mean() >= 0.98
    assert (sim == ort).mean() >= (fp == ort).mean()


def test_finetune_leaves_the_student_alone(tmp_path: Path) -> None:
    model = _trained(tmp_path)
    x, _ = _data()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned = qat_finetune(model, x[:600], x[:200], QATSettings(epochs=1, lr=1e-3))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in tuned.state_dict().items()
               if k != "s")
    assert list(tuned.state_dict()) == list(before)


@pytest.mark.xfail(strict=False, reason=(
    "not reached yet: on this model QAT + KD (3 epochs, lr 1e-4) does not recover half of "
    "the 1-2 points of top-1 agreement post-training INT8 loses on held-out digits "
    "(see the report of issue 16, item 4)"))
def test_qat_recovers_half_of_what_ptq_loses(tmp_path: Path) -> None:
    model = _trained(tmp_path)
    x, _ = _data()
    val, cal = x[1200:], x[:200]
    with torch.no_grad():
        fp = model(torch.from_numpy(val)).argmax(1).numpy()

    def agreement(m: nn.Module, name: str) -> float:
        to_onnx(m, x[:2], tmp_path / f"{name}.onnx")
        q = quantize(tmp_path / f"{name}.onnx", tmp_path / f"{name}_int8.onnx", cal,
                     QuantConfig(max_accuracy_drop=None))
        return float((first_output(q.path, val, 1).argmax(1) == fp).mean())

    ptq = agreement(model, "ptq")
    assert 1 - ptq > 0.01  # the case: PTQ loses more than a point
    qat = agreement(qat_finetune(model, x[:1200], cal, QATSettings(epochs=3, lr=1e-4)), "qat")
    assert (qat - ptq) / (1 - ptq) >= 0.5


def _project(folder: Path, qat: str) -> Path:
    model = _trained(folder)
    x, y = _data()
    np.savez(folder / "train.npz", x=x[:1200], y=y[:1200])
    np.savez(folder / "test.npz", x=x[1200:], y=y[1200:])
    save_file(model.state_dict(), folder / "student.safetensors")
    (folder / "edgekd.toml").write_text(
        # The outlier costs PTQ about 2 points of top-1 agreement on the test split (it
        # is built to): the builds here check the QAT step, not the verification budget.
        'min_agreement = 0.95\n'
        '[model]\nstudent = "models.py:student"\nstudent_weights = "student.safetensors"\n'
        f'[data]\ntrain = "train.npz"\ntest = "test.npz"\n[quant]\nqat = {qat}\n'
        "[train]\nthreads = 1\n" + QUICK)
    return folder


def _build(folder: Path) -> dict:
    run = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", "x86-cpu"],
                         cwd=folder, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads((folder / "build" / "x86-cpu" / "report.json").read_text())


def test_build_runs_qat_and_reports_it(tmp_path: Path) -> None:
    folder = _project(tmp_path / "p", "true")
    report = _build(folder)
    qat = report["quantization"]["qat"]
    assert qat["path"] in ("qat", "ptq") and qat["figure"] == "accuracy"
    assert 0 <= qat["before"] <= 1 and 0 <= qat["after"] <= 1
    assert qat["epochs"] == 3 and qat["cached"] is False and qat["bought"]
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    assert int8["top1_agreement"] >= 0.95  # verified against the FP32 student that ships
    fp32 = next(a for a in report["artifacts"] if a["precision"] == "fp32")
    original = folder / "build" / "x86-cpu" / fp32["path"]
    assert first_output(original, _data()[0][1200:1210], 1).shape == (10, 10)
    again = _build(folder)  # the fine-tune is a cached stage
    assert again["quantization"]["qat"]["cached"] is True
    assert again["quantization"]["qat"]["path"] == qat["path"]


def test_qat_false_keeps_post_training_int8(tmp_path: Path) -> None:
    folder = _project(tmp_path / "p", "false")
    report = _build(folder)
    assert "qat" not in report["quantization"]
    assert not list((folder / "build").rglob("student_qat*"))
