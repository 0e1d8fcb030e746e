"""The preflight (edgekd.inputs.preflight): every problem of a project named at once, before
torch or any converter is imported. The first test is the real CLI in a subprocess; the rest
call edgekd.pipeline.api.load, which runs the preflight, on real files."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import UsageError
from edgekd.pipeline.api import load
from tests.projects import classifier_project, digits

# The CLI as `edgekd build` runs it, telling at exit whether torch (or a converter or a
# runtime) was imported by then.
WATCH = textwrap.dedent("""
    import sys
    try:
        from edgekd.cli import main
        sys.argv = ["edgekd", *sys.argv[1:]]
        main()
    finally:
        heavy = [m for m in ("torch", "onnx", "onnxruntime", "openvino", "litert_torch",
                             "sklearn", "PIL") if m in sys.modules]
        print("imported: " + (", ".join(heavy) or "none"), file=sys.stderr)
""")

MODELS = '''
from torch import nn


def student(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))


def teacher(num_classes=10):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, num_classes))
'''


def _project(root: Path, body: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "models.py").write_text(MODELS)
    path = root / "edgekd.toml"
    path.write_text(textwrap.dedent(body).strip() + "\n")
    return path


def test_three_independent_mistakes_named_at_once_before_torch(tmp_path: Path) -> None:
    _project(tmp_path, """
        target = "x86-cpu"
        [model]
        student = "models.py:studnet"
        teacher = "models.py:teacher"
        teacher_weights = "weights/teacher.safetensors"
        [data]
        train = "data/train"
        """)
    done = subprocess.run([sys.executable, "-c", WATCH, "build"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "Traceback" not in done.stdout + done.stderr, done.stderr
    line = errors[0]
    assert line.startswith("error: 3 problems in ")
    assert "(1) model.student: " in line and "has no function 'studnet'" in line
    assert "did you mean 'student'?" in line
    assert "(2) model.teacher_weights: " in line and "does not exist" in line
    assert "(3) data.train: " in line
    assert "imported: none" in done.stderr  # no torch, converter or runtime was needed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgekd.toml", "models.py"]


def test_a_good_project_passes(tmp_path: Path) -> None:
    project = load(classifier_project(tmp_path), target="x86-cpu")
    assert project.data is not None and project.data.train == "data/digits.npz"


def _arrays(root: Path) -> None:
    x, y = digits(40)
    (root / "d").mkdir(parents=True, exist_ok=True)
    np.savez(root / "d" / "good.npz", x=x, y=y)
    np.savez(root / "d" / "short_y.npz", x=x, y=y[:30])
    np.savez(root / "d" / "wide.npz", x=np.zeros((40, 1, 9, 9), np.float32), y=y)
    np.savez(root / "d" / "no_x.npz", y=y)
    np.save(root / "d" / "inputs.npy", x)
    np.save(root / "d" / "empty.npy", x[:0])
    np.save(root / "d" / "scalar.npy", np.float32(1))
    np.save(root / "d" / "text.npy", np.array(["a"] * 40))
    np.save(root / "d" / "objects.npy", np.array([{}, None], dtype=object), allow_pickle=True)
    data = (root / "d" / "inputs.npy").read_bytes()
    (root / "d" / "truncated.npy").write_bytes(data[:len(data) // 2])
    (root / "d" / "pickle.npy").write_bytes(b"\x80\x04" + b"\x00" * 40)
    (root / "d" / "table.csv").write_text("1,2\n")


DATA_CASES = [  # (the [data] lines, a fragment of the one message)
    ('train = "d/short_y.npz"', "has 40 inputs but 30 labels"),
    ('train = "d/inputs.npy"', "has no labels: training needs them"),
    ('train = "d/good.npz"\ncalibration = "d/empty.npy"', "holds no samples"),
    ('train = "d/good.npz"\ncalibration = "d/scalar.npy"', "is a single value"),
    ('train = "d/good.npz"\ncalibration = "d/text.npy"', "not numbers"),
    ('train = "d/good.npz"\ncalibration = "d/objects.npy"', "holds Python objects"),
    ('train = "d/good.npz"\ncalibration = "d/truncated.npy"', "does not fit in the file"),
    ('train = "d/good.npz"\ncalibration = "d/pickle.npy"', "is not a numpy file"),
    ('train = "d/no_x.npz"', "has no input array"),
    ('train = "d/table.csv"', "is not a data source edgekd reads"),
    ('train = "d/good.npz"\ncalibration = "d/wide.npz"',
     "different sample shapes (data.train x [1, 8, 8], data.calibration x [1, 9, 9])"),
    ('train = "d/good.npz"\nmean = [0.1, 0.2, 0.3]', "data.mean has 3 values but the samples "
                                                      "have 1 channels"),
    ('train = "../outside.npz"', "leaves the project folder"),
    ('test = "d/good.npz"', "distillation trains the student: set data.train"),
]


@pytest.mark.parametrize(("data", "says"), DATA_CASES, ids=[c[1][:30] for c in DATA_CASES])
def test_data_problems_from_headers(tmp_path: Path, data: str, says: str) -> None:
    _arrays(tmp_path)
    path = _project(tmp_path, '[model]\nstudent = "models.py:student"\n'
                              f'teacher = "models.py:teacher"\n[data]\n{data}')
    with pytest.raises(UsageError) as caught:
        load(path)
    assert says in str(caught.value)
    assert not re.match(r"\d+ problems", str(caught.value))  # one: as the loader says it


def test_image_folders(tmp_path: Path) -> None:
    png = bytes.fromhex("89504e470d0a1a0a")  # the names are checked here, not the pixels
    for sub in ("flat", "classes/a", "classes/b", "empty_class/a", "empty_class/b"):
        (tmp_path / "img" / sub).mkdir(parents=True)
    for name in ("flat/1.png", "classes/a/1.png", "classes/b/1.png", "empty_class/a/1.png"):
        (tmp_path / "img" / name).write_bytes(png)
    (tmp_path / "img" / "none").mkdir()
    body = """
        [model]
        student = "models.py:student"
        teacher = "models.py:teacher"
        [data]
        train = "img/{}"
        """
    load(_project(tmp_path, body.format("classes")))
    for folder, says in (("flat", "has no class sub-folders"), ("none", "no images in"),
                         ("empty_class", "class folder")):
        with pytest.raises(UsageError, match=says):
            load(_project(tmp_path, body.format(folder)))


FACTORIES = '''
from torch import nn as _nn
from torch.nn import Linear as linear_alias

try:
    import not_installed_anywhere as _x
except ImportError:
    def fallback():
        return _nn.Linear(64, 10)

if True:
    class Conditional(_nn.Module):
        pass

made = lambda: _nn.Linear(64, 10)  # noqa: E731


def real():
    return _nn.Linear(64, 10)
'''


@pytest.mark.parametrize(("student", "says"), [
    ("nets.py:real", None),
    ("nets.py:fallback", None),
    ("nets.py:Conditional", None),
    ("nets.py:made", None),
    ("nets.py:linear_alias", None),
    ("nets.py:rael", "has no function 'rael'; it has: real (did you mean 'real'?)"),
    ("pkg.nets:real", None),
    ("pkg.nets:nope", "has no function 'nope'"),
    ("pkg.nope:real", "no module named 'pkg.nope'"),
    ("nosuchpackage.models:net", "no module named 'nosuchpackage'"),
    ("os:system", "standard-library module 'os'"),
    ("star.py:anything", None),  # a star import: only running it could tell
    ("broken.py:real", "syntax error in"),
    ("missing.py:real", "does not exist"),
    ("checkpoint", "is a folder without config.json"),
    ("nofolder", "is not a folder and names no function"),
])
def test_factories_read_not_run(tmp_path: Path, student: str, says: str | None) -> None:
    for name in ("nets.py", "pkg/nets.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(FACTORIES + "\nraise SystemExit('never run')\n")
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "star.py").write_text("from nets import *\n")
    (tmp_path / "broken.py").write_text("def real(:\n")
    (tmp_path / "checkpoint").mkdir()
    x, y = digits(20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    path = _project(tmp_path, f"""
        [model]
        student = "{student}"
        student_weights = "w.safetensors"
        [data]
        test = "d.npz"
        """)
    (tmp_path / "w.safetensors").write_bytes(b"\x08" + b"\x00" * 15)
    if says is None:
        load(path)
    else:
        with pytest.raises(UsageError) as caught:
            load(path)
        assert says in str(caught.value) and str(caught.value).startswith("model.student")


def test_target_budget_and_files_together(tmp_path: Path) -> None:
    x, y = digits(20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "empty.safetensors").write_bytes(b"")
    path = _project(tmp_path, """
        target = "raspbery"
        [model]
        student = "models.py:student"
        student_weights = "empty.safetensors"
        [data]
        test = "d.npz"
        """)
    with pytest.raises(UsageError) as caught:
        load(path, budget=tmp_path / "nope.toml")
    text = str(caught.value)
    assert text.startswith(f"3 problems in {path}: (1) unknown target 'raspbery'")
    assert "(2) " in text and "budget file not found" in text
    assert "(3) model.student_weights: " in text and "is empty" in text
    # The target given to the build wins over the file's; runtimes must be the target's.
    with pytest.raises(UsageError, match="'openvino' is not a runtime of target 'x86-cpu'"):
        load(path, target="x86-cpu", settings=["runtimes=[\"openvino\"]",
                                               "model.student_weights=d.npz"])


def test_objects_replace_the_files(tmp_path: Path) -> None:
    """With models and data given as objects, the files the project names are not read."""
    path = _project(tmp_path, """
        [model]
        student = "models.py:nothing"
        student_weights = "nope.safetensors"
        [data]
        test = "nope.npz"
        """)
    assert load(path, check_inputs=False).model is not None
    with pytest.raises(UsageError, match="^3 problems"):
        load(path)
