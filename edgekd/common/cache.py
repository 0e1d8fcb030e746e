"""One helper for content digests and cache entries.

Digests. :class:`Digest` hashes a sequence of parts, each tagged with its kind and length so
that no two different sequences hash alike: JSON-able values (dict keys sorted, so a dict's
order never matters, while the order of the parts does), NumPy arrays (dtype, shape and
bytes) and files (their bytes). :func:`digest_of` is the one-line form; :func:`sha256_file`
is a file's plain sha256, the number the manifest records.

Cache entries. Every cache of a build (the training stages, the INT8 models, the teacher's
outputs) is a :class:`CacheDir`: one folder per ``(name, key)``, written as a temporary
folder beside the entries and renamed into place in one step, with a completion marker
written last. A build killed at any moment (SIGKILL included) leaves whole entries only; a
folder without its marker is never read. Reading an entry marks it used (the marker's
mtime), and after every write the least recently used entries are evicted until the folder
holds at most ``EDGEKD_CACHE_MAX_BYTES`` bytes (default 2 GiB, per cache folder; a number of
bytes with an optional ``K``/``M``/``G`` suffix, ``0`` for no limit). The entry just written
is never evicted, nor an entry still being written; one evicted while another build reads
it costs that build a cache miss at most (its memory maps stay valid on POSIX). Temporary
folders of writers that died on this host are removed at the same time.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from edgekd.errors import UsageError

log = logging.getLogger(__name__)

MAX_BYTES_ENV = "EDGEKD_CACHE_MAX_BYTES"
DEFAULT_MAX_BYTES = 2 << 30
MARKER = ".complete"  # written last: an entry without it is incomplete or damaged
_SEP = "~"  # in temporary names; hostnames and entry names never contain it
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


# -- digests ------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """JSON's ``default``: the few non-JSON types a config or a TOML value holds. Anything
    else is a bug: ``str()`` of an arbitrary object may hold a memory address, and a key
    that changes every run is a cache that never hits."""
    if isinstance(value, PurePath):
        return value.as_posix()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot digest a {type(value).__name__}: pass JSON-able values, NumPy "
                    "arrays, or Digest.file() for a file's bytes")


class Digest:
    """A sha256 built from parts: ``Digest().update("teacher", config, x).hexdigest(16)``.

    Each part is written as ``kind, length, bytes`` so that the boundaries between parts
    count: ``update("ab", "c")`` and ``update("a", "bc")`` differ.
    """

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def _tagged(self, kind: bytes, header: bytes) -> None:
        self._h.update(kind + len(header).to_bytes(8, "little") + header)

    def update(self, *parts: Any) -> Digest:
        """Add parts in order: NumPy arrays by content, anything else as JSON."""
        for part in parts:
            if isinstance(part, np.ndarray):
                self.array(part)
            else:
                text = json.dumps(part, sort_keys=True, default=_plain, allow_nan=True)
                self._tagged(b"J", text.encode())
        return self

    def array(self, array: np.ndarray) -> Digest:
        """Add an array's dtype (byte order included), shape and C-order bytes."""
        if array.dtype.hasobject:
            raise TypeError("cannot digest an object array: its bytes are pointers")
        self._tagged(b"A", json.dumps([array.dtype.str, list(array.shape)]).encode())
        flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)  # no copy if contiguous
        self._h.update(len(flat).to_bytes(8, "little"))
        self._h.update(flat.data)
        return self

    def file(self, path: Path) -> Digest:
        """Add a file's bytes (not its name or times)."""
        self._tagged(b"F", sha256_file(path).encode())
        return self

    def hexdigest(self, length: int | None = None) -> str:
        """The hex digest, cut to ``length`` characters (64: all of it)."""
        return self._h.hexdigest()[:length]


def digest_of(*parts: Any, length: int | None = None) -> str:
    """The hex :class:`Digest` of ``parts`` (JSON-able values and NumPy arrays)."""
    return Digest().update(*parts).hexdigest(length)


# -- cache entries ------------------------------------------------------------------------


def max_bytes_from_env() -> int | None:
    """The byte limit ``EDGEKD_CACHE_MAX_BYTES`` sets (default 2 GiB); None: no limit."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip().upper().removesuffix("B").removesuffix("I")
    if not raw:
        return DEFAULT_MAX_BYTES
    unit = raw[-1] if raw[-1] in _UNITS else ""
    number = raw[:-1] if unit else raw
    try:
        value = int(float(number) * _UNITS[unit])
    except (ValueError, OverflowError):  # not a number, NaN, inf
        value = -1
    if value < 0:
        raise UsageError(f"{MAX_BYTES_ENV}={os.environ[MAX_BYTES_ENV]!r} is not a size: set "
                         "it to a number of bytes such as 2000000000 or 2G (0: no limit)")
    return value or None


@dataclass(frozen=True)
class Entry:
    """A complete cache entry: its folder, its size on disk, when it was last used."""

    path: Path
    size: int  # bytes
    used: float  # the marker's mtime (seconds since the epoch)


def _folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for f in files:
            with suppress(OSError):  # a file evicted or replaced meanwhile
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _alive(host: str, pid: int) -> bool:
    """Whether the process that owns a temporary folder may still be writing it. Another
    host's processes cannot be checked: they count as alive."""
    if host != socket.gethostname() or os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


@dataclass(frozen=True)
class CacheDir:
    """Entries ``<root>/<name>-<key>/``, each complete or absent. ``fresh`` never reads
    entries (new ones are still written, replacing old ones)."""

    root: Path
    fresh: bool = False

    def path(self, name: str, key: str) -> Path:
        """Where the entry lives, whether or not it exists."""
        return self.root / f"{name}-{key}"

    def entry(self, name: str, key: str) -> Path | None:
        """The complete entry's folder, marked as used; None when absent, damaged or
        ``fresh``."""
        folder = self.path(name, key)
        if self.fresh:
            return None
        try:
            marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(marker, dict) or marker.get("key") != key:
            log.warning("ignoring cache entry %s: its marker is for another key", folder)
            return None
        with suppress(OSError):  # a read-only cache is still a cache
            os.utime(folder / MARKER)
        return folder

    def _temp_name(self, name: str, kind: str) -> str:
        # ".<entry>~<kind>~<host>~<pid>~<random>": hidden, never an entry, and tells eviction
        # whether its writer is still alive.
        return _SEP.join((f".{name}", kind, socket.gethostname(), str(os.getpid()),
                          uuid.uuid4().hex[:8]))

    @contextmanager
    def write(self, name: str, key: str) -> Iterator[Path]:
        """Yield an empty temporary folder to fill; on success it becomes the entry in one
        rename (replacing an existing one), on an exception it is removed. Then the cache
        is evicted down to its limit, the new entry kept."""
        final = self.path(name, key)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / self._temp_name(final.name, "tmp")
        tmp.mkdir()
        try:
            yield tmp
            # Written last, so that a folder with a marker is complete. No fsync: a killed
            # process loses nothing the kernel has; only a power cut could.
            (tmp / MARKER).write_text(json.dumps({"name": name, "key": key}), encoding="utf-8")
            self._install(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already when renamed
        try:
            self.evict(keep=(final,))
        except OSError as exc:  # the entry is written; a full cache is no reason to fail
            log.warning("could not evict old entries from %s: %s", self.root, exc)

    def _install(self, tmp: Path, final: Path) -> None:
        aside = self.root / self._temp_name(final.name, "old")
        # A directory cannot be renamed onto a full one: move the old entry away first.
        with suppress(FileNotFoundError):
            os.replace(final, aside)
        try:
            os.replace(tmp, final)
        except OSError as exc:
            # Another process installed the same key in between; same key, same content.
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        finally:
            shutil.rmtree(aside, ignore_errors=True)

    def entries(self) -> list[Entry]:
        """The complete entries, least recently used first."""
        found = []
        for folder in self.root.iterdir() if self.root.is_dir() else ():
            if folder.name.startswith("."):
                continue
            try:
                used = (folder / MARKER).stat().st_mtime
            except OSError:  # not an entry (or a damaged one, replaced on its next write)
                continue
            found.append(Entry(folder, _folder_bytes(folder), used))
        return sorted(found, key=lambda e: (e.used, e.path.name))

    def total_bytes(self) -> int:
        """Bytes on disk of the complete entries."""
        return sum(e.size for e in self.entries())

    def evict(self, max_bytes: int | None = None, *, keep: Collection[Path] = ()
              ) -> list[Path]:
        """Remove least recently used entries until the rest fit in ``max_bytes`` (None:
        what ``EDGEKD_CACHE_MAX_BYTES`` says), never those in ``keep``; also remove
        temporary folders whose writer on this host has died. Returns the evicted folders."""
        limit = max_bytes_from_env() if max_bytes is None else max_bytes
        self._remove_orphans()
        if limit is None:
            return []
        entries = self.entries()
        total = sum(e.size for e in entries)
        evicted = []
        for e in entries:
            if total <= limit:
                break
            if e.path in keep:
                continue
            # Renamed away first, so that a reader never sees a half-deleted entry.
            doomed = self.root / self._temp_name(e.path.name, "old")
            try:
                os.replace(e.path, doomed)
            except OSError as exc:  # another process evicted or replaced it
                log.debug("not evicting %s: %s", e.path, exc)
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            total -= e.size
            evicted.append(e.path)
        if evicted:
            log.info("cache %s: evicted %d least recently used entries, %d bytes left",
                     self.root, len(evicted), total)
        return evicted

    def _remove_orphans(self) -> None:
        """Temporary folders left by a killed writer (a SIGKILL skips every ``finally``)."""
        for folder in self.root.glob(f".*{_SEP}*") if self.root.is_dir() else ():
            parts = folder.name.split(_SEP)
            if len(parts) != 5 or parts[1] not in ("tmp", "old") or not parts[3].isdigit():
                continue
            if not _alive(parts[2], int(parts[3])):
                shutil.rmtree(folder, ignore_errors=True)
