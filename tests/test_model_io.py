"""Models with several inputs and outputs, integer and stateful inputs, built end to end in
their real runtimes: every input fed by name, every output verified on its own, stateful
models checked over a stream; a damaged INT8 model and a NaN model fail by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from edgekd.report.model import SCHEMA_VERSION

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
BENCH = """
[bench]
warmup = 2
runs = 10
seconds = 0
"""


def _edgekd(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekd", "build", *args], cwd=root,
                          capture_output=True, text=True, env=ENV, timeout=900)


def _user_model(root: Path, module: str, code: str, factory: str) -> Any:
    """A user's model file ``root/<module>.py`` and its weights ``<factory>.safetensors``
    (the factory's initial weights: a finished model); returns the module."""
    import importlib.util

    from safetensors.torch import save_file

    (root / f"{module}.py").write_text(code)
    spec = importlib.util.spec_from_file_location(f"user_{module}", root / f"{module}.py")
    assert spec is not None and spec.loader is not None
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    save_file(getattr(loaded, factory)().state_dict(), str(root / f"{factory}.safetensors"))
    return loaded


def _finished_onnx(root: Path, onnx_file: str, data: str) -> None:
    """A project whose model is a finished ONNX (regression) file, data its test split."""
    (root / "edgekd.toml").write_text(f'[model]\nonnx = "{onnx_file}"\ntask = "regression"\n'
                                      f'[data]\ntest = "{data}"\n')


def _stream_model(path: Path) -> None:
    """A recurrent detector as production audio models are shaped: a float chunk
    [batch, 64], a float state [batch, 16] and an int64 sample rate (a scalar) in; a
    probability [batch, 1] and the next state out."""
    rng = np.random.default_rng(0)
    w1 = (rng.normal(size=(64, 16)) / 8).astype(np.float32)
    w2 = (rng.normal(size=(16, 16)) / 4).astype(np.float32)
    w3 = rng.normal(size=(16, 1)).astype(np.float32)
    nodes = [h.make_node("MatMul", ["chunk", "W1"], ["a"]),
             h.make_node("MatMul", ["state", "W2"], ["b"]),
             h.make_node("Add", ["a", "b"], ["c"]), h.make_node("Tanh", ["c"], ["next_state"]),
             h.make_node("MatMul", ["next_state", "W3"], ["z"]),
             h.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT),
             h.make_node("Div", ["srf", "k"], ["s"]), h.make_node("Mul", ["z", "s"], ["zs"]),
             h.make_node("Sigmoid", ["zs"], ["prob"])]
    graph = h.make_graph(
        nodes, "stream",
        [h.make_tensor_value_info("chunk", T.FLOAT, ["batch", 64]),
         h.make_tensor_value_info("state", T.FLOAT, ["batch", 16]),
         h.make_tensor_value_info("sr", T.INT64, [])],
        [h.make_tensor_value_info("prob", T.FLOAT, ["batch", 1]),
         h.make_tensor_value_info("next_state", T.FLOAT, ["batch", 16])],
        [nh.from_array(w1, "W1"), nh.from_array(w2, "W2"), nh.from_array(w3, "W3"),
         nh.from_array(np.array(16000, np.float32), "k")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


STREAM_TOML = """
[model]
onnx = "stream.onnx"
task = "regression"
[data]
test = "chunks.npz"
calibration = "calibration.npz"
[inputs.sr]
value = 16000
[inputs.state]
zeros = true
from_output = "next_state"
[outputs.prob]
threshold = 0.5
"""


@pytest.fixture
def stream_project(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    _stream_model(tmp_path / "stream.onnx")
    # Consecutive chunks of one signal: the test split is one stream.
    np.savez(tmp_path / "chunks.npz", chunk=rng.normal(size=(160, 64)).astype(np.float32))
    np.savez(tmp_path / "calibration.npz",
             chunk=rng.normal(size=(100, 64)).astype(np.float32))
    (tmp_path / "edgekd.toml").write_text(STREAM_TOML + BENCH)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86-cpu", "intel-cpu"])
def test_three_inputs_two_outputs_verified_per_output_and_streamed(stream_project: Path,
                                                                    target: str) -> None:
    done = _edgekd(stream_project, "--target", target)
    assert done.returncode == 0, done.stderr
    report = json.loads((stream_project / "build" / target / "report.json").read_text())
    assert report["schema_version"] == SCHEMA_VERSION
    assert [(i["name"], i["dtype"], i["role"]) for i in report["inputs"]] == [
        ("chunk", "float32", "data"), ("state", "float32", "state"), ("sr", "int64", "fixed")]
    assert report["inputs"][1]["from_output"] == "next_state"
    assert report["inputs"][2]["value"] == 16000
    assert [o["name"] for o in report["outputs"]] == ["prob", "next_state"]
    assert report["outputs"][0]["threshold"] == 0.5
    for artifact in report["artifacts"]:
        prob, state = artifact["outputs"]
        assert (prob["name"], prob["elements"], prob["cosine_min"]) == ("prob", 1, None)
        assert prob["decision_agreement"] >= 0.98 and prob["rel_error"] <= 0.2
        assert state["elements"] == 16 and state["cosine_min"] >= 0.99
        assert artifact["stream"]["chunks"] == 50
        assert [o["name"] for o in artifact["stream"]["last"]] == ["prob", "next_state"]
        assert artifact["latency_ms"]["p50"] > 0  # the benchmark fed all three inputs
    assert report["robustness"]["conditions"][0]["name"] == "clean"
    assert {c.get("input") for c in report["robustness"]["conditions"][1:]} == {"chunk"}


@pytest.mark.slow
def test_int8_calibrated_on_zeros_fails_naming_the_output(stream_project: Path) -> None:
    np.savez(stream_project / "calibration.npz", chunk=np.zeros((50, 64), np.float32))
    done = _edgekd(stream_project, "--target", "x86-cpu")
    assert done.returncode == 1
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: student_int8.onnx (onnxruntime, int8) against its "
                           "reference model: output '")
    assert "first try more or more representative calibration data" in line
    assert "lower the threshold" not in line
    assert not (stream_project / "build" / "x86-cpu").exists()  # nothing half-written


def test_undeclared_state_is_one_line(tmp_path: Path) -> None:
    _stream_model(tmp_path / "stream.onnx")
    np.savez(tmp_path / "chunks.npz", chunk=np.ones((20, 64), np.float32))
    (tmp_path / "edgekd.toml").write_text(textwrap.dedent("""
        [model]
        onnx = "stream.onnx"
        task = "regression"
        [data]
        test = "chunks.npz"
        [inputs.rate]
        value = 16000
        """))
    done = _edgekd(tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: [inputs.rate] names no input of model.onnx (its "
                                   "inputs: chunk, state, sr): use one of those names")
    _finished_onnx(tmp_path, "stream.onnx", "chunks.npz")
    done = _edgekd(tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "chunks.npz has no input 'state'" in done.stderr


TOKENS = '''
"""A user's bag-of-tokens classifier: int64 token ids in, class scores out."""
import torch
from torch import nn


class Bag(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids).mean(1))


def bag():
    torch.manual_seed(0)
    return Bag()
'''


@pytest.mark.slow
@pytest.mark.parametrize("target", ["x86-cpu", "intel-cpu"])
def test_int64_token_ids_through_onnx_runtime_and_openvino(tmp_path: Path,
                                                          target: str) -> None:
    import torch
    nets = _user_model(tmp_path, "nets", TOKENS, "bag")
    ids = np.random.default_rng(0).integers(1, 50, size=(120, 12)).astype(np.int64)
    with torch.no_grad():
        y = nets.bag()(torch.from_numpy(ids)).argmax(1).numpy()
    np.savez(tmp_path / "tokens.npz", input_ids=ids, y=y)
    (tmp_path / "edgekd.toml").write_text(textwrap.dedent("""
        [model]
        student = "nets.py:bag"
        student_weights = "bag.safetensors"
        [data]
        test = "tokens.npz"
        """) + BENCH)
    done = _edgekd(tmp_path, "--target", target)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "build" / target / "report.json").read_text())
    assert report["inputs"] == [{"name": "input_ids", "shape": [1, 12], "dtype": "int64",
                                 "role": "data", "kind": "tokens",
                                 "preprocessing": "as stored (integers, not preprocessed)"}]
    assert report["input"]["dtype"] == "int64"
    for artifact in report["artifacts"]:
        assert artifact["top1_agreement"] >= 0.98 and artifact["accuracy"] >= 0.98
        assert artifact["outputs"][0]["classifier"] is True
        assert artifact["latency_ms"]["p50"] > 0
    assert {c.get("kind") for c in report["robustness"]["conditions"][1:]} == {"tokens"}


def test_nan_output_model_fails(tmp_path: Path) -> None:
    graph = h.make_graph([h.make_node("Log", ["x"], ["y"])], "log",
                         [h.make_tensor_value_info("x", T.FLOAT, ["batch", 4])],
                         [h.make_tensor_value_info("y", T.FLOAT, ["batch", 4])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "log.onnx"))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).normal(size=(40, 4)).astype(
        np.float32))
    _finished_onnx(tmp_path, "log.onnx", "x.npz")
    done = _edgekd(tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "are not finite (NaN or inf" in done.stderr
    assert not list(tmp_path.glob("build/*/report.json"))


STATEFUL = '''
"""A user's streaming model in PyTorch: (chunk, state) -> (prob, next state)."""
import torch
from torch import nn


class Cell(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(32, 8)
        self.rec = nn.Linear(8, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, chunk, state):
        new = torch.tanh(self.inp(chunk) + self.rec(state))
        return torch.sigmoid(self.out(new)), new


def cell():
    return Cell()
'''


@pytest.mark.slow
def test_pytorch_model_with_state_and_two_outputs_on_every_runtime(tmp_path: Path) -> None:
    """Export of several inputs and outputs from PyTorch: ONNX (dynamic batch on both
    inputs) and TFLite (LiteRT-Torch, inputs in forward's order)."""
    _user_model(tmp_path, "cell", STATEFUL, "cell")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "chunks.npz", chunk=rng.normal(size=(120, 32)).astype(np.float32))
    np.savez(tmp_path / "calib.npz", chunk=rng.normal(size=(80, 32)).astype(np.float32))
    (tmp_path / "edgekd.toml").write_text(textwrap.dedent("""
        [model]
        student = "cell.py:cell"
        student_weights = "cell.safetensors"
        task = "regression"
        [data]
        test = "chunks.npz"
        calibration = "calib.npz"
        [inputs.state]
        zeros = true
        shape = [8]
        from_output = "output1"
        [outputs.output0]
        threshold = 0.5
        """) + BENCH)
    done = _edgekd(tmp_path, "--target", "raspberrypi")
    assert done.returncode == 0, done.stderr
    # Third-party import warnings (optional torchao kernels, a torch deprecation) are for
    # --debug only: they read like a broken install.
    assert "torchao" not in done.stderr and "_pytree" not in done.stderr, done.stderr
    report = json.loads((tmp_path / "build" / "raspberrypi" / "report.json").read_text())
    assert [i["name"] for i in report["inputs"]] == ["chunk", "state"]
    assert [o["name"] for o in report["outputs"]] == ["output0", "output1"]
    runtimes = {(a["runtime"], a["precision"]) for a in report["artifacts"]}
    assert {("tflite", "fp32"), ("tflite", "int8"), ("onnxruntime", "int8")} <= runtimes
    for artifact in report["artifacts"]:
        assert len(artifact["outputs"]) == 2 and artifact["stream"]["chunks"] == 50


MASKED = '''
"""A user's text classifier: token ids and an attention mask (optional in forward, as in
Hugging Face models), and a Dataset that returns a dict of inputs per item."""
import numpy as np
import torch
from torch import nn


class Masked(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(30, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask=None):
        h = self.embed(input_ids)
        if attention_mask is not None:
            m = attention_mask.unsqueeze(-1).float()
            h = (h * m).sum(1) / m.sum(1).clamp(min=1)
        else:
            h = h.mean(1)
        return self.head(h)


def masked():
    return Masked()


class Texts(torch.utils.data.Dataset):
    def __init__(self):
        rng = np.random.default_rng(3)
        self.ids = rng.integers(1, 30, size=(80, 10))
        self.lengths = rng.integers(3, 11, size=80)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        mask = np.arange(10) < self.lengths[i]
        ids = np.where(mask, self.ids[i], 0)
        with torch.no_grad():
            y = int(masked()(torch.from_numpy(ids[None]), torch.from_numpy(mask[None])).argmax())
        return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}, y


def texts():
    return Texts()
'''


@pytest.mark.slow
def test_dataset_of_dicts_with_a_bool_mask_for_an_optional_input(tmp_path: Path) -> None:
    _user_model(tmp_path, "text", MASKED, "masked")
    (tmp_path / "edgekd.toml").write_text(textwrap.dedent("""
        runtimes = ["onnxruntime"]
        [model]
        student = "text.py:masked"
        student_weights = "masked.safetensors"
        [data]
        test = "text.py:texts"
        """) + BENCH)
    done = _edgekd(tmp_path, "--target", "raspberrypi")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "build" / "raspberrypi" / "report.json").read_text())
    assert [(i["name"], i["dtype"], i["kind"]) for i in report["inputs"]] == [
        ("input_ids", "int64", "tokens"), ("attention_mask", "bool", "mask")]
    for artifact in report["artifacts"]:
        assert artifact["top1_agreement"] >= 0.98
    conditions = report["robustness"]["conditions"][1:]
    assert conditions and {c["input"] for c in conditions} == {"input_ids"}  # mask untouched


SILERO_LIKE = '''
"""A user's streaming model with its state laid out as Silero VAD's: [2, batch, 8]."""
import torch
from torch import nn


class Cell(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(32, 8)
        self.rec = nn.Linear(8, 8)
        self.out = nn.Linear(8, 1)

    def forward(self, chunk, state):
        new = torch.tanh(self.inp(chunk) + self.rec(state[0]))
        return torch.sigmoid(self.out(new)), torch.stack([new, new])


def cell():
    return Cell()
'''


@pytest.mark.slow
def test_state_with_its_batch_on_another_axis(tmp_path: Path) -> None:
    """A state [2, batch, 8] (batch_axis = 1): fed, carried, batched for calibration and
    verification, and reported with its batch where the model has it, in ONNX Runtime and
    TFLite (whose converted model has a static batch of 1)."""
    _user_model(tmp_path, "cell", SILERO_LIKE, "cell")
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "chunks.npz", chunk=rng.normal(size=(120, 32)).astype(np.float32))
    np.savez(tmp_path / "calib.npz", chunk=rng.normal(size=(80, 32)).astype(np.float32))
    (tmp_path / "edgekd.toml").write_text(textwrap.dedent("""
        [model]
        student = "cell.py:cell"
        student_weights = "cell.safetensors"
        task = "regression"
        [data]
        test = "chunks.npz"
        calibration = "calib.npz"
        [inputs.state]
        zeros = true
        shape = [2, 8]
        batch_axis = 1
        from_output = "output1"
        [outputs.output0]
        threshold = 0.5
        """) + BENCH)
    done = _edgekd(tmp_path, "--target", "raspberrypi")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "build" / "raspberrypi" / "report.json").read_text())
    assert report["inputs"][1]["shape"] == [2, 1, 8] and report["inputs"][1]["batch_axis"] == 1
    assert report["outputs"][1] == {"name": "output1", "shape": [2, 1, 8], "dtype": "float32",
                                    "classifier": False, "state_for": "state"}
    assert {a["runtime"] for a in report["artifacts"]} == {"tflite", "onnxruntime"}
    for artifact in report["artifacts"]:
        state = artifact["stream"]["last"][1]
        assert state["elements"] == 16 and state["cosine_min"] >= 0.99


@pytest.mark.slow
def test_finished_onnx_state_batch_axis_from_the_graph(tmp_path: Path) -> None:
    """An ONNX model declaring its state [2, "batch", 16]: the batch axis comes from the
    graph, no batch_axis in the project."""
    rng = np.random.default_rng(0)
    nodes = [h.make_node("Gather", ["state", "zero"], ["s0"], axis=0),
             h.make_node("MatMul", ["chunk", "W1"], ["a"]),
             h.make_node("MatMul", ["s0", "W2"], ["b"]), h.make_node("Add", ["a", "b"], ["c"]),
             h.make_node("Tanh", ["c"], ["hh"]), h.make_node("Unsqueeze", ["hh", "ax0"], ["hu"]),
             h.make_node("Concat", ["hu", "hu"], ["next_state"], axis=0),
             h.make_node("MatMul", ["hh", "W3"], ["z"]), h.make_node("Sigmoid", ["z"], ["prob"])]
    graph = h.make_graph(
        nodes, "silero_like",
        [h.make_tensor_value_info("chunk", T.FLOAT, ["batch", 64]),
         h.make_tensor_value_info("state", T.FLOAT, [2, "batch", 16])],
        [h.make_tensor_value_info("prob", T.FLOAT, ["batch", 1]),
         h.make_tensor_value_info("next_state", T.FLOAT, [2, "batch", 16])],
        [nh.from_array((rng.normal(size=(64, 16)) / 8).astype(np.float32), "W1"),
         nh.from_array((rng.normal(size=(16, 16)) / 4).astype(np.float32), "W2"),
         nh.from_array(rng.normal(size=(16, 1)).astype(np.float32), "W3"),
         nh.from_array(np.array(0, np.int64), "zero"),
         nh.from_array(np.array([0], np.int64), "ax0")])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "s.onnx"))
    np.savez(tmp_path / "chunks.npz", chunk=rng.normal(size=(120, 64)).astype(np.float32))
    np.savez(tmp_path / "calibration.npz", chunk=rng.normal(size=(60, 64)).astype(np.float32))
    (tmp_path / "edgekd.toml").write_text(STREAM_TOML.replace("stream.onnx", "s.onnx").replace(
        "[inputs.sr]\nvalue = 16000\n", "") + BENCH)
    done = _edgekd(tmp_path, "--target", "intel-cpu")
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "build" / "intel-cpu" / "report.json").read_text())
    assert report["inputs"][1]["batch_axis"] == 1 and report["outputs"][1]["shape"] == [2, 1, 16]
    assert all(a["stream"]["last"][1]["cosine_min"] >= 0.99 for a in report["artifacts"])


@pytest.mark.parametrize("extra,message", [
    ('[inputs.sr]\nvalue = [1, 2, 3]\n', "error: inputs.sr: value has shape [3] but model.onnx "
     "declares []: give the value in the model's shape"),
    ('[inputs.sr]\nvalue = "x"\n', "inputs.sr: value must be a number, a boolean or a list of "
     "them, got 'x'"),
    ('[inputs.chunk]\ndtype = "int64"\n', "error: inputs.chunk.dtype = 'int64' but model.onnx "
     "takes float32: remove the dtype, or export the model for it"),
    ('[outputs.prob]\nthreshold = "a"\n', "outputs.prob.threshold: expected a number, got 'a'"),
])
def test_bad_declarations_are_one_line(stream_project: Path, extra: str, message: str) -> None:
    toml = (stream_project / "edgekd.toml").read_text()
    toml = toml.replace("[inputs.sr]\nvalue = 16000\n", "").replace(
        "[outputs.prob]\nthreshold = 0.5\n", "")
    (stream_project / "edgekd.toml").write_text(toml + extra)
    done = _edgekd(stream_project, "--target", "x86-cpu")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr
    assert not (stream_project / "build" / "x86-cpu").exists()
