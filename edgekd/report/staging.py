"""All-or-nothing output folders: a build writes into a staging folder beside the final one
and swaps it into place only when everything succeeded, so a failing build never leaves
half-written artifacts and never replaces an earlier good build."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgekd.errors import UsageError


def _writable_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {path} ({exc.strerror}): choose "
                         "another --out") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output folder {path} is not writable: choose another --out or fix "
                         "its permissions")


@contextlib.contextmanager
def build_lock(final: Path) -> Iterator[None]:
    """Hold ``.cache/<name>.lock`` beside ``final`` for the whole build: a second build into
    the same folder fails at once instead of racing it. Holding the lock also proves that staging
    folders left beside ``final`` (a build killed with SIGKILL) are stale: they go."""
    _writable_dir(final.parent)
    lock = final.parent / ".cache" / f"{final.name}.lock"
    lock.parent.mkdir(exist_ok=True)
    with lock.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"another edgekd build is writing {final} right now: wait for "
                                 "it, or choose another --out") from exc
            raise
        for stale in final.parent.glob(f".{final.name}.staging-*"):
            shutil.rmtree(stale, ignore_errors=True)
        yield


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success it becomes ``final``, on failure it goes."""
    _writable_dir(final.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.staging-", dir=final.parent))
    try:
        yield staging
        staging.chmod(0o755)
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
