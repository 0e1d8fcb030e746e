"""Faults in the user's model, weights and data that used to crash with a traceback or build
green with wrong results (issue 12). Each is a real project built with the real CLI: one
`error:` line, exit 2 (the user's input) or 1 (a step failed), no traceback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from edgekd.cli.commands import app
from tests.test_bad_input import _project, finished

runner = CliRunner()

FAULTY = '''
import torch
from torch import nn
from torch.nn import functional as F


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)


class Pair(Base):
    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y, y.softmax(1)


class Named(Base):
    def forward(self, x):
        return {"logits": self.fc(x.flatten(1)), "aux": x}


class Nothing(Base):
    def forward(self, x):
        self.fc(x.flatten(1))  # forgot the return


class BatchOne(Base):
    def forward(self, x):
        return self.fc(x.reshape(1, 64))


class Noisy(Base):
    def forward(self, x):
        return F.dropout(self.fc(x.flatten(1)), 0.5, training=True)


def pair(): return Pair()
def named(): return Named()
def batch_one(): return BatchOne()
def nothing(): return Nothing()
def noisy(): return Noisy()


class Flat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 2)

    def forward(self, x):
        return self.fc(x.flatten(1))


def flat(): return Flat()

from os import system  # a project module that imports a dangerous builtin
'''


def _faulty(folder: Path, student: str, *, weights: bool = True, extra: str = "") -> list[str]:
    """A finished-model project whose student is ``faulty.py:<student>``, with fitting
    weights (the Linear(64, 10) of every model above)."""
    _project(folder, "", extra=extra)
    (folder / "faulty.py").write_text(FAULTY)
    save_file({"fc.weight": torch.randn(10, 64), "fc.bias": torch.zeros(10)},
              folder / "fc.safetensors")
    model = f'student = "faulty.py:{student}"'
    if weights:
        model += '\nstudent_weights = "fc.safetensors"'
    toml = (folder / "edgekd.toml").read_text().replace("[model]\n", f"[model]\n{model}", 1)
    (folder / "edgekd.toml").write_text(toml)
    return ["--config", str(folder / "edgekd.toml")]


def case_nothing(d: Path) -> list[str]:
    return _faulty(d, "nothing")


def case_batch_one(d: Path) -> list[str]:
    return _faulty(d, "batch_one")


def case_random_in_eval(d: Path) -> list[str]:
    return _faulty(d, "noisy")


def case_nan_weights(d: Path) -> list[str]:
    args = ["--config", str(finished(d))]
    state = load_file(d / "student.safetensors")
    state["1.weight"][0, :] = float("nan")
    save_file(state, d / "student.safetensors")
    return args


def case_int8_weights(d: Path) -> list[str]:
    args = ["--config", str(finished(d))]
    state = load_file(d / "student.safetensors")
    save_file({k: (v * 100).to(torch.int8) for k, v in state.items()},
              d / "student.safetensors")
    return args


def case_stdlib_factory(d: Path) -> list[str]:
    marker = d / "pwned"
    _project(d, 'student = "os:system"\nstudent_weights = "student.safetensors"\n'
             f'student_args = {{command = "touch {marker}"}}')
    return ["--config", str(d / "edgekd.toml")]


def case_stdlib_function_in_project_module(d: Path) -> list[str]:
    return _faulty(d, "system")


def case_scale_overflows(d: Path) -> list[str]:
    # 16 * 1e38 overflows float32: every sample becomes inf
    return ["--config", str(finished(d, data='test = "data.npz"\nscale = 1e38'))]


def _onnx_graph(d: Path, nodes: list, out_dims: list, inits: list | None = None,
                domain: str | None = None) -> list[str]:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_dims)], inits or [])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=opsets), d / "m.onnx")
    return ["--config", str(_project(d, 'onnx = "m.onnx"'))]


def _linear(weight: np.ndarray) -> tuple[list, list]:
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [0, 64])
    w = helper.make_tensor("w", TensorProto.FLOAT, list(weight.shape),
                           weight.astype(np.float32).ravel().tolist())
    return ([helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["y"])], [shape, w])


def case_onnx_nan_outputs(d: Path) -> list[str]:
    nodes, inits = _linear(np.full((64, 10), np.nan))
    return _onnx_graph(d, nodes, ["n", 10], inits)


def case_onnx_custom_op(d: Path) -> list[str]:
    return _onnx_graph(d, [helper.make_node("Mystery", ["x"], ["y"], domain="acme.ops")],
                       ["n", 1, 8, 8], domain="acme.ops")


def case_onnx_symbolic_classes(d: Path) -> list[str]:
    nodes, inits = _linear(np.random.default_rng(0).normal(size=(64, 5)))
    return _onnx_graph(d, nodes, ["n", "classes"], inits)  # 5 classes; digits has labels 0..9


def _img(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (2, 6), value).save(path)


def case_class_folders_differ(d: Path) -> list[str]:
    for split, names in (("train", ("cat", "dog")), ("test", ("cats", "dog"))):
        for c, name in enumerate(names):
            for i in range(4):
                _img(d / split / name / f"{i}.png", 40 * c + i)
    _project(d, "", data='train = "train"\ntest = "test"')
    (d / "faulty.py").write_text(FAULTY)
    net = torch.nn.Linear(12, 2)
    save_file({"fc.weight": net.weight.detach(), "fc.bias": net.bias.detach()},
              d / "flat.safetensors")
    toml = (d / "edgekd.toml").read_text().replace(
        "[model]\n", '[model]\nstudent = "faulty.py:flat"\nstudent_weights = '
        '"flat.safetensors"', 1)
    (d / "edgekd.toml").write_text(toml)
    return ["--config", str(d / "edgekd.toml")]


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], list[str]]
    code: int
    says: str


CASES = [
    Case("forward returns no tensor", case_nothing, 2, "returns a NoneType, not tensors: "
         "return a tensor, a tuple or a dict of tensors from forward"),
    Case("model runs only at batch 1", case_batch_one, 2, "fails on a batch of 2"),
    Case("model is random in eval", case_random_in_eval, 2,
         "gives different outputs for the same input twice in eval mode"),
    Case("NaN in the weights", case_nan_weights, 2,
         "model.student's outputs on data.test are not finite"),
    Case("int8 weights into float parameters", case_int8_weights, 2,
         "holds 1.weight as int8 but the model's parameter is float32"),
    Case("standard-library factory (os:system)", case_stdlib_factory, 2,
         "names the standard-library module 'os'"),
    Case("a builtin re-exported by the project's module", case_stdlib_function_in_project_module,
         2, "is the standard-library posix.system"),
    Case("preprocessing overflows (data.scale = 1e38)", case_scale_overflows, 2,
         "NaN or infinite after preprocessing"),
    Case("ONNX model with NaN outputs", case_onnx_nan_outputs, 2,
         "model.onnx's outputs on data.calibration are not finite"),
    Case("ONNX op no runtime implements", case_onnx_custom_op, 2,
         "uses the op acme.ops:Mystery from a custom domain"),
    Case("symbolic class axis, label out of range", case_onnx_symbolic_classes, 2,
         "is out of range for a model with 5 outputs"),
    Case("class folders differ across splits", case_class_folders_differ, 2,
         "only in data.train: cat; only in data.test: cats"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_model_fault(case: Case, tmp_path: Path) -> None:
    args = case.setup(tmp_path / "p")
    result = runner.invoke(app, ["build", *args, "--target", "x86-cpu",
                                 "--out", str(tmp_path / "out")])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == case.code, result.output
    assert len(errors) == 1 and case.says in errors[0], result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "x86-cpu").exists()
    assert not (tmp_path / "p" / "pwned").exists()  # no factory ran a shell command


def test_symbolic_class_axis_with_good_labels_builds(tmp_path: Path) -> None:
    """The class count comes from a run: labels 0..9 fit a [batch, "classes"] output of 10."""
    nodes, inits = _linear(np.random.default_rng(0).normal(size=(64, 10)) * 0.1)
    args = _onnx_graph(tmp_path / "p", nodes, ["n", "classes"], inits)
    result = runner.invoke(app, ["build", *args, "--target", "x86-cpu", "--out",
                                 str(tmp_path / "out"), "--min-agreement", "0"])
    assert result.exit_code == 0, result.output


def test_float16_weights_load_and_class_names_reach_the_report(tmp_path: Path) -> None:
    """float16 weights into float32 parameters are fine (a lossless widening)."""
    d = tmp_path / "p"
    args = case_class_folders_differ(d)
    (d / "test" / "cats").rename(d / "test" / "cat")
    state = load_file(d / "flat.safetensors")
    save_file({k: v.half() for k, v in state.items()}, d / "flat.safetensors")
    result = runner.invoke(app, ["build", *args, "--target", "x86-cpu", "--out",
                                 str(tmp_path / "out"), "--min-agreement", "0"])
    assert result.exit_code == 0, result.output
    import json

    from edgekd.report.schema import validate_report

    report = json.loads((tmp_path / "out" / "x86-cpu" / "report.json").read_text())
    assert report["dataset"]["classes"] == ["cat", "dog"]
    assert validate_report(report) == []
