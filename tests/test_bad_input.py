"""The bad-input table (docs/errors.md): every case is a real broken file,
folder or setting, built with the real CLI. Each must end with one `error:` line naming the
problem and the fix, exit 1 or 2, no traceback, no half-written artifact, and the previous
good build in the same output folder byte-for-byte untouched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from edgekd.cli.commands import app
from tests.projects import QUICK, digits

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()

STUDENT = '''
import torch
from torch import nn


def student(num_classes=10, width=8):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(),
                         nn.Linear(width, num_classes))


def broken():
    raise ValueError("the factory is broken on purpose")


def not_a_model():
    return {"weights": 1}


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("offset", torch.zeros(1))

    def forward(self, x):
        if x.sum() > 0:  # control flow on values: torch.export cannot trace it
            return x.flatten(1)[:, :10]
        return -x.flatten(1)[:, :10]


def data_dependent():
    return DataDependent()


class Evil:
    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(MARKER),))
'''


@dataclass(frozen=True)
class Case:
    name: str  # the row in the table of docs/errors.md
    setup: Callable[[Path], list[str]]  # writes the project into the folder; returns CLI args
    code: int  # expected exit code
    says: str  # a fragment of the one-line message


def _project(folder: Path, model: str, data: str = 'test = "data.npz"', extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.py").write_text(STUDENT.replace("MARKER", repr(str(folder / "pwned"))))
    x, y = digits(200)
    np.savez(folder / "data.npz", x=x, y=y)
    torch.manual_seed(0)
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"m{abs(hash(folder))}", folder / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    net = mod.student()
    # A trained model: the INT8 artifact of untrained weights (near-tied logits) disagrees
    # with FP32 on arbitrary samples, which is no "good build" to compare failures with.
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    save_file(net.state_dict(), folder / "student.safetensors")
    (folder / "edgekd.toml").write_text(f"{extra}\n[model]\n{model}\n[data]\n{data}\n{QUICK}")
    return folder / "edgekd.toml"


def finished(folder: Path, weights: str = "student.safetensors", **kw: str) -> Path:
    return _project(folder, f'student = "models.py:student"\nstudent_weights = "{weights}"', **kw)


def _onnx(folder: Path, model: torch.nn.Module, example: tuple, name: str = "m.onnx") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, example, str(folder / name), dynamo=False)


class TwoInputs(torch.nn.Module):
    def forward(self, a, b):
        return a.flatten(1) + b.flatten(1)


class Embed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(20, 10)

    def forward(self, ids):
        return self.emb(ids).mean(1)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def case_missing_onnx(d: Path) -> list[str]:
    return ["--config", str(_project(d, 'onnx = "missing.onnx"'))]


def case_truncated_onnx(d: Path) -> list[str]:
    _onnx(d, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
          (torch.zeros(1, 1, 8, 8),))
    data = (d / "m.onnx").read_bytes()
    _write(d / "m.onnx", data[:len(data) // 2])
    return ["--config", str(_project(d, 'onnx = "m.onnx"'))]


def case_garbage_onnx(d: Path) -> list[str]:
    _write(d / "m.onnx", np.random.default_rng(2).bytes(4096))
    return ["--config", str(_project(d, 'onnx = "m.onnx"'))]


def case_int_input_onnx(d: Path) -> list[str]:
    _onnx(d, Embed(), (torch.zeros(1, 5, dtype=torch.long),))
    return ["--config", str(_project(d, 'onnx = "m.onnx"'))]


def case_two_input_onnx(d: Path) -> list[str]:
    _onnx(d, TwoInputs(), (torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)))
    return ["--config", str(_project(d, 'onnx = "m.onnx"'))]


def case_missing_weights(d: Path) -> list[str]:
    return ["--config", str(finished(d, "nope.safetensors"))]


def case_truncated_safetensors(d: Path) -> list[str]:
    path = finished(d)
    data = (d / "student.safetensors").read_bytes()
    _write(d / "student.safetensors", data[:len(data) // 2])
    return ["--config", str(path)]


def case_empty_weights(d: Path) -> list[str]:
    path = finished(d, "empty.pt")
    _write(d / "empty.pt", b"")
    return ["--config", str(path)]


def case_garbage_pt(d: Path) -> list[str]:
    path = finished(d, "w.pt")
    _write(d / "w.pt", np.random.default_rng(1).bytes(2048))
    return ["--config", str(path)]


def case_full_pickle(d: Path) -> list[str]:
    path = finished(d, "model.pt")
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8)), d / "model.pt")
    return ["--config", str(path)]


def case_malicious_pickle(d: Path) -> list[str]:
    path = finished(d, "evil.pt")
    import importlib.util
    spec = importlib.util.spec_from_file_location("evil_models", d / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["evil_models"] = mod
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    torch.save({"state_dict": mod.Evil()}, d / "evil.pt")
    return ["--config", str(path)]


def case_weights_do_not_fit(d: Path) -> list[str]:
    path = finished(d)
    import importlib.util
    spec = importlib.util.spec_from_file_location("fit_models", d / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    save_file(mod.student(width=16).state_dict(), d / "student.safetensors")
    return ["--config", str(path)]


def case_factory_raises(d: Path) -> list[str]:
    return ["--config", str(_project(d, 'student = "models.py:broken"\n'
                                        'student_weights = "student.safetensors"'))]


def case_factory_missing(d: Path) -> list[str]:
    return ["--config", str(_project(d, 'student = "models.py:studnet"\n'
                                        'student_weights = "student.safetensors"'))]


def case_factory_file_missing(d: Path) -> list[str]:
    return ["--config", str(_project(d, 'student = "nets.py:student"\n'
                                        'student_weights = "student.safetensors"'))]


def case_factory_syntax_error(d: Path) -> list[str]:
    path = finished(d)
    (d / "models.py").write_text((d / "models.py").read_text() + "\ndef oops(:\n")
    return ["--config", str(path)]


def case_factory_not_a_module(d: Path) -> list[str]:
    return ["--config", str(_project(d, 'student = "models.py:not_a_model"\n'
                                        'student_weights = "student.safetensors"'))]


def case_wrong_input_shape(d: Path) -> list[str]:
    path = finished(d)
    x, y = digits(50)
    np.savez(d / "data.npz", x=np.zeros((50, 1, 9, 9), np.float32), y=y)
    return ["--config", str(path)]


def case_wrong_dtype(d: Path) -> list[str]:
    path = finished(d)
    np.savez(d / "data.npz", x=np.array([["a"] * 64] * 10))
    return ["--config", str(path)]


def case_nan_calibration(d: Path) -> list[str]:
    path = finished(d, data='test = "data.npz"\ncalibration = "calib.npy"')
    calib = np.ones((20, 1, 8, 8), np.float32)
    calib[3, 0, 2, 2] = np.nan
    np.save(d / "calib.npy", calib)
    return ["--config", str(path)]


def case_empty_calibration(d: Path) -> list[str]:
    path = finished(d, data='test = "data.npz"\ncalibration = "calib.npy"')
    np.save(d / "calib.npy", np.zeros((0, 1, 8, 8), np.float32))
    return ["--config", str(path)]


def case_no_classes(d: Path) -> list[str]:
    from PIL import Image

    (d / "train").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8)).save(d / "train" / f"{i}.png")
    path = _project(d, 'teacher = "models.py:student"\nstudent = "models.py:student"',
                    data='train = "train"')
    return ["--config", str(path)]


def case_labels_out_of_range(d: Path) -> list[str]:
    path = finished(d)
    x, y = digits(50)
    y[7] = 12
    np.savez(d / "data.npz", x=x, y=y)
    return ["--config", str(path)]


def case_unknown_target(d: Path) -> list[str]:
    return ["--config", str(finished(d)), "--target", "raspberry"]


def case_toml_syntax(d: Path) -> list[str]:
    path = finished(d)
    path.write_text(path.read_text().replace("[model]", "[model"))
    return ["--config", str(path)]


def case_unknown_key(d: Path) -> list[str]:
    return ["--config", str(finished(d)), "--set", "prune.sparsty=0.5"]


def case_out_of_range(d: Path) -> list[str]:
    return ["--config", str(finished(d)), "--set", "prune.sparsity=1.5"]


def case_unconvertible(d: Path) -> list[str]:
    path = _project(d, 'student = "models.py:data_dependent"\ntask = "regression"\n'
                       'student_weights = "dd.safetensors"')
    save_file({"offset": torch.zeros(1)}, d / "dd.safetensors")
    return ["--config", str(path)]


def case_tflite_from_onnx(d: Path) -> list[str]:
    _onnx(d, torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)),
          (torch.zeros(1, 1, 8, 8),))
    return ["--config", str(_project(d, 'onnx = "m.onnx"')), "--target", "raspberrypi"]


def case_path_escapes(d: Path) -> list[str]:
    return ["--config", str(finished(d, data='test = "../elsewhere/data.npz"'))]


def case_missing_project(d: Path) -> list[str]:
    return ["--config", str(d / "nope.toml")]


def case_weights_without_model(d: Path) -> list[str]:
    return ["--weights", "w.safetensors"]


def case_out_not_writable(d: Path) -> list[str]:
    _write(d / "a-file", b"x")
    return ["--config", str(finished(d / "p")), "--out", str(d / "a-file" / "out")]


CASES = [
    Case("model file missing", case_missing_onnx, 2, "does not exist"),
    Case("ONNX file truncated", case_truncated_onnx, 2, "not a valid ONNX model"),
    Case("ONNX file corrupt (not ONNX)", case_garbage_onnx, 2, "not a valid ONNX model"),
    Case("ONNX token-id model, image data", case_int_input_onnx, 2,
         "model.onnx expects input of shape [1, 5] but the data's samples are [1, 8, 8]"),
    Case("ONNX model with two inputs, data for one", case_two_input_onnx, 2,
         "has no input 'onnx::Flatten_0' (it has: x): the model takes onnx::Flatten_0, "
         "onnx::Flatten_1; save one array per input under its name"),
    Case("weights file missing", case_missing_weights, 2, "does not exist"),
    Case("safetensors file truncated", case_truncated_safetensors, 2, "truncated"),
    Case("weights file empty", case_empty_weights, 2, "is empty"),
    Case("weights file corrupt", case_garbage_pt, 2, "not a readable PyTorch checkpoint"),
    Case("weights are a full pickle", case_full_pickle, 2, "--trust-pickle"),
    Case("malicious pickle", case_malicious_pickle, 2, "--trust-pickle"),
    Case("weights do not fit the architecture", case_weights_do_not_fit, 2, "does not fit"),
    Case("factory raises", case_factory_raises, 2, "raised ValueError"),
    Case("factory name misspelt", case_factory_missing, 2, "has no function 'studnet'"),
    Case("factory file missing", case_factory_file_missing, 2, "does not exist"),
    Case("syntax error in the model file", case_factory_syntax_error, 2, "syntax error"),
    Case("factory returns no nn.Module", case_factory_not_a_module, 2, "not a torch.nn.Module"),
    Case("wrong input shape", case_wrong_input_shape, 2, "cannot run on inputs of shape"),
    Case("wrong input dtype", case_wrong_dtype, 2, "not numbers"),
    Case("NaN in calibration data", case_nan_calibration, 2, "NaN"),
    Case("empty calibration data", case_empty_calibration, 2, "holds no samples"),
    Case("data folder without classes", case_no_classes, 2, "no class sub-folders"),
    Case("label out of range", case_labels_out_of_range, 2, "out of range"),
    Case("unknown target", case_unknown_target, 2, "unknown target 'raspberry'"),
    Case("TOML syntax error", case_toml_syntax, 2, "TOML syntax error"),
    Case("unknown config key", case_unknown_key, 2, "unknown key 'sparsty'"),
    Case("config value out of range", case_out_of_range, 2, "sparsity must be in [0, 1)"),
    Case("op a converter cannot handle", case_unconvertible, 1, "cannot convert the model"),
    Case("TFLite wanted from an ONNX model", case_tflite_from_onnx, 2, "TFLite"),
    Case("path leaves the project folder", case_path_escapes, 2, "leaves the project folder"),
    Case("project file missing", case_missing_project, 2, "edgekd init"),
    Case("--weights without --model", case_weights_without_model, 2, "--weights needs --model"),
    Case("output folder not writable", case_out_not_writable, 2, "cannot create output folder"),
]


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A previous good build (a finished model, x86-cpu) that every failing build must leave
    as it was."""
    root = tmp_path_factory.mktemp("good")
    code = runner.invoke(app, ["build", "--config", str(finished(root / "p")), "--target",
                               "x86-cpu", "--out", str(root / "out")]).exit_code
    assert code == 0
    return root / "out"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, good: Path, tmp_path: Path) -> None:
    before = _tree(good / "x86-cpu")
    args = case.setup(tmp_path)
    if "--out" not in args:
        args += ["--out", str(good)]
    if "--target" not in args:
        args += ["--target", "x86-cpu"]
    result = runner.invoke(app, ["build", *args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == case.code, result.output
    assert len(errors) == 1 and case.says in errors[0], result.output
    assert "Traceback" not in result.output
    assert _tree(good / "x86-cpu") == before  # the earlier build, byte for byte
    assert not [p for p in good.iterdir() if ".staging-" in p.name]
    assert not (tmp_path / "pwned").exists()  # the malicious pickle never ran


def test_debug_shows_the_traceback(good: Path, tmp_path: Path) -> None:
    args = case_factory_raises(tmp_path)
    result = runner.invoke(app, ["build", *args, "--out", str(good), "--debug"])
    assert result.exit_code == 2 and "Traceback" in result.output
    assert "the factory is broken on purpose" in result.output


def test_trust_pickle_loads_a_full_model_pickle(tmp_path: Path) -> None:
    """With --trust-pickle the user takes responsibility; a pickled nn.Module loads."""
    path = finished(tmp_path, "model.pt")
    import importlib.util
    spec = importlib.util.spec_from_file_location("tp_models", tmp_path / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    model = mod.student()
    model.load_state_dict(load_file(tmp_path / "student.safetensors"))  # the trained weights
    torch.save(model, tmp_path / "model.pt")
    result = runner.invoke(app, ["build", "--config", str(path), "--target", "x86-cpu",
                                 "--out", str(tmp_path / "out"), "--trust-pickle"])
    assert result.exit_code == 0, result.output


def test_runtime_not_installed(good: Path, tmp_path: Path) -> None:
    """OpenVINO made unimportable for one real `edgekd build` process."""
    fake = tmp_path / "site" / "openvino"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named openvino')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}"}
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--config",
                           str(finished(tmp_path / "p")), "--target", "intel-cpu", "--out",
                           str(good)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr
    assert "openvino is not installed: pip install openvino" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = runner.invoke(app, ["build", "--config", str(finished(tmp_path / "p")),
                                     "--target", "x86-cpu", "--out", str(disk / "out")])
        errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
        assert result.exit_code == 1, result.output
        assert len(errors) == 1 and "no space left" in errors[0], result.output
        assert not (disk / "out" / "x86-cpu").exists()
        assert not [p for p in (disk / "out").iterdir() if ".staging-" in p.name]
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_second_build_into_the_same_folder_fails_at_once(good: Path, tmp_path: Path) -> None:
    from edgekd.report.staging import build_lock

    with build_lock(good / "x86-cpu"):  # a build in progress
        result = runner.invoke(app, ["build", "--config", str(finished(tmp_path)), "--target",
                                     "x86-cpu", "--out", str(good)])
    assert result.exit_code == 2 and "another edgekd build is writing" in result.output


def test_every_case_is_in_the_readme_table() -> None:
    readme = (ROOT / "docs" / "errors.md").read_text()
    others = ["runtime not installed", "disk full", "Ctrl-C during a build",
              "another build writing the same folder"]
    missing = [n for n in [c.name for c in CASES] + others if f"| {n} |" not in readme]
    assert not missing, missing
