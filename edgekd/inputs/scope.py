"""Which files a data source may read: every file and folder actually read is resolved and
must stay inside the project folder (or the absolute data folder the user named), and must be
a regular file or folder, opened without blocking, so a link out of the project or a named
pipe is one line, never a read from elsewhere or a hang."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from edgekd.errors import UsageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".pgm", ".ppm"})

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a folder" if stat.S_ISDIR(mode) else "not a regular file"


def _resolved(path: Path, what: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise UsageError(f"{what}: {path} cannot be resolved ({_first_line(exc)}): fix or "
                         "remove the link") from exc


@dataclass(frozen=True)
class Scope:
    """Where one data source may read: every path is resolved and must stay under ``root``
    (the project folder, or the data folder given as an absolute path outside it)."""

    root: Path  # resolved
    what: str  # the setting, e.g. data.train
    name: str  # "the project folder" | "the data folder"

    @classmethod
    def of(cls, spec: str, path: Path, project: Path, what: str) -> Scope:
        root = project.resolve()
        if Path(spec).expanduser().is_absolute():
            real = _resolved(path, what)
            if not _inside(real, root):  # the user's explicit choice: that folder, no further
                return cls(real if real.is_dir() else real.parent, what, "the data folder")
        return cls(root, what, "the project folder")

    def check(self, path: Path) -> Path:
        """``path`` resolved; refused if it leads outside :attr:`root`."""
        real = _resolved(path, self.what)
        if not _inside(real, self.root):
            raise UsageError(f"{self.what}: {path} is a link to {real}, outside {self.name} "
                             f"{self.root}: copy the files in, or remove the link")
        return real

    def special(self, path: Path, mode: int) -> UsageError:
        return UsageError(f"{self.what}: {path} is {_kind(mode)}, not a regular file: edgekd "
                          "reads only regular files; remove it or put the data there as a file")

    def open(self, path: Path) -> IO[bytes]:
        """``path`` opened for reading, only if it is a regular file inside the scope: never
        blocks on a named pipe (opened non-blocking, checked, then read as usual)."""
        real = self.check(path)
        try:
            mode = os.stat(real).st_mode
            if not stat.S_ISREG(mode):
                raise self.special(path, mode)
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise UsageError(f"{self.what}: cannot read {path} ({exc.strerror or exc}): check "
                             "the file and its permissions") from exc
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):  # replaced between the stat and the open
            os.close(fd)
            raise self.special(path, mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")


def listing(folder: Path, scope: Scope, *, folders: bool) -> tuple[list[Path], list[Path]]:
    """The visible sub-folders (only when ``folders``: they are read) and image files of
    ``folder``, sorted, each checked against ``scope``. Broken links, named pipes, sockets
    and devices are refused rather than skipped: one of them may be a sample."""
    try:
        entries = sorted(p for p in folder.iterdir() if _visible(p))
    except OSError as exc:
        raise UsageError(f"{scope.what}: cannot list {folder} ({exc.strerror or exc}): check "
                         "its permissions") from exc
    subdirs: list[Path] = []
    files: list[Path] = []
    for p in entries:
        try:
            mode = p.stat().st_mode
        except OSError as exc:
            if p.is_symlink():
                raise UsageError(f"{scope.what}: {p} is a link to {os.readlink(p)}, which "
                                 "cannot be followed (it does not exist, or it loops): fix "
                                 "or remove the link") from exc
            raise UsageError(f"{scope.what}: cannot read {p} ({exc.strerror or exc}): check "
                             "its permissions") from exc
        if stat.S_ISDIR(mode):
            if folders:
                scope.check(p)
                subdirs.append(p)
        elif stat.S_ISREG(mode):
            if p.suffix.lower() in IMAGE_SUFFIXES:
                scope.check(p)
                files.append(p)
        else:
            raise scope.special(p, mode)
    return subdirs, files


