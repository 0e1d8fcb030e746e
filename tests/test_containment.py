"""Containment through the real CLI: a build replaces only what edgekd wrote at OUT/<target>;
paths from the project file stay inside the project folder at every depth (symlinks
followed), unless written absolute; and only regular files are read, so a named pipe can
never hang a build. Each refusal is one `error:` line, exit 2, no traceback, the user's files
byte for byte as they were and nothing written where it should not be."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.errors import UsageError
from edgekd.inputs.sources import load_samples
from tests.projects import digits
from tests.test_bad_input import finished

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _tree(path: Path) -> dict[str, str]:
    """Every file and link under ``path`` (or ``path`` itself), with its bytes' digest."""
    if path.is_symlink() or path.is_file():
        return {".": os.readlink(path) if path.is_symlink() else
                hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): (f"-> {os.readlink(p)}" if p.is_symlink() else
                                       hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(path.rglob("*")) if p.is_symlink() or p.is_file()}


def _refused(args: list[str], says: str) -> str:
    result = runner.invoke(app, ["build", "--target", "x86-cpu", *args])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and says in errors[0], result.output
    assert "Traceback" not in result.output
    return errors[0]


def _images(folder: Path, classes: dict[str, int]) -> None:
    """8x8 grey digits as PNG files, ``n`` per class folder."""
    x, _ = digits(sum(classes.values()))
    i = 0
    for name, n in classes.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            pixels = (x[i].reshape(8, 8) * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels, "L").save(folder / name / f"{j}.png")
            i += 1


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished-model project (trained weights, data.test = data.npz), written once."""
    return finished(tmp_path_factory.mktemp("containment") / "p")


# --- OUT/<target>: only an edgekd build is ever replaced ------------------------------------

def _user_folder(out: Path) -> Path:
    target = out / "x86-cpu"
    target.mkdir(parents=True)
    (target / "notes.txt").write_text("my notes\n")
    (target / "flash.sh").write_text("#!/bin/sh\ndd if=model of=/dev/sdX\n")
    return target


def _user_file(out: Path) -> Path:
    out.mkdir(parents=True)
    (out / "x86-cpu").write_text("not a folder\n")
    return out / "x86-cpu"


def _user_link(out: Path) -> Path:
    out.mkdir(parents=True)
    (out / "x86-cpu").symlink_to(_user_folder(out.parent / "elsewhere"),
                                 target_is_directory=True)
    return out / "x86-cpu"


@pytest.mark.parametrize(("make", "says"), [
    (_user_folder, "exists and is not an edgekd build (no manifest.json): move it away or "
                   "choose another --out"),
    (_user_file, "exists and is not an edgekd build (it is a file, not a folder): move it "
                 "away or choose another --out"),
    (_user_link, "is a symbolic link, not an edgekd build folder: remove the link or choose "
                 "another --out"),
], ids=["folder", "file", "link"])
def test_what_is_not_an_edgekd_build_is_never_replaced(make, says: str, project: Path,
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    theirs = make(out)
    before, around = _tree(tmp_path), sorted(p.name for p in out.iterdir())
    line = _refused(["--config", str(project), "--out", str(out)], says)
    assert line == f"error: {theirs} {says}"
    assert _tree(tmp_path) == before  # byte for byte, nothing added anywhere
    assert sorted(p.name for p in out.iterdir()) == around  # no .cache, no .x86-cpu.old-*


def test_an_empty_folder_then_an_earlier_build_are_replaced(project: Path,
                                                            tmp_path: Path) -> None:
    """An absolute ``out`` in the project file is the user's choice; the empty folder there
    and then the build's own earlier output are replaced as a whole."""
    out = tmp_path / "elsewhere" / "out"
    (out / "x86-cpu").mkdir(parents=True)
    config = project.parent / "absolute.toml"
    config.write_text(f"out = {json.dumps(str(out))}\n" + project.read_text())
    for _ in range(2):
        result = runner.invoke(app, ["build", "--config", str(config), "--target", "x86-cpu"])
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "x86-cpu" / "manifest.json").read_text())
        assert isinstance(manifest["edgekd_version"], str)
    assert not [p for p in out.iterdir() if p.name.startswith(".x86-cpu.")]


# --- out in the project file ------------------------------------------------------------------

def test_a_relative_out_may_not_leave_the_project(project: Path, tmp_path: Path) -> None:
    root = project.parent.resolve()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out-link").unlink(missing_ok=True)
    (root / "out-link").symlink_to(outside, target_is_directory=True)
    for value in ("../../x", "out-link", "sub/../../x"):
        config = root / "leaves.toml"
        config.write_text(f"out = {json.dumps(value)}\n" + project.read_text())
        before = _tree(tmp_path)
        line = _refused(["--config", str(config)],
                        f"out: {value} leaves the project folder {root}; give an absolute "
                        "path if you mean it")
        assert line.startswith("error: out: ")
        assert _tree(tmp_path) == before
        assert not (root.parent / "x").exists() and not (root.parent.parent / "x").exists()
        assert list(outside.iterdir()) == []


# --- data read through links -------------------------------------------------------------------

def test_a_link_below_a_data_folder_may_not_leave_the_project(project: Path,
                                                               tmp_path: Path) -> None:
    root = project.parent.resolve()
    outside = tmp_path / "outside"
    _images(outside, {"secret": 2, "loose": 1})
    data = root / "linked"
    _images(data, {"zero": 2, "one": 2})
    (data / "two").symlink_to(outside / "secret", target_is_directory=True)  # a class folder
    out = tmp_path / "out"
    before = _tree(outside)
    _refused(["--config", str(project), "--out", str(out), "--set", "data.test=linked"],
             f"data.test: {data / 'two'} is a link to {outside.resolve() / 'secret'}, outside "
             f"the project folder {root}: copy the files in, or remove the link")
    (data / "two").unlink()
    (data / "one" / "2.png").symlink_to(outside / "loose" / "0.png")  # one image
    _refused(["--config", str(project), "--out", str(out), "--set", "data.test=linked"],
             f"data.test: {data / 'one' / '2.png'} is a link to "
             f"{outside.resolve() / 'loose' / '0.png'}, outside the project folder {root}")
    assert _tree(outside) == before
    assert not (out / "x86-cpu").exists()
    assert not out.exists() or not [p for p in out.iterdir() if ".staging-" in p.name]


def test_an_absolute_data_folder_is_the_limit_itself(project: Path, tmp_path: Path) -> None:
    """Written absolute, a folder outside the project is the user's choice; a link inside it
    that leads further out is still refused."""
    data = tmp_path / "shared" / "digits"
    _images(data, {"zero": 2, "one": 2})
    _images(tmp_path / "private", {"two": 2})
    (data / "two").symlink_to(tmp_path / "private" / "two", target_is_directory=True)
    _refused(["--config", str(project), "--out", str(tmp_path / "out"), "--set",
              f"data.test={data}"],
             f"data.test: {data / 'two'} is a link to {(tmp_path / 'private' / 'two').resolve()}"
             f", outside the data folder {data.resolve()}: copy the files in, or remove the link")
    (data / "two").unlink()
    samples = load_samples(str(data), root=project.parent, what="data.test")
    assert samples.classes == ("one", "zero") and samples.x.shape == (4, 1, 8, 8)


def test_links_that_stay_inside_are_followed(tmp_path: Path) -> None:
    project = tmp_path / "p"
    _images(project / "pool", {"zero": 2, "one": 3})
    (project / "train").mkdir()
    (project / "train" / "zero").symlink_to(project / "pool" / "zero")
    (project / "train" / "one").mkdir()
    for i in range(3):
        (project / "train" / "one" / f"{i}.png").symlink_to(project / "pool" / "one" / f"{i}.png")
    np.savez(project / "pool" / "a.npz", x=np.ones((3, 4)), y=np.arange(3))
    (project / "a.npz").symlink_to(project / "pool" / "a.npz")
    samples = load_samples("train", root=project, what="data.train")
    assert samples.classes == ("one", "zero") and samples.y.tolist() == [0, 0, 0, 1, 1]
    assert len(load_samples("a.npz", root=project, what="data.train")) == 3


def test_a_broken_or_looping_link_is_named_not_skipped(tmp_path: Path) -> None:
    _images(tmp_path / "train", {"zero": 2, "one": 2})
    (tmp_path / "train" / "one" / "9.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(UsageError, match=r"data.train: .*/train/one/9.png is a link to "
                                         r".*/gone.png, which cannot be followed"):
        load_samples("train", root=tmp_path, what="data.train")


# --- only regular files are read ------------------------------------------------------------

def _build_in_a_process(project: Path, out: Path, *settings: str
                        ) -> subprocess.CompletedProcess[str]:
    """A real `edgekd build` process with a bounded wait: a regression fails, never hangs."""
    args = [a for s in settings for a in ("--set", s)]
    return subprocess.run([sys.executable, "-m", "edgekd", "build", "--config", str(project),
                           "--target", "x86-cpu", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=240, cwd=ROOT)


def test_a_named_pipe_is_refused_not_waited_on(project: Path, tmp_path: Path) -> None:
    root = project.parent.resolve()
    os.mkfifo(root / "pipe.npz")
    _images(root / "piped", {"zero": 2, "one": 2})
    os.mkfifo(root / "piped" / "one" / "2.png")
    out = tmp_path / "out"
    for setting, path in (("data.test=pipe.npz", root / "pipe.npz"),
                          ("data.test=piped", root / "piped" / "one" / "2.png")):
        done = _build_in_a_process(project, out, setting)
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2, done.stderr
        assert errors == [f"error: data.test: {path} is a named pipe (FIFO), not a regular "
                          "file: edgekd reads only regular files; remove it or put the data "
                          "there as a file"], done.stderr
        assert "Traceback" not in done.stderr
    assert not (out / "x86-cpu").exists()
