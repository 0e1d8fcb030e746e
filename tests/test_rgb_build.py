"""An RGB image project as users bring it: class folders of 3-channel PNGs, a residual
teacher that is not an ``nn.Sequential``, and edgekd's own MobileNetV2 as the student,
built end to end (train, distill, prune, INT8, ONNX Runtime and TFLite, verification,
robustness). The grayscale example never exercised the RGB path: exports failed on it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.projects import QUICK
from tests.rgb_data import CLASSES, shapes, write_folders

RESNET = '''
"""The user's teacher: a small ResNet (residual blocks, not an nn.Sequential)."""
from torch import nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                  nn.BatchNorm2d(cout))

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.skip(x))


class ResNet(nn.Module):
    def __init__(self, num_classes=6):
        super().__init__()
        self.head = nn.Linear(32, num_classes)  # defined first, called last
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU())
        self.layer1 = Block(16, 16, 2)
        self.layer2 = Block(16, 32, 2)

    def forward(self, x):
        return self.head(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


def teacher(num_classes=6):
    return ResNet(num_classes)
'''


@pytest.mark.slow
def test_rgb_folders_residual_teacher_mobilenet_student(tmp_path: Path) -> None:
    x, y = shapes(20, seed=0)
    write_folders(tmp_path / "data" / "train", x[:90], y[:90])
    write_folders(tmp_path / "data" / "test", x[90:], y[90:])
    (tmp_path / "models.py").write_text(RESNET)
    (tmp_path / "edgekd.toml").write_text(f"""
target = "raspberrypi"
min_agreement = 0.0
[model]
teacher = "models.py:teacher"
student = "edgekd.train.models:mobilenet_v2"
student_args = {{ num_classes = {len(CLASSES)}, width = 0.35, stem_stride = 1 }}
[data]
train = "data/train"
test = "data/test"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
""" + QUICK.replace("corruptions = []", 'corruptions = ["shift"]'))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    done = subprocess.run([sys.executable, "-m", "edgekd", "build"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=1500)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "build" / "raspberrypi" / "report.json").read_text())
    assert report["input"]["shape"] == [1, 3, 32, 32]
    assert report["inputs"][0]["kind"] == "image"
    assert report["dataset"]["classes"] == list(CLASSES)
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["teacher", "student_scratch", "student_distilled", "student_pruned"]
    # Automatic layer pairs on a residual teacher: its top-level layers in call order.
    pairs = stages["student_distilled"]["pairs"]
    assert pairs and all(t in ("stem", "layer1", "layer2") for _, t in pairs)
    assert stages["student_pruned"]["weight_sparsity"] == pytest.approx(0.5, abs=0.01)
    built = {(a["runtime"], a["precision"]) for a in report["artifacts"]}
    assert built == {("tflite", "fp32"), ("tflite", "int8"), ("onnxruntime", "fp32"),
                     ("onnxruntime", "int8")}
    for artifact in report["artifacts"]:
        assert artifact["outputs"][0]["classifier"] is True
    assert "shift" in {c["name"] for c in report["robustness"]["conditions"]}
    assert set(report["robustness"]["models"]) >= {"teacher", "student_scratch",
                                                   "student_distilled"}
