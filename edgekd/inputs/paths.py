"""The user's files as edgekd opens them: a path from a project file resolved inside the
project folder, a file checked to be a regular readable file (a named pipe would block the
build) and recognised by its first bytes for hints. Shared by :mod:`.model_files` (factories,
ONNX), :mod:`.weights` and :mod:`.hf`.

(:mod:`.scope` and ``edgekd.settings.resources.read_text_file`` make the same "regular file,
no FIFO" check for data sources and settings files.)
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edgekd.errors import UsageError


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def missing(what: str, path: Path) -> UsageError:
    return UsageError(f"{what}: {path} does not exist: check the path (relative paths start "
                      "at the project folder)")


def check_file(path: Path, what: str, kind: str, empty: str | None) -> bytes:
    """The first bytes of ``path``, or one line saying why it is not a readable file."""
    try:
        if not path.exists():
            raise missing(what, path)
        if path.is_dir():
            raise UsageError(f"{what}: {path} is a folder, not a file: name the {kind} file "
                             "in it")
        # Opened without blocking and checked on the open handle: a named pipe would block
        # the build forever, and a path swapped between a check and the open is caught too.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if not stat.S_ISREG(mode):
                kind_of = ("a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket"
                           if stat.S_ISSOCK(mode) else "a device")
                raise UsageError(f"{what}: {path} is {kind_of}, not a regular file: edgekd "
                                 f"reads only regular files; give the {kind} file itself")
            head = f.read(16)
    except PermissionError as exc:
        raise UsageError(f"{what}: cannot read {path} (permission denied): fix its "
                         "permissions (chmod a+r) or run as a user who can read it") from exc
    except OSError as exc:
        raise UsageError(f"{what}: cannot read {path} ({exc.strerror or first_line(exc)}): "
                         "check the file") from exc
    if not head and empty is not None:
        raise UsageError(f"{what}: {path} is empty{empty}")
    return head


def looks_like(head: bytes) -> str | None:
    """What a file is by its first bytes, for hints when it was named as something else."""
    # A zip (torch.save since 1.6), or a pickle's PROTO opcode (the legacy format).
    protocol = head[1] if len(head) > 1 else 0
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and 2 <= protocol <= 5):
        return "a torch.save checkpoint (name it .pt)"
    if head[8:10] == b'{"' and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file (name it .safetensors)"
    return None


def resolve_path(value: str, root: Path, what: str, *, must_exist: bool = True) -> Path:
    """``value`` relative to the project folder ``root``; absolute paths as given. A relative
    path that leaves ``root`` (``..``, or a symlink pointing out) is refused."""
    if not str(value).strip():
        raise UsageError(f"{what} is empty: give a path (relative to the project folder {root})")
    path = Path(value).expanduser()
    if not path.is_absolute():
        root = root.resolve()
        try:
            path = (root / path).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise UsageError(f"{what}: {value} cannot be resolved ({first_line(exc)}): fix "
                             "the path or the links on it") from exc
        if path != root and root not in path.parents:
            raise UsageError(f"{what}: {value} leaves the project folder {root}; give an "
                             "absolute path if you mean it")
    if must_exist and not path.exists():
        raise missing(what, path)
    return path
