"""Where the files shipped with edgekd live (``targets/`` and ``calibration/``), and how a
file a user names (a target, a budget, a report) is read.

The shipped files sit at the top of the repository and are packaged as ``edgekd._targets``
and ``edgekd._calibration`` (see pyproject.toml), so both a checkout and an installed wheel
find them through importlib.resources.
"""

from __future__ import annotations

import os
import stat
from importlib.resources import files
from pathlib import Path


def targets_dir() -> Path:
    return Path(str(files("edgekd._targets")))


def calibration_dir() -> Path:
    return Path(str(files("edgekd._calibration")))


def default_calibration_file() -> Path:
    return calibration_dir() / "digits.npz"


def read_text_file(path: Path) -> str:
    """The UTF-8 text of the regular file at ``path`` (a link is followed).

    Raises :class:`FileNotFoundError` when nothing is there and :class:`ValueError` with a
    short reason ("is a folder, not a file", "is a link to X, which does not exist", "is not
    UTF-8 text ...") for anything else that is not a readable UTF-8 file. It is opened
    without blocking and checked before it is read, so a FIFO or a device never hangs the
    command."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ValueError(f"is a link to {os.readlink(path)}, which does not exist") from None
        raise
    except IsADirectoryError:
        raise ValueError("is a folder, not a file") from None
    except OSError as exc:
        raise ValueError(f"cannot be opened: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ValueError("is a folder, not a file")
        if not stat.S_ISREG(mode):
            raise ValueError("is not a regular file (a FIFO, socket or device)")
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ValueError(f"cannot be read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                         f"{exc.start})") from exc
