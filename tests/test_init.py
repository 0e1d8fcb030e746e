"""`edgekd init`: a project that builds as written (real `init` then real `build`, in
subprocesses), refusals that name every file in one line, and nothing half-written."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.cli.init import examples
from edgekd.pipeline.api import load


def edgekd(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _built(folder: Path, target: str) -> dict:
    report = json.loads((folder / "build" / target / "report.json").read_text())
    assert report["artifacts"], report
    for artifact in report["artifacts"]:  # verified in the runtime against PyTorch
        assert artifact["top1_agreement"] >= 0.98 and artifact["accuracy"] > 0.9, artifact
        assert (folder / "build" / target / artifact["path"]).is_file()
    return report


def test_init_then_build_in_an_empty_folder(tmp_path: Path) -> None:
    done = edgekd("init", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "edgekd.toml",
                                                         "make_data.py", "models.py"]
    assert len(list((tmp_path / "data" / "train").glob("*/*.png"))) == 400
    assert "next: edgekd build" in done.stdout
    done = edgekd("build", cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    report = _built(tmp_path, "x86-cpu")
    assert report["input"]["shape"] == [1, 3, 16, 16]
    assert report["dataset"]["sources"] == {"train": "data/train"}


def test_init_writes_a_new_folder_and_refuses_to_overwrite(tmp_path: Path) -> None:
    assert edgekd("init", "proj", cwd=tmp_path).returncode == 0
    project = load(tmp_path / "proj" / "edgekd.toml")  # the preflight passes too
    assert project.model is not None and project.model.teacher == "models.py:teacher"
    assert project.model.teacher_weights is None  # edgekd trains the teacher
    text = (tmp_path / "proj" / "edgekd.toml").read_text()
    assert "Without teacher_weights edgekd trains it first" in text
    (tmp_path / "proj" / "models.py").write_text("# mine\n")
    before = _tree(tmp_path / "proj")
    again = edgekd("init", "proj", cwd=tmp_path)
    errors = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert again.returncode == 2 and len(errors) == 1, again.stderr
    assert "edgekd.toml, make_data.py, models.py, data" in errors[0] and "--force" in errors[0]
    assert _tree(tmp_path / "proj") == before  # untouched
    forced = edgekd("init", "proj", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "proj" / "models.py").read_text() != "# mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["proj"]  # no staging folder left


@pytest.mark.parametrize(("args", "says"), [
    (["init", "proj/edgekd.toml"], "edgekd init takes a folder, not a file: run `edgekd init "
                                   "proj`"),
    (["init", "--example", "nope"], "--example 'nope': no such example; choose from "
                                    "digits-images"),
    (["init", "no/such/folder"], "the folder no/such does not exist"),
])
def test_init_refusals_write_nothing(tmp_path: Path, args: list[str], says: str) -> None:
    done = edgekd(*args, cwd=tmp_path)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(errors) == 1 and says in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_examples_ship_inside_the_package() -> None:
    found = examples()
    assert set(found) >= {"starter", "digits-images"}
    root = Path(__file__).resolve().parents[1]
    assert (root / "examples" / "digits-images").resolve() == found["digits-images"].resolve()


@pytest.mark.slow
def test_init_example_then_build(tmp_path: Path) -> None:
    done = edgekd("init", "--example", "digits-images", "digits", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    work = tmp_path / "digits"
    assert {p.name for p in (work / "data").iterdir()} == {"train", "test", "calibration"}
    done = edgekd("build", "--check", cwd=work, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    report = _built(work, "raspberrypi")
    assert report["input"]["shape"] == [1, 1, 16, 16]
