"""``edgekd.build`` with objects: a residual teacher and a student as ``nn.Module`` instances,
data as arrays, a DataLoader, a dict of splits, named inputs of a finished model. Real
training (QUICK settings), real exports and runtimes; the user's modules are never changed."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import edgekd
from edgekd.errors import UsageError
from tests.projects import QUICK
from tests.rgb_data import shapes

PROJECT = 'runtimes = ["onnxruntime"]\n' + QUICK


class ResidualTeacher(nn.Module):
    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.block(h))  # the residual add
        return self.head(h.mean((2, 3)))


class Student(nn.Module):
    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class Finished(nn.Module):
    """A finished classifier, trained in the test: wide enough for confident scores (INT8
    keeps its top-1)."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).amax((2, 3)))


class TwoInputs(nn.Module):
    """An image and a per-sample gain: a finished model with named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.student = Finished()

    def forward(self, image: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self.student(image) * gain


def _rgb(per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    x, y = shapes(per_class, seed=seed, size=16)
    return ((x.astype(np.float32) / 255 - 0.4) / 0.25).astype(np.float32), y


def _seeded(make: type[nn.Module]) -> nn.Module:
    """A module whose initial weights do not depend on what ran before (a build sets seeds)."""
    torch.manual_seed(0)
    return make()


def _trained(model: nn.Module, x: np.ndarray, y: np.ndarray, steps: int = 150) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    return model.eval()


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = model.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], v) for k, v in state.items())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("objects")
    (root / "edgekd.toml").write_text(PROJECT)
    return root / "edgekd.toml"


def test_distill_modules_on_arrays(project: Path, tmp_path: Path) -> None:
    teacher, student = _seeded(ResidualTeacher), _seeded(Student)
    teacher_state, student_state = _state(teacher), _state(student)
    x, y = _rgb(30)
    # QUICK epochs leave the student weak (flat scores): the INT8 gate is relaxed here, the
    # finished-model tests below hold it at 98 %
    loose = {"min_agreement": 0.9}
    result = edgekd.build("x86-cpu", config=project, out=tmp_path, teacher=teacher,
                          student=student, data=(x, y), train_teacher=True, settings=loose)
    report = result.report
    stages = {s["name"]: s for s in report["stages"]}
    assert {"teacher", "student_scratch", "student_distilled", "student_pruned"} <= set(stages)
    assert stages["teacher"]["trained"] and not stages["teacher"]["cached"]
    assert stages["teacher"]["accuracy"] > 1 / 6 + 0.05  # it learned the shapes
    assert report["model"]["teacher"]["object"].endswith("ResidualTeacher")
    assert report["model"]["student"]["object"].endswith("Student")
    assert report["dataset"]["splits"]["train"] + report["dataset"]["splits"]["test"] == len(x)
    for a in report["artifacts"]:
        assert a["runtime"] == "onnxruntime"
        assert a["top1_agreement"] >= 0.9, a
    # the caller's modules: the same weights, the same mode
    assert _same(teacher, teacher_state) and _same(student, student_state)
    assert teacher.training and student.training

    # The stage cache follows the objects: the same teacher is cached, another one is not.
    again = edgekd.build("x86-cpu", config=project, out=tmp_path, teacher=teacher,
                         student=student, data=(x, y), train_teacher=True, settings=loose)
    assert {s["name"]: s for s in again.report["stages"]}["teacher"]["cached"]
    other = copy.deepcopy(teacher)  # the same class with other weights: another teacher
    with torch.no_grad():
        other.head.bias += 0.1
    changed = edgekd.build("x86-cpu", config=project, out=tmp_path, teacher=other,
                           student=student, data=(x, y), train_teacher=True, settings=loose)
    assert not {s["name"]: s for s in changed.report["stages"]}["teacher"]["cached"]


def test_finished_module_on_a_dataloader(project: Path, tmp_path: Path) -> None:
    x, y = _rgb(25)
    model = _trained(_seeded(Finished), x, y)
    state = _state(model)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=32)
    result = edgekd.build("x86-cpu", config=project, out=tmp_path, student=model, data=loader)
    report = result.report
    assert [s["name"] for s in report["stages"]] == ["student"]  # no teacher: as it is
    assert "DataLoader" in str(report["dataset"].get("sources"))
    assert len(report["artifacts"]) == 2
    for a in report["artifacts"]:
        assert a["top1_agreement"] >= 0.98, a
        assert a["accuracy"] is not None
    assert _same(model, state) and not model.training
    first = report["quantization"]["cached"]

    # INT8 is cached by the model's weights, not by where it came from: the same weights
    # hit the cache, other weights do not.
    same = edgekd.build("x86-cpu", config=project, out=tmp_path, student=model,
                        data={"train": loader})
    assert same.report["quantization"]["cached"] and not first
    other = _trained(_seeded(Finished), x, y, steps=120)
    moved = edgekd.build("x86-cpu", config=project, out=tmp_path, student=other, data=loader)
    assert not moved.report["quantization"]["cached"]


def test_named_inputs_and_split_dict(project: Path, tmp_path: Path) -> None:
    x, y = _rgb(20)
    model = _seeded(TwoInputs)
    model.student = _trained(model.student, x, y)
    gain = np.ones((len(x), 1), np.float32)
    n = len(x) // 2
    # labeled: the finished model's own accuracy is measured with both inputs fed
    data = {"test": ({"image": x[:n], "gain": gain[:n]}, y[:n]),
            "calibration": {"image": x[n:], "gain": gain[n:]}}
    # 60 samples of a small, briefly trained model: one INT8 flip is 1.7 points
    result = edgekd.build("x86-cpu", config=project, out=tmp_path, student=model.eval(),
                          data=data, settings={"quant.max_accuracy_drop": 5.0,
                                               "min_agreement": 0.9})
    report = result.report
    assert [i["name"] for i in report["inputs"]] == ["image", "gain"]
    assert report["dataset"]["splits"]["test"] == n
    assert all(a["top1_agreement"] >= 0.9 for a in report["artifacts"])
    student = report["stages"][0]
    assert student["name"] == "student" and student["accuracy"] is not None


def test_quantize_a_module_on_a_dataloader(tmp_path: Path) -> None:
    x, y = _rgb(20)
    model = _trained(_seeded(Finished), x, y)
    loader = DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=16)
    got = edgekd.quantize(model, loader, out=tmp_path / "student.int8.onnx")
    assert got.passed and got.path == tmp_path / "student.int8.onnx"
    assert got.verification.samples == max(10, len(x) // 5)  # checked on held-out samples
    assert "held-out" in got.checked_on and got.verification.top1_agreement >= 0.98
    checked = edgekd.verify(got.path, model, (x, y))
    assert checked.passed and checked.verification.accuracy is not None
    assert [p.name for p in tmp_path.iterdir()] == ["student.int8.onnx"]  # nothing else


@pytest.mark.parametrize(("kwargs", "says"), [
    ({"student": "models.py:student"}, "not a torch.nn.Module"),
    ({"teacher": Student()}, "teacher= needs student="),
    ({"student": Student(), "data": "data.npz"}, "is a path"),
    ({"student": Student(), "data": {"train": (np.zeros((4, 3, 16, 16)), np.zeros(4)),
                                      "tests": np.zeros((4, 3, 16, 16))}}, "name only splits"),
    ({"student": Student(), "data": 42}, "is a int"),
    ({"student": Student(), "task": "detection"}, "choose one of"),
])
def test_bad_objects_fail_before_any_work(project: Path, tmp_path: Path, kwargs: dict,
                                          says: str) -> None:
    with pytest.raises(UsageError, match=says) as err:
        edgekd.build("x86-cpu", config=project, out=tmp_path / "out", **kwargs)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_dataloader_of_triples_is_one_line(project: Path, tmp_path: Path) -> None:
    x, y = _rgb(5)
    triples = TensorDataset(torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(y))
    with pytest.raises(UsageError, match=r"yields a list of 3 values: yield \(inputs, labels\)"):
        edgekd.build("x86-cpu", config=project, out=tmp_path / "out", student=Student().eval(),
                     data=DataLoader(triples, batch_size=8))
    assert not (tmp_path / "out" / "x86-cpu").exists()
