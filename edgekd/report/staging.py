"""All-or-nothing output folders: a build writes into a staging folder beside the final one
and swaps it into place only when everything succeeded, so a failing build never leaves
half-written artifacts and never replaces an earlier good build.

Only an earlier edgekd build (a folder whose ``manifest.json`` edgekd wrote) or an empty
folder is ever replaced: anything else at ``OUT/<target>`` is the user's, and the build
refuses it before any work starts (:func:`check_replaceable`, called by :func:`build_lock`)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekd.errors import UsageError

MANIFEST = "manifest.json"
_MAX_MANIFEST = 64 << 20  # edgekd's manifests are kilobytes; a bigger file is not one


def _writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {path} ({exc.strerror}): choose "
                         "another --out") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {path} is not writable: choose another --out or fix "
                         "its permissions")


def _not_ours(final: Path, why: str) -> UsageError:
    return UsageError(f"{final} exists and is not an edgekd build ({why}): move it away or "
                      "choose another --out")


def _manifest_problem(path: Path) -> str | None:
    """Why ``path`` is not a manifest edgekd wrote, or None when it is. Opened without
    following a link and without blocking, so a FIFO or a link put there cannot hang the
    check or send it elsewhere."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except OSError as exc:
        return f"{MANIFEST} cannot be read: {exc.strerror or exc}"
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_MANIFEST:
            return f"its {MANIFEST} is not a file edgekd wrote"
        try:
            raw = json.loads(f.read())
        except (OSError, ValueError):
            return f"its {MANIFEST} is not edgekd's"
    if not (isinstance(raw, dict) and isinstance(raw.get("edgekd_version"), str)):
        return f"its {MANIFEST} is not edgekd's"
    return None


def check_replaceable(final: Path) -> None:
    """Refuse, in one line, anything at ``final`` that a successful build must not replace:
    a file, a link, a folder that is not an edgekd build. Nothing there, an empty folder and
    an earlier edgekd build are fine."""
    if final.is_symlink():
        raise UsageError(f"{final} is a symbolic link, not an edgekd build folder: remove the "
                         "link or choose another --out")
    try:
        info = final.stat()
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (a file above it is _writable_dir's to report)
    except OSError as exc:
        raise UsageError(f"cannot inspect {final} ({exc.strerror or exc}): choose another "
                         "--out") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise _not_ours(final, "it is a file, not a folder")
    try:
        empty = next(final.iterdir(), None) is None
    except OSError as exc:
        raise UsageError(f"cannot list {final} ({exc.strerror or exc}): choose another "
                         "--out or fix its permissions") from exc
    why = None if empty else _manifest_problem(final / MANIFEST)
    if why is not None:
        raise _not_ours(final, why)


def _recover(final: Path) -> None:
    """Folders a killed build left beside ``final``: staging folders go; an earlier build
    moved aside (``.<name>.old-<pid>``) goes back in place if nothing replaced it, else goes.
    Only ever what edgekd made: a set-aside folder without edgekd's manifest stays."""
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in final.parent.glob(f".{final.name}.old-*"):
        if old.is_symlink() or not old.is_dir() or _manifest_problem(old / MANIFEST):
            continue
        if not final.exists() and not final.is_symlink():
            old.rename(final)
        else:
            shutil.rmtree(old, ignore_errors=True)


def _lock_fd(lock: Path, final: Path) -> int:
    """An open descriptor holding the exclusive lock on the file that is at ``lock`` now.

    A build removes its lock file when it ends, while it still holds the lock. A second build
    may have opened the old file before that: its lock would then be on a file that no longer
    has the name, so after locking it checks that the name still refers to the file it
    locked, and starts again if not. Only the holder ever unlinks the name, so once the check
    passes the lock is the folder's until released."""
    while True:
        # A build that ends removes .cache when it is empty: that may happen between the
        # mkdir and the open here, and then both are simply done again.
        with contextlib.suppress(FileExistsError):
            os.mkdir(lock.parent)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"another edgekd build is writing {final} right now: wait for "
                                 "it, or choose another --out") from exc
            raise
        try:
            named = os.stat(lock, follow_symlinks=False)
        except FileNotFoundError:
            named = None
        held = os.fstat(fd)
        if named is not None and (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino):
            return fd
        os.close(fd)  # the previous holder removed it after we opened it


def _release(lock: Path, fd: int) -> None:
    """Remove the lock file while still holding it, then let go; ``.cache`` goes too if the
    build left nothing else in it."""
    try:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        with contextlib.suppress(OSError):  # not empty: the stage caches stay
            lock.parent.rmdir()
    finally:
        os.close(fd)


@contextlib.contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """Hold ``.cache/<name>.lock`` beside ``final`` for the whole build: a second build into
    the same folder fails at once instead of racing it. Holding the lock also proves that staging
    folders left beside ``final`` (a build killed with SIGKILL) are stale: they go. Something
    at ``final`` that the build must not replace is refused here, before any work starts.
    The lock file is removed when the build ends, whether it succeeded, failed or was
    interrupted (only SIGKILL leaves it, and the next build takes it over)."""
    check_replaceable(final)
    _writable_dir(final.parent)
    lock = final.parent / ".cache" / f"{final.name}.lock"
    fd = _lock_fd(lock, final)
    try:
        _recover(final)
        check_replaceable(final)  # the recovered folder, if one came back
        yield
    finally:
        _release(lock, fd)


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final``, on failure it goes.
    ``final`` must be replaceable (:func:`check_replaceable`) when the build starts and
    still when it ends."""
    check_replaceable(final)
    _writable_dir(final.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
        staging.chmod(0o755)
        check_replaceable(final)  # the user may have put something there meanwhile
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            final.rename(old)
        try:
            staging.rename(final)
        except OSError:
            if old is not None:
                old.rename(final)  # put the earlier good build back
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
