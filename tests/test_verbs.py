"""``edgekd export``, ``edgekd quantize``, ``edgekd verify``: one step each, on a user's own
files (a model file with a factory, trained weights, .npy / .npz samples), with the real
exporters and runtimes. Bad input is one ``error:`` line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
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


def test_verify_fails_against_another_model(user: Path, exported: Path,
                                            tmp_path: Path) -> None:
    """Other weights are not what the artifact was made from: exit 1, one line, with advice
    in the verbs' own options (not a build's settings)."""
    namespace: dict = {}
    exec(NET, namespace)
    torch.manual_seed(1)
    save_file(namespace["net"]().state_dict(), tmp_path / "other.safetensors")
    result = runner.invoke(app, ["verify", str(exported / "model_fp32.onnx"), "--reference",
                                 f"{user}/net.py:net", "--weights",
                                 str(tmp_path / "other.safetensors"), "--data",
                                 str(user / "test.npz")])
    assert result.exit_code == 1, result.output
    errors = _errors(result.output)
    assert len(errors) == 1 and "fail" in result.output
    assert "--reference" in errors[0] and "--limit min_agreement=" in errors[0], errors[0]
    assert "--set" not in errors[0] and "quant." not in errors[0]
    assert "stage warnings" not in errors[0]


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
    import edgekd  # its precision read from the interpreter's tensors, not the name

    (tmp_path / "t" / "model_fp32.tflite").rename(tmp_path / "t" / "model.int8.tflite")
    v = edgekd.verify(tmp_path / "t" / "model.int8.tflite", f"{user}/net.py:net",
                      user / "test.npz", weights=user / "net.safetensors")
    assert v.precision == "fp32" and v.passed, v.problem


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


# -- issue 14 follow-up: a newcomer's first hour with the one-step verbs -------------------

TOKENS = textwrap.dedent('''
    """A user's two-input model: integer token ids and a float mask."""
    import torch
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 8)
            self.head = nn.Linear(8, 3)

        def forward(self, tokens, mask):
            return self.head((self.emb(tokens) * mask.unsqueeze(-1)).mean(1))


    def net():
        torch.manual_seed(0)  # the same parameters on every call: no --weights needed
        return Net()
''')


def _cli(args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process: exit codes and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True,
                          text=True, timeout=600, cwd=cwd,
                          env={**os.environ, "COLUMNS": "250"})


def test_quantize_checks_on_samples_it_did_not_calibrate_on(user: Path, exported: Path,
                                                              tmp_path: Path) -> None:
    fp32 = exported / "model_fp32.onnx"
    x = np.load(user / "calib.npy")
    # degenerate calibration data: one error line, exit 2, nothing written
    np.save(tmp_path / "zeros.npy", np.zeros_like(x))
    bad = x.copy()
    bad[3, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    for name, says in (("zeros.npy", "every value is 0"), ("nan.npy", "NaN or inf")):
        done = _cli(["quantize", str(fp32), "--data", str(tmp_path / name), "--out",
                     str(tmp_path / "q.onnx")])
        assert done.returncode == 2, done.stderr
        assert _errors(done.stderr) and says in _errors(done.stderr)[0], done.stderr
        assert "Traceback" not in done.stderr
    assert not (tmp_path / "q.onnx").exists()

    # unrepresentative calibration (a hundredth of the real range) is caught on held-out
    # samples: exit 1, advice in quantize's options, nothing written, the good file kept
    good = tmp_path / "good.onnx"
    ok = _cli(["quantize", str(fp32), "--data", str(user / "calib.npy"), "--out", str(good)])
    assert ok.returncode == 0, ok.stderr
    assert "held-out samples of --data" in ok.stdout, ok.stdout
    before = _sha(good)
    np.save(tmp_path / "tiny.npy", x * 0.01)
    failed = _cli(["quantize", str(fp32), "--data", str(tmp_path / "tiny.npy"), "--check-data",
                   str(user / "test.npz"), "--out", str(good), "--force"])
    assert failed.returncode == 1, failed.stdout + failed.stderr
    errors = _errors(failed.stderr)
    assert len(errors) == 1 and "--check-data" in errors[0], failed.stderr
    assert "--method" in errors[0] and "quant.calibration_samples" not in errors[0]
    assert _sha(good) == before
    # with too few samples to hold any out, the output says what was checked
    np.save(tmp_path / "few.npy", x[:8])
    few = _cli(["quantize", str(fp32), "--data", str(tmp_path / "few.npy"), "--out",
                str(tmp_path / "few.onnx")])
    assert few.returncode == 0, few.stderr
    assert "calibration samples themselves" in few.stdout, few.stdout


def test_factory_without_weights(user: Path, exported: Path, tmp_path: Path) -> None:
    """A factory that builds a new random model per call: quantize / verify refuse it (they
    would compare two different random models), export warns (latency of an untrained
    architecture is legit); a factory that seeds itself needs no weights."""
    fp32 = exported / "model_fp32.onnx"
    for args in (["quantize", f"{user}/net.py:net", "--data", str(user / "calib.npy"),
                  "--out", str(tmp_path / "q.onnx")],
                 ["verify", str(fp32), "--reference", f"{user}/net.py:net", "--data",
                  str(user / "test.npz")]):
        done = _cli(args)
        errors = _errors(done.stderr)
        assert done.returncode == 2, done.stdout + done.stderr
        assert len(errors) == 1 and "has no --weights" in errors[0], done.stderr
        assert "randomly initialised" in errors[0] and "--weights FILE" in errors[0]
    done = _cli(["export", f"{user}/net.py:net", "--example-shape", "2,1,8,8", "--out",
                 str(tmp_path / "untrained")])
    assert done.returncode == 0, done.stderr
    assert "has no --weights" in done.stderr and "untrained" in done.stderr
    (tmp_path / "tokens.py").write_text(TOKENS)
    np.savez(tmp_path / "ex.npz", tokens=np.arange(24).reshape(4, 6) % 50,
             mask=np.ones((4, 6), np.float32))
    seeded = _cli(["export", "tokens.py:net", "--example", "ex.npz", "--out", "t"],
                  cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert "has no --weights" not in seeded.stderr


def test_verify_reads_precision_from_the_model(user: Path, exported: Path,
                                               tmp_path: Path) -> None:
    """Not from the file name: an INT8 model named tz.onnx is int8, an FP32 one named
    model.int8.onnx is fp32; OpenVINO IR likewise; labels add both accuracies."""
    import edgekd

    fp32 = exported / "model_fp32.onnx"
    tz = edgekd.quantize(fp32, user / "calib.npy", out=tmp_path / "tz.onnx")
    assert tz.precision == "int8" and tz.passed
    (tmp_path / "model.int8.onnx").write_bytes(fp32.read_bytes())
    ir = edgekd.quantize(fp32, user / "calib.npy", out=tmp_path / "tz.xml",
                         runtime="openvino")
    cases = [(tmp_path / "tz.onnx", "int8"), (tmp_path / "model.int8.onnx", "fp32"),
             (ir.path, "int8"), (exported / "model_fp32.xml", "fp32")]
    for path, precision in cases:
        v = edgekd.verify(path, fp32, user / "test.npz")
        assert v.precision == precision, (path, v.precision)
        assert v.verification.accuracy is not None and v.verification.accuracy > 0.8
        assert v.reference_accuracy is not None and v.reference_accuracy > 0.8
    done = _cli(["verify", str(tmp_path / "tz.onnx"), "--reference", str(fp32), "--data",
                 str(user / "test.npz")])
    assert done.returncode == 0, done.stderr
    v = edgekd.verify(tmp_path / "tz.onnx", fp32, user / "test.npz")
    assert "int8" in done.stdout and "reference accuracy" in done.stdout, done.stdout
    assert f"{v.verification.accuracy:.2%}" in done.stdout
    assert f"{v.reference_accuracy:.2%}" in done.stdout


def test_export_example_file_for_several_integer_inputs(tmp_path: Path) -> None:
    (tmp_path / "tokens.py").write_text(TOKENS)
    tokens = np.random.default_rng(0).integers(0, 50, (8, 6))
    np.savez(tmp_path / "ex.npz", tokens=tokens, mask=np.ones((8, 6), np.float32))
    done = _cli(["export", "tokens.py:net", "--example", "ex.npz", "--out", "out"],
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    session = ort.InferenceSession(str(tmp_path / "out" / "model_fp32.onnx"))
    assert [i.name for i in session.get_inputs()] == ["tokens", "mask"]
    assert session.get_inputs()[0].type == "tensor(int64)"
    # --example-shape cannot give two inputs: the error names the option that can
    shape = _cli(["export", "tokens.py:net", "--example-shape", "1,6", "--out", "o2"],
                 cwd=tmp_path)
    assert shape.returncode == 2 and "--example FILE" in _errors(shape.stderr)[0]
    # float token ids: the dtype is wrong, not the shape
    np.savez(tmp_path / "floats.npz", tokens=tokens.astype(np.float32),
             mask=np.ones((8, 6), np.float32))
    floats = _cli(["export", "tokens.py:net", "--example", "floats.npz", "--out", "o3"],
                  cwd=tmp_path)
    errors = _errors(floats.stderr)
    assert floats.returncode == 2 and len(errors) == 1, floats.stderr
    assert "dtype" in errors[0] and "int64" in errors[0], errors[0]
    # and the ONNX model wants int64: float samples for it are refused by dtype
    floats = _cli(["verify", "out/model_fp32.onnx", "--reference", "out/model_fp32.onnx",
                   "--data", "floats.npz"], cwd=tmp_path)
    errors = _errors(floats.stderr)
    assert floats.returncode == 2 and "float32 but it takes int64" in errors[0], errors
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ex.npz", "floats.npz", "out", "tokens.py"]  # nothing half-written


def test_small_newcomer_errors(user: Path, exported: Path, tmp_path: Path) -> None:
    fp32 = exported / "model_fp32.onnx"
    (tmp_path / "exp").mkdir()
    x, y = np.load(user / "test.npz")["x"], np.load(user / "test.npz")["y"]
    np.savez(tmp_path / "keys.npz", images=x, labels=y)
    cases = [
        (["quantize", str(fp32), "--data", str(user / "calib.npy"), "--out",
          str(tmp_path / "exp")], "is a folder: give a file path"),
        (["quantize", str(fp32), "--data", str(user / "calib.npy"), "--out",
          str(tmp_path / "q.xml")], "an onnxruntime artifact ends in .onnx"),
        (["verify", str(tmp_path / "exp"), "--reference", str(fp32), "--data",
          str(user / "test.npz")], "is a folder, not an artifact"),
        (["verify", str(fp32), "--reference", str(fp32), "--data", str(user / "test.npz"),
          "--task", "regresion"], "--task"),
        (["verify", str(fp32), "--reference", str(fp32), "--data", str(tmp_path / "keys.npz")],
         "images, labels"),
        (["export", str(fp32), "--example-shape", "1,1,8,8", "--out", str(tmp_path / "e")],
         "is already an ONNX export"),
        (["verify", str(fp32), "--reference", str(fp32), "--data", str(user / "test.npz"),
          "--limit", "min_agremeent=0.9"], "--limit"),
    ]
    for args, says in cases:
        result = runner.invoke(app, args)
        errors = _errors(result.output)
        assert result.exit_code == 2, (args, result.output)
        assert len(errors) == 1 and says in errors[0], (args, result.output)
    task = runner.invoke(app, cases[3][0])
    assert "'regression'" in _errors(task.output)[0] and "task=" in _errors(task.output)[0]
    assert "x (samples) and y (labels" in _errors(runner.invoke(app, cases[4][0]).output)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "keys.npz"]
    assert not list((tmp_path / "exp").iterdir())
