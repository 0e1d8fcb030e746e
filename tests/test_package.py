"""The deploy package of a build (edgekd/report/package.py): ``run_<runtime>.py`` and README.md
beside the artifacts.

Each script is copied with its artifact into a folder of its own (a device's) and run in a
fresh process where torch and edgekd cannot be imported: a folder first on ``PYTHONPATH``
holds a ``torch`` and an ``edgekd`` package (and the other torch-side packages) whose import
raises, so an ``import torch`` anywhere in the script fails it; the working folder is empty,
so the repository is not on the path either. What the script prints must equal what edgekd's
own runner gives for the same file read and preprocessed by the build's own code (the image
loader, ``Preprocessing``, the input specs), in the same runtime and threads."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.report.package import deploy_spec, render_readme, render_script
from tests.projects import QUICK
from tests.rgb_data import CLASSES, shapes, write_folders
from tests.test_hygiene import _table_widths

RUNTIMES = ("onnxruntime", "openvino", "tflite")
BLOCKED = ("torch", "edgekd", "torchvision", "torchao", "litert_torch", "safetensors")

IMAGE_MODELS = '''
"""A user's small image classifier (plain PyTorch)."""
from torch import nn


def net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, len(CLASSES)))


CLASSES = ("bar", "circle", "cross", "ring", "square", "triangle")
'''

MULTI_MODELS = '''
"""A user's streaming model with three inputs: a float chunk (preprocessed), int64 token
ids (as stored) and a carried state (zeros at the start)."""
import torch
from torch import nn


class Multi(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(12, 8)
        self.inp = nn.Linear(24, 8)
        self.rec = nn.Linear(8, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, chunk, ids, state):
        new = torch.tanh(self.inp(chunk) + self.emb(ids).mean(1) + self.rec(state))
        return self.out(new), new


def multi():
    return Multi()
'''


def _load_module(path: Path, name: str) -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _build(root: Path, toml: str) -> tuple[Path, Any]:
    """Build ``root``'s project for a target with every runtime; the build folder and the
    project."""
    from edgekd.pipeline.api import load
    from edgekd.pipeline.run import build
    from edgekd.settings.targets import Target

    (root / "edgekd.toml").write_text(textwrap.dedent(toml) + QUICK)
    project = load(root / "edgekd.toml", cwd=root)
    target = Target("every-runtime", "ONNX Runtime, OpenVINO and LiteRT", RUNTIMES, threads=1)
    result = build(target, out=root / "build", project=project)
    return result.out_dir, project


@pytest.fixture(scope="module")
def image_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A finished RGB classifier on 20x20 PNGs in class folders, resized to 16x16 by the
    build, per-channel mean and std. Trained here on those images (read by edgekd's own
    loader) until its decisions have a margin, so INT8 keeps them."""
    import torch
    from safetensors.torch import save_file

    from edgekd.inputs.sources import ImageOptions, load_samples

    root = tmp_path_factory.mktemp("image")
    (root / "models.py").write_text(IMAGE_MODELS)
    write_folders(root / "images", *shapes(15, seed=0, size=20))
    samples = load_samples("images", root=root, what="train", images=ImageOptions(size=(16, 16)))
    mean = np.array([0.3, 0.35, 0.3], np.float32)[:, None, None]
    std = np.array([0.3, 0.3, 0.25], np.float32)[:, None, None]
    xs = torch.from_numpy((samples.x / 255 - mean) / std)
    ys = torch.from_numpy(samples.y)  # type: ignore[arg-type]
    torch.manual_seed(0)
    model = _load_module(root / "models.py", "package_image_models").net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(160):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xs), ys).backward()
        opt.step()
    save_file(model.eval().state_dict(), str(root / "net.safetensors"))
    return _build(root, """
        [model]
        student = "models.py:net"
        student_weights = "net.safetensors"
        [data]
        test = "images"
        image_size = [16, 16]
        mean = [0.3, 0.35, 0.3]
        std = [0.3, 0.3, 0.25]
        """)


@pytest.fixture(scope="module")
def multi_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("multi")
    (root / "models.py").write_text(MULTI_MODELS)
    save_file(_load_module(root / "models.py", "package_multi_models").multi().state_dict(),
              str(root / "multi.safetensors"))
    rng = np.random.default_rng(0)
    np.savez(root / "chunks.npz", chunk=rng.normal(2.0, 3.0, (120, 24)).astype(np.float32),
             ids=rng.integers(0, 12, (120, 5)).astype(np.int64))
    return _build(root, """
        [model]
        student = "models.py:multi"
        student_weights = "multi.safetensors"
        task = "regression"
        [data]
        test = "chunks.npz"
        scale = 0.5
        mean = 1.0
        std = 1.5
        [inputs.state]
        zeros = true
        shape = [8]
        from_output = "output1"
        """)


# -- running a script as a deployer would ---------------------------------------------------

@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Packages whose import fails, to put first on PYTHONPATH."""
    folder = tmp_path_factory.mktemp("blocked")
    for name in BLOCKED:
        (folder / name).mkdir()
        (folder / name / "__init__.py").write_text(
            f"raise ImportError('{name} must not be imported by a deploy script')\n")
    return folder


def _device(build: Path, runtime: str, tmp: Path) -> Path:
    """A device's folder: the script and the files of every artifact of its runtime, as
    README.md says to copy them; nothing else of the build."""
    report = json.loads((build / "report.json").read_text())
    device = tmp / f"device-{runtime}"
    device.mkdir()
    shutil.copy(build / f"run_{runtime}.py", device)
    for artifact in report["artifacts"]:
        if artifact["runtime"] == runtime:
            for name in artifact["files"]:
                shutil.copy(build / name, device)
    return device


def _run(script: Path, blocked: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    cwd = script.parent.parent / "cwd"
    cwd.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = str(blocked)
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _reference(build: Path, project: Any, runtime: str, precision: str,
               feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The artifact's outputs through edgekd's own runner (what the build verified with)."""
    from edgekd.backends import get_backend

    report = json.loads((build / "report.json").read_text())
    path = next(a["path"] for a in report["artifacts"]
                if a["runtime"] == runtime and a["precision"] == precision)
    return get_backend(runtime).load(build / path, 1).run_all(feed)


def _floats(text: str) -> list[float]:
    return [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?", text)]


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_image_classifier_script_predicts_as_the_build(image_build: tuple[Path, Any],
                                                       blocked: Path, tmp_path: Path,
                                                       runtime: str) -> None:
    from edgekd.inputs.resolve import resolve
    from edgekd.inputs.sources import ImageOptions, load_samples

    build, project = image_build
    data = resolve(project).data
    device = _device(build, runtime, tmp_path)
    # Two images of the test split (20x20: the script resizes them as the build did), each
    # alone in a folder so the build's image loader reads exactly that file.
    probes = sorted((project.root / "images").rglob("*.png"))[::40][:2]
    for precision in ("int8", "fp32"):
        for probe in probes:
            alone = tmp_path / f"{precision}-{probe.stem}"
            alone.mkdir()
            shutil.copy(probe, alone)
            raw = load_samples(str(alone), root=tmp_path, what="probe", labeled=False,
                               images=ImageOptions(size=project.data.image_size)).x
            want = _reference(build, project, runtime, precision,
                              {"input": data.preprocessing.apply(raw)})[0][0]
            done = _run(device / f"run_{runtime}.py", blocked, probe, "--artifact", precision,
                        "--threads", "1", "--top", "3")
            assert done.returncode == 0, done.stderr
            lines = done.stdout.splitlines()
            best = int(np.argmax(want))
            assert lines[0] == f"prediction: {best} ({CLASSES[best]})", done.stdout
            order = np.argsort(-want, kind="stable")[:3]
            shown = [re.match(r"\s+(\d+) \((\w+)\): (\S+)$", line) for line in lines[2:5]]
            assert [int(m[1]) for m in shown if m] == order.tolist(), done.stdout
            assert [m[2] for m in shown if m] == [CLASSES[i] for i in order]
            np.testing.assert_allclose([float(m[3]) for m in shown if m], want[order],
                                       rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_multi_input_script_feeds_every_input_as_the_build(multi_build: tuple[Path, Any],
                                                           blocked: Path, tmp_path: Path,
                                                           runtime: str) -> None:
    """Three inputs: the float chunk preprocessed with the data's scale, mean and std; the
    int64 ids as stored; the state zeros as the build fed it."""
    from edgekd.inputs.dataset import feed
    from edgekd.inputs.resolve import resolve

    build, project = multi_build
    data = resolve(project).data
    device = _device(build, runtime, tmp_path)
    arrays = np.load(project.root / "chunks.npz")
    chunk, ids = arrays["chunk"][7], arrays["ids"][7]
    np.save(tmp_path / "chunk.npy", chunk)
    np.save(tmp_path / "ids.npy", ids[None])  # with its batch axis: accepted too
    for precision in ("int8", "fp32"):
        want = _reference(build, project, runtime, precision, feed(data.input_specs, {
            "chunk": data.preprocessing.apply(chunk[None]), "ids": ids[None]}))
        done = _run(device / f"run_{runtime}.py", blocked, "--input",
                    f"chunk={tmp_path / 'chunk.npy'}", "--input", f"ids={tmp_path / 'ids.npy'}",
                    "--artifact", precision, "--threads", "1")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert [line.split(":")[0] for line in lines] == ["output0", "output1"], done.stdout
        for line, expected in zip(lines, want, strict=True):
            shape, values = re.fullmatch(r"\w+: shape \[(.*)\], first values \[(.*)\]",
                                         line).groups()  # type: ignore[union-attr]
            assert _floats(shape) == list(np.asarray(expected).shape), line
            np.testing.assert_allclose(_floats(values), np.ravel(expected)[:8], rtol=1e-4,
                                       atol=1e-5)


@pytest.mark.slow
def test_package_files_are_listed_and_the_readme_says_what_to_do(image_build: tuple[Path, Any]
                                                                  ) -> None:
    build, _ = image_build
    manifest = json.loads((build / "manifest.json").read_text())
    names = ["run_onnxruntime.py", "run_openvino.py", "run_tflite.py", "README.md"]
    assert manifest["package"] == names
    from edgekd.common.cache import sha256_file

    assert all(manifest["sha256"][n] == sha256_file(build / n) for n in names)
    readme = (build / "README.md").read_text()
    for line in ("| ONNX Runtime", "`student_int8.xml`, `student_int8.bin`, `run_openvino.py`",
                 "`pip install ai-edge-litert numpy pillow`", "`python run_tflite.py image.png`",
                 "| `input` | float32 | `[1, 3, 16, 16]` |", "converted to RGB and resized",
                 "mean `[0.3, 0.35, 0.3]`, std `[0.3, 0.3, 0.25]`", "bar, circle, cross"):
        assert line in readme, (line, readme)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "says"), [
    (["missing.png"], "cannot read image"),
    (["--input", "nope=x.npy"], "the model has no data input 'nope'; its data inputs: input"),
    (["WRONG_SHAPE"], "has shape [5, 5] but input 'input' takes one sample of shape "
                      "[3, 16, 16]: save it in that shape"),
    (["IMAGE", "--artifact", "other.onnx"], "no artifact"),
    ([], "give a file for input 'input': python run_onnxruntime.py FILE"),
])
def test_bad_input_is_one_line(image_build: tuple[Path, Any], blocked: Path, tmp_path: Path,
                               args: list[str], says: str) -> None:
    build, project = image_build
    device = _device(build, "onnxruntime", tmp_path)
    np.save(tmp_path / "wrong.npy", np.zeros((5, 5), np.float32))
    image = next((project.root / "images").rglob("*.png"))
    args = [str(tmp_path / "wrong.npy") if a == "WRONG_SHAPE" else str(image) if a == "IMAGE"
            else a for a in args]
    done = _run(device / "run_onnxruntime.py", blocked, *args)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], done.stderr


def test_user_names_cannot_break_the_script_or_the_readme() -> None:
    """Input, output, class and target names are data in the script (Python literals) and
    escaped in the README, whatever they hold: quotes, a docstring's end, markup."""
    odd = 'x"""; import os #\n|`<b>'
    report: dict[str, Any] = {
        "target": odd, "target_description": odd, "task": "classification",
        "input": {"name": odd, "shape": [1, 4], "dtype": "float32", "layout": "as given",
                  "preprocessing": {"raw": odd, "scale": 1.0, "mean": 0.0, "std": 1.0},
                  "output": {"name": odd, "shape": [1, 2], "dtype": "float32"}},
        "inputs": [{"name": odd, "shape": [1, 4], "dtype": "float32", "role": "data",
                    "kind": "values"},
                   {"name": "rate", "shape": [], "dtype": "int64", "role": "fixed",
                    "kind": "values", "value": 16000}],
        "outputs": [{"name": odd, "shape": [1, 2], "dtype": "float32", "classifier": True}],
        "dataset": {"classes": [odd, "b"]}, "bench": {"target_threads": 2},
        "artifacts": [{"path": "m_int8.onnx", "files": ["m_int8.onnx"], "runtime": "onnxruntime",
                       "precision": "int8", "runtime_version": "1", "accuracy": 0.5,
                       "top1_agreement": 1.0, "max_rel_error": 0.01}],
    }
    spec = deploy_spec(report)
    assert spec["inputs"][1] == {"name": "rate", "dtype": "int64", "role": "fixed",
                                 "shape": [], "value": 16000}
    text = render_script("onnxruntime", {"int8": report["artifacts"][0]}, spec, report)
    compiled: dict[str, Any] = {}
    exec(compile(text, "run_onnxruntime.py", "exec"), compiled)  # defines, runs nothing
    assert compiled["INPUTS"][0]["name"] == odd and compiled["CLASSES"] == [odd, "b"]
    assert "--input NAME=FILE.npy" not in text  # one data input: the file alone
    readme = render_readme(report, spec)
    assert "<b>" not in readme
    for widths in _table_widths(readme):  # no name split a table row
        assert set(widths) == {widths[0]}, readme
