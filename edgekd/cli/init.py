"""``edgekd init``: a project that builds as written, in a new or empty folder.

The projects are the shipped examples (:mod:`edgekd._examples`, package data): ``starter``
by default, another with ``--example NAME``. Each is copied with its ``make_data.py`` run in
the copy, which writes the project's ``data/``. Everything is written into a hidden folder
beside the destination first and moved into place only once complete, so a failure (or
Ctrl-C) leaves nothing half-written; files already there are replaced only with ``--force``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.app import app, fail
from edgekd.cli.display import console
from edgekd.errors import EdgekdError, UsageError

DEFAULT = "starter"
# Not copied: the packaging marker, caches, and what the example's own runs wrote in a checkout.
_SKIP = ("__init__.py", "__pycache__", "data", "build", ".*")
DATA_SCRIPT = "make_data.py"


def examples() -> dict[str, Path]:
    """The shipped example projects by the name ``--example`` takes (``digits-images``)."""
    root = Path(str(files("edgekd._examples")))
    return {p.name.replace("_", "-"): p for p in sorted(root.iterdir())
            if p.is_dir() and (p / "edgekd.toml").is_file()}


def _source(example: str | None) -> Path:
    found = examples()
    name = example or DEFAULT
    if name not in found:
        raise UsageError(f"--example {name!r}: no such example; choose from "
                         f"{', '.join(n for n in found if n != DEFAULT)}")
    return found[name]


def _destination(folder: Path) -> Path:
    """The folder to write into: existing, or new inside an existing folder."""
    if folder.suffix == ".toml" and not folder.is_dir():
        raise UsageError(f"edgekd init takes a folder, not a file: run `edgekd init "
                         f"{folder.parent}` to write edgekd.toml, models.py and data/ there")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{folder} is a file: give a folder to write the project into")
    if not folder.exists() and not folder.parent.is_dir():
        raise UsageError(f"cannot create {folder}: the folder {folder.parent} does not exist: "
                         "create it first or choose another folder")
    return folder


def _entries(source: Path) -> list[str]:
    """What the project consists of at its top level, as written into the destination."""
    skip = shutil.ignore_patterns(*_SKIP)
    names = [p.name for p in sorted(source.iterdir())]
    kept = [n for n in names if n not in skip(str(source), names)]
    return kept + (["data"] if DATA_SCRIPT in kept else [])


def _write_data(stage: Path) -> str:
    """Run the project's data script in ``stage``; its last line of output says what it
    wrote."""
    try:
        done = subprocess.run([sys.executable, DATA_SCRIPT], cwd=stage, capture_output=True,
                              text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired as exc:
        raise EdgekdError(f"{DATA_SCRIPT} did not finish in {exc.timeout:.0f} s: nothing was "
                          "written") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        hint = (": install what building needs (pip install 'edgekd[build]')"
                if "ModuleNotFoundError" in last else "")
        raise EdgekdError(f"{DATA_SCRIPT} failed ({last}){hint}; nothing was written")
    return (done.stdout.strip().splitlines() or [""])[-1]


def write_project(folder: Path, example: str | None = None, force: bool = False
                  ) -> tuple[list[str], str]:
    """Copy the example (default: the starter) into ``folder`` and write its data. Returns
    what was written (top-level names) and the data script's summary."""
    source = _source(example)
    folder = _destination(folder)
    entries = _entries(source)
    taken = [n for n in entries if (folder / n).exists() or (folder / n).is_symlink()]
    if taken and not force:
        them = "it" if len(taken) == 1 else "them"
        raise UsageError(f"{folder} already has {', '.join(taken)}: pass --force to replace "
                         f"{them}, or choose another folder")
    home = folder if folder.exists() else folder.parent
    stage = Path(tempfile.mkdtemp(prefix=".edgekd-init-", dir=home))
    try:
        shutil.copytree(source, stage, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(*_SKIP))
        summary = _write_data(stage) if DATA_SCRIPT in entries else ""
        shutil.rmtree(stage / "__pycache__", ignore_errors=True)
        if not folder.exists():
            os.replace(stage, folder)  # the whole project appears at once
        else:
            for name in entries:  # each entry appears whole; replaced ones only with --force
                target = folder / name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                os.replace(stage / name, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return entries, summary


@app.command()
def init(
    folder: Annotated[Path, typer.Argument(help="Folder to write the project into (created "
                                           "if missing; default: the current folder).")]
    = Path("."),
    example: Annotated[str | None, typer.Option(
        help="Copy this shipped example instead of the starter (digits-images: PNG digits, "
        "TFLite + ONNX for a Raspberry Pi).")] = None,
    force: Annotated[bool, typer.Option(help="Replace files the project would overwrite.")]
    = False,
) -> None:
    """Write a project that builds as it is: edgekd.toml (commented), models.py and a small
    data set in data/. Then run `edgekd build` in that folder and make the project yours."""
    try:
        entries, summary = write_project(folder, example, force)
    except EdgekdError as exc:
        raise fail(exc, False) from exc
    except OSError as exc:
        raise fail(UsageError(f"cannot write the project into {folder} ({exc.strerror or exc})"
                              ": choose another folder or fix its permissions"), False) from exc
    where = "" if folder.resolve() == Path.cwd().resolve() else f"cd {folder} && "
    console.print(f"wrote {', '.join(entries)} in {folder}" + (f" ({summary})" if summary
                                                                else ""), soft_wrap=True)
    console.print(f"next: {where}edgekd build   (edgekd.toml says what each line does)",
                  soft_wrap=True)
