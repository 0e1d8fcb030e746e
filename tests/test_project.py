"""Bring your own model and data: real project folders built end to end through the CLI and
the Python API, with the real runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import edgekd
from edgekd.cli.commands import app
from edgekd.errors import UsageError
from edgekd.settings.project import STARTER, load_project
from tests.projects import classifier_project, digits, trained_regressor, write

runner = CliRunner()


def _build(project: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["build", "--config", str(project), *args])
    return result.exit_code, result.output


def test_init_writes_a_starter_that_parses(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert (tmp_path / "edgekd.toml").read_text() == STARTER
    project = load_project(None, cwd=tmp_path)
    assert project.model is not None and project.model.teacher == "models.py:teacher"
    assert project.target == "x86-cpu" and project.data.train == "data/train"
    again = runner.invoke(app, ["init"])
    assert again.exit_code == 2 and "already has" in again.output


def test_cli_settings_override_the_file(tmp_path: Path) -> None:
    path = classifier_project(tmp_path)
    project = load_project(path, ["prune.sparsity=0.7", "data.test_fraction=0.3",
                                  "target=intel-cpu"])
    assert project.build.prune.sparsity == 0.7 and project.data.test_fraction == 0.3
    assert project.target == "intel-cpu" and project.build.distill.epochs == 2  # from file
    with pytest.raises(UsageError, match="unknown key 'nope'"):
        load_project(path, ["model.nope=1"])


@pytest.mark.slow
def test_distill_users_models_on_users_npz(tmp_path: Path) -> None:
    """The user's teacher (trained by edgekd) distilled into the user's non-Sequential student
    with lazy layers; .npz data; the report and manifest say where everything came from."""
    project = classifier_project(tmp_path / "p")
    code, out = _build(project, "--out", str(tmp_path / "out"), "--set", "teacher.epochs=8",
                       "--set", "distill.epochs=10", "--set", "student.epochs=10")
    assert code == 0, out
    report = json.loads((tmp_path / "out" / "x86-cpu" / "report.json").read_text())
    assert report["stages"][2]["accuracy"] > 0.8  # CLI flags beat the file's 2 epochs
    names = [s["name"] for s in report["stages"]]
    assert names == ["teacher", "student_scratch", "student_distilled", "student_pruned"]
    # Not an nn.Sequential: automatic pairs from its top-level layers in call order.
    assert ["features", "6"] in report["stages"][2]["pairs"] and "note" not in report["stages"][2]
    assert report["task"] == "classification"
    assert report["model"]["student"]["factory"] == "models.py:student"
    assert report["dataset"]["sources"] == {"train": "data/digits.npz"}
    assert report["input"]["shape"] == [1, 1, 8, 8]
    assert report["input"]["preprocessing"]["scale"] == 0.0625
    for a in report["artifacts"]:
        assert a["top1_agreement"] >= 0.9 and a["accuracy"] > 0.7 and a["cosine_min"] > 0.9
    manifest = json.loads((tmp_path / "out" / "x86-cpu" / "manifest.json").read_text())
    assert manifest["project"]["model"]["teacher"] == "models.py:teacher"
    assert set(manifest["dataset"]["split_fingerprints"]) == {"train", "test", "calibration"}


@pytest.mark.slow
def test_finished_regressor_on_1d_signals_in_all_three_runtimes(tmp_path: Path) -> None:
    """A trained non-classifier (1-D signals -> 4 values), no teacher: no training stages;
    verification is numeric; TFLite, ONNX Runtime and OpenVINO all built and checked."""
    project = trained_regressor(tmp_path / "p")
    result = edgekd.build("raspberrypi", config=project, out=tmp_path / "out",
                          settings={"runtimes": ["tflite", "onnxruntime"]})
    report = result.report
    assert [s["name"] for s in report["stages"]] == ["student"]
    assert report["stages"][0]["accuracy"] is None and report["task"] == "regression"
    assert report["input"]["shape"] == [1, 3, 64] and report["input"]["output"]["shape"] == [1, 4]
    for a in report["artifacts"]:
        assert a["accuracy"] is None and a["top1_agreement"] is None
        assert a["cosine_min"] >= 0.99, a
        if a["precision"] == "fp32":
            assert a["max_rel_error"] < 1e-4, a
    assert {a["runtime"] for a in report["artifacts"]} == {"tflite", "onnxruntime"}
    assert "quantization" in report and report["quantization"]["int8_accuracy"] is None
    ov = edgekd.build("intel-cpu", config=project, out=tmp_path / "out")
    assert {a["runtime"] for a in ov.report["artifacts"]} == {"openvino"}
    assert all(a["cosine_min"] >= 0.99 for a in ov.report["artifacts"])


@pytest.mark.slow
def test_finished_onnx_model_with_images_in_class_folders(tmp_path: Path, monkeypatch) -> None:
    """`edgekd build --model file.onnx`: a user's ONNX classifier with a fixed batch of 1,
    RGB PNG images in class sub-folders, resized; ONNX Runtime and OpenVINO."""
    import torch
    from PIL import Image

    root = tmp_path / "p"
    x, y = digits(120)
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        folder = root / "images" / f"digit_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        gray = (img[0] * 15.9).astype(np.uint8)
        Image.fromarray(gray).convert("RGB").resize((12, 12)).save(folder / f"{i:04d}.png")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 16 * 16, 10)).eval()
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(root / "net.onnx"),
                      input_names=["pixels"], dynamo=False)
    write(root, """
        [model]
        task = "classification"
        [data]
        test = "images"
        image_size = [16, 16]
        color = "rgb"
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
        """.replace("[model]\n        task", "[model]\n        onnx = \"net.onnx\"\n        task"))
    for target in ("x86-cpu", "intel-cpu"):
        code, out = _build(root / "edgekd.toml", "--target", target, "--out", str(tmp_path / "o"))
        assert code == 0, out
        report = json.loads((tmp_path / "o" / target / "report.json").read_text())
        assert report["stages"] == [] and report["model"]["onnx"] == "net.onnx"
        assert report["input"]["shape"] == [1, 3, 16, 16]
        assert report["dataset"]["num_classes"] == 10
        for a in report["artifacts"]:
            assert a["top1_agreement"] >= 0.9, a  # labels are random for this random net
        assert not (tmp_path / "o" / target / "student.safetensors").exists()
    # --model replaces the project's model; its path starts at the current folder.
    monkeypatch.chdir(root)
    code, out = _build(root / "edgekd.toml", "--model", "net.onnx", "--target", "x86-cpu",
                       "--out", str(tmp_path / "m"))
    assert code == 0, out
    report = json.loads((tmp_path / "m" / "x86-cpu" / "report.json").read_text())
    assert report["model"]["onnx"] == str(root / "net.onnx")
    # TFLite comes from PyTorch: an ONNX model for raspberrypi is one clear line.
    code, out = _build(root / "edgekd.toml", "--target", "raspberrypi", "--out",
                       str(tmp_path / "o"))
    assert code == 2 and "TFLite" in out and "runtimes" in out


@pytest.mark.slow
def test_finished_sequence_classifier_with_three_classes(tmp_path: Path) -> None:
    """Sequences [20 steps, 6 features] -> 3 classes, a trained PyTorch model given as a
    state dict (.pt) from a Python package in the project; TFLite and ONNX Runtime."""
    import torch

    root = tmp_path / "p"
    (root / "nets").mkdir(parents=True)
    (root / "nets" / "__init__.py").write_text("")
    (root / "nets" / "seq.py").write_text(
        "from torch import nn\n"
        "class Seq(nn.Module):\n"
        "    def __init__(self, features=6, classes=3):\n"
        "        super().__init__()\n"
        "        self.step = nn.Sequential(nn.Linear(features, 16), nn.ReLU())\n"
        "        self.head = nn.Linear(16, classes)\n"
        "    def forward(self, x):\n"
        "        return self.head(self.step(x).mean(1))\n"
        "def build(classes=3):\n"
        "    return Seq(classes=classes)\n")
    import importlib.util
    spec = importlib.util.spec_from_file_location("seqnets", root / "nets" / "seq.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    torch.manual_seed(0)
    torch.save(mod.build().state_dict(), root / "seq.pt")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((90, 20, 6)).astype(np.float32)
    np.savez(root / "seq.npz", x=x, y=rng.integers(0, 3, 90))
    write(root, """
        target = "raspberrypi"
        [model]
        student = "nets.seq:build"
        student_args = { classes = 3 }
        student_weights = "seq.pt"
        [data]
        test = "seq.npz"
        """)
    result = edgekd.build(config=root / "edgekd.toml", out=tmp_path / "out")
    report = result.report
    assert report["input"]["shape"] == [1, 20, 6] and report["input"]["output"]["shape"] == [1, 3]
    assert report["dataset"]["num_classes"] == 3  # from the model's outputs (no folders)
    assert {a["runtime"] for a in report["artifacts"]} == {"tflite", "onnxruntime"}
    for a in report["artifacts"]:
        assert a["top1_agreement"] >= 0.95 and a["accuracy"] is not None, a


def test_budgets_per_target_and_the_validation_split(tmp_path: Path) -> None:
    path = classifier_project(tmp_path)
    text = path.read_text().replace("[data]", "[budget]\nmax_size_kb = 10\n[budget.intel-cpu]\n"
                                    "max_size_kb = 20\nmax_p95_ms = 1\n\n[data]")
    path.write_text(text.replace('train = "data/digits.npz"',
                                 'train = "data/digits.npz"\nvalidation = "data/val.npz"'))
    x, y = digits(60)
    np.savez(tmp_path / "data" / "val.npz", x=x, y=y)
    project = load_project(path)
    assert project.budget_for("x86-cpu").max_size_kb == 10
    assert project.budget_for("intel-cpu").max_size_kb == 20
    assert project.budget_for("intel-cpu").max_p95_ms == 1
    from edgekd.inputs.resolve import resolve

    data = resolve(project).data
    assert data.validation is not None and len(data.validation) == 60
    assert len(data.test) == 120 and len(data.train) == 480  # 20 % of 600 held out
    assert data.calibration.y is not None  # samples of train, labels kept
