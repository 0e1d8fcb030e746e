"""``edgekd export``, ``edgekd quantize``, ``edgekd verify``: one step each, on a user's own
files (a model file with a factory, trained weights, .npy / .npz samples), with the real
exporters and runtimes. Bad input is one ``error:`` line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from edgekd.cli.commands import app
from tests.projects import digits

runner = CliRunner()

NET = textwrap.dedent('''
    """A user's model: plain PyTorch."""
    from torch import nn


    def net(num_classes=10):
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Linear(8 * 4 * 4, num_classes))
''')


def _errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """net.py, trained weights, calibration samples (.npy) and a labeled test set (.npz)."""
    root = tmp_path_factory.mktemp("verbs")
    (root / "net.py").write_text(NET)
    namespace: dict = {}
    exec(NET, namespace)  # the same factory the CLI imports from net.py
    x, y = digits(600)
    x = (x / 16 - 0.3) / 0.4
    torch.manual_seed(0)
    model = namespace["net"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    save_file(model.state_dict(), root / "net.safetensors")
    np.save(root / "calib.npy", x[:200])
    np.savez(root / "test.npz", x=x[400:], y=y[400:])
    return root


@pytest.fixture(scope="module")
def exported(user: Path) -> Path:
    result = runner.invoke(app, ["export", f"{user}/net.py:net", "--weights",
                                 str(user / "net.safetensors"), "--example-shape", "1,1,8,8",
                                 "--runtime", "onnxruntime,openvino", "--out",
                                 str(user / "export")])
    assert result.exit_code == 0, result.output
    return user / "export"


def test_export_writes_checked_artifacts(user: Path, exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == [
        "model_fp32.bin", "model_fp32.onnx", "model_fp32.xml"]
    # the ONNX file computes what the trained model computes, on real samples
    x = np.load(user / "calib.npy")[:32]
    session = ort.InferenceSession(str(exported / "model_fp32.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    namespace: dict = {}
    exec(NET, namespace)
    model = namespace["net"]()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(user / "net.safetensors"))
    with torch.no_grad():
        want = model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not [p for p in user.iterdir() if p.name.startswith(".edgekd-")]  # no staging left


def test_quantize_then_verify(user: Path, exported: Path) -> None:
    fp32 = exported / "model_fp32.onnx"
    result = runner.invoke(app, ["quantize", str(fp32), "--data", str(user / "calib.npy")])
    assert result.exit_code == 0, result.output
    int8 = exported / "model_fp32.int8.onnx"
    assert "pass" in result.output and int8.name in result.output
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ
    session = ort.InferenceSession(str(int8))
    x = np.load(user / "test.npz")["x"]
    assert session.run(None, {session.get_inputs()[0].name: x})[0].shape == (len(x), 10)

    # an existing file is kept unless --force
    before = _sha(int8)
    again = runner.invoke(app, ["quantize", str(fp32), "--data", str(user / "calib.npy")])
    assert again.exit_code == 2 and "--force" in _errors(again.output)[0]
    assert _sha(int8) == before
    forced = runner.invoke(app, ["quantize", str(fp32), "--data", str(user / "calib.npy"),
                                 "--force"])
    assert forced.exit_code == 0, forced.output

    # verify: the INT8 model against the FP32 one, with labels (accuracy)
    checked = runner.invoke(app, ["verify", str(int8), "--reference", str(fp32), "--data",
                                  str(user / "test.npz")])
    assert checked.exit_code == 0, checked.output
    assert "pass" in checked.output
    # and the OpenVINO IR against the PyTorch factory it was exported from
    ir = runner.invoke(app, ["verify", str(exported / "model_fp32.xml"), "--reference",
                             f"{user}/net.py:net", "--weights", str(user / "net.safetensors"),
                             "--data", str(user / "test.npz")])
    assert ir.exit_code == 0, ir.output


def test_verify_fails_against_another_model(user: Path, exported: Path) -> None:
    """The untrained factory is not what the artifact was made from: exit 1, one line."""
    result = runner.invoke(app, ["verify", str(exported / "model_fp32.onnx"), "--reference",
                                 f"{user}/net.py:net", "--data", str(user / "test.npz")])
    assert result.exit_code == 1, result.output
    assert len(_errors(result.output)) == 1 and "fail" in result.output


def test_bad_input_is_one_line(user: Path, exported: Path, tmp_path: Path) -> None:
    fp32 = exported / "model_fp32.onnx"
    np.save(tmp_path / "wrong.npy", np.zeros((4, 1, 16, 16), np.float32))
    cases = [
        (["quantize", str(tmp_path / "missing.onnx"), "--data", str(user / "calib.npy"),
          "--out", str(tmp_path / "q.onnx")], "does not exist"),
        (["quantize", str(fp32), "--data", str(tmp_path / "missing.npy"), "--out",
          str(tmp_path / "q.onnx")], "does not exist"),
        (["quantize", str(fp32), "--data", str(tmp_path / "wrong.npy"), "--out",
          str(tmp_path / "q.onnx")], "samples of shape [1, 16, 16]"),
        (["quantize", str(fp32), "--data", str(user / "calib.npy"), "--out",
          str(tmp_path / "q.tflite")], "ends in .onnx"),
        (["export", f"{user}/net.py:net", "--example-shape", "1,x", "--out",
          str(tmp_path / "e")], "--example-shape"),
        (["export", f"{user}/net.py:missing", "--example-shape", "1,1,8,8", "--out",
          str(tmp_path / "e")], "no function 'missing'"),
        (["verify", str(fp32), "--reference", str(fp32), "--data", str(tmp_path / "wrong.npy")],
         "samples of shape"),
    ]
    for args, says in cases:
        result = runner.invoke(app, args)
        errors = _errors(result.output)
        assert result.exit_code == 2, (args, result.output)
        assert len(errors) == 1 and says in errors[0], (args, result.output)
        assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.npy"]  # nothing written


def test_export_tflite(user: Path, tmp_path: Path) -> None:
    """LiteRT-Torch's FP32 .tflite, run in the TFLite interpreter against the model."""
    result = runner.invoke(app, ["export", f"{user}/net.py:net", "--weights",
                                 str(user / "net.safetensors"), "--example-shape", "1,1,8,8",
                                 "--runtime", "tflite", "--out", str(tmp_path / "t")])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["model_fp32.tflite"]
    assert "pass" in result.output


def test_onnx_steps_import_no_torch(user: Path, exported: Path) -> None:
    """Verifying and quantizing ONNX files, and benchmarking, work where torch is missing."""
    import subprocess
    import sys

    code = textwrap.dedent(f"""
        import sys, edgekd
        fp32 = {str(exported / "model_fp32.onnx")!r}
        q = edgekd.quantize(fp32, {str(user / "calib.npy")!r}, out={str(user / "nt.onnx")!r})
        v = edgekd.verify(q.path, fp32, {str(user / "test.npz")!r})
        edgekd.bench
        assert q.passed and v.passed
        assert "torch" not in sys.modules, "torch was imported"
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (user / "nt.onnx").unlink()
