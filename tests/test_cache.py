"""edgekd.common.cache: content digests, and cache entries that appear whole or not at all,
are replaced in place, ignored when fresh or damaged, and evicted least recently used first."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.common.cache import (
    DEFAULT_MAX_BYTES,
    MARKER,
    CacheDir,
    Digest,
    digest_of,
    max_bytes_from_env,
    sha256_file,
)
from edgekd.errors import UsageError


def _write(cache: CacheDir, name: str, key: str, size: int, used: float | None = None) -> Path:
    with cache.write(name, key) as tmp:
        (tmp / "data.bin").write_bytes(b"x" * size)
    folder = cache.path(name, key)
    if used is not None:  # explicit times: file systems round mtimes differently
        os.utime(folder / MARKER, (used, used))
    return folder


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


# -- entries ------------------------------------------------------------------------------


def test_a_written_entry_is_complete_and_readable(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path / "c")
    assert cache.entry("stage", "k1") is None
    with cache.write("stage", "k1") as tmp:
        assert tmp.parent == cache.root and tmp.name.startswith(".")
        assert cache.entry("stage", "k1") is None  # not visible while being written
        (tmp / "meta.json").write_text("{}")
    folder = cache.entry("stage", "k1")
    assert folder == tmp_path / "c" / "stage-k1"
    assert (folder / "meta.json").read_text() == "{}"
    assert _names(cache.root) == ["stage-k1"]  # no temporary folder left


def test_an_exception_inside_write_leaves_no_entry_and_no_temp_folder(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    with pytest.raises(RuntimeError, match="killed"), cache.write("stage", "k1") as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("killed")
    assert cache.entry("stage", "k1") is None
    assert _names(tmp_path) == []


def test_an_exception_while_replacing_keeps_the_old_entry(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    _write(cache, "stage", "k1", 3)
    with pytest.raises(RuntimeError), cache.write("stage", "k1") as tmp:
        (tmp / "data.bin").write_bytes(b"new")
        raise RuntimeError
    folder = cache.entry("stage", "k1")
    assert folder is not None and (folder / "data.bin").read_bytes() == b"xxx"
    assert _names(tmp_path) == ["stage-k1"]


def test_writing_an_existing_key_replaces_the_entry(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    _write(cache, "stage", "k1", 3)
    with cache.write("stage", "k1") as tmp:
        (tmp / "other.bin").write_bytes(b"new")
    folder = cache.entry("stage", "k1")
    assert folder is not None
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "other.bin"]  # nothing old
    assert _names(tmp_path) == ["stage-k1"]


def test_fresh_ignores_entries_but_still_writes_them(tmp_path: Path) -> None:
    _write(CacheDir(tmp_path), "stage", "k1", 3)
    fresh = CacheDir(tmp_path, fresh=True)
    assert fresh.entry("stage", "k1") is None
    with fresh.write("stage", "k1") as tmp:
        (tmp / "data.bin").write_bytes(b"again")
    folder = CacheDir(tmp_path).entry("stage", "k1")
    assert folder is not None and (folder / "data.bin").read_bytes() == b"again"


def test_a_damaged_entry_is_absent(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    folder = _write(cache, "stage", "k1", 3)
    (folder / MARKER).write_text("{not json")
    assert cache.entry("stage", "k1") is None
    (folder / MARKER).write_text('{"key": "k2"}')  # a marker for another key
    assert cache.entry("stage", "k1") is None
    (folder / MARKER).unlink()  # an entry from before markers, or half deleted by hand
    assert cache.entry("stage", "k1") is None
    assert cache.entries() == []
    _write(cache, "stage", "k1", 4)  # the next write replaces it
    assert cache.entry("stage", "k1") is not None


def test_a_folder_without_a_marker_is_not_an_entry(tmp_path: Path) -> None:
    # The teacher-output cache shares its root with the stage cache's folder.
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "big.bin").write_bytes(b"x" * 100)
    cache = CacheDir(tmp_path)
    assert cache.total_bytes() == 0
    assert cache.evict(0) == [] and (tmp_path / "stages" / "big.bin").exists()


# -- size and eviction --------------------------------------------------------------------


def test_total_bytes_counts_complete_entries(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    _write(cache, "a", "1", 1000)
    _write(cache, "b", "1", 500)
    marker = len((cache.path("a", "1") / MARKER).read_bytes())
    assert cache.total_bytes() == 1500 + 2 * marker
    assert [e.size for e in cache.entries()] == [1000 + marker, 500 + marker]


def test_eviction_removes_least_recently_used_first_down_to_the_limit(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    for i, name in enumerate(("a", "b", "c", "d")):
        _write(cache, name, "1", 1000, used=1_000_000 + i)
    assert [e.path.name for e in cache.entries()] == ["a-1", "b-1", "c-1", "d-1"]
    assert cache.entry("a", "1") is not None  # reading "a" makes it the most recent
    assert [e.path.name for e in cache.entries()] == ["b-1", "c-1", "d-1", "a-1"]
    evicted = cache.evict(2500)
    assert [p.name for p in evicted] == ["b-1", "c-1"]
    assert _names(tmp_path) == ["a-1", "d-1"]
    assert cache.total_bytes() <= 2500
    assert cache.evict(2500) == []  # already within the limit


def test_eviction_keeps_the_entries_it_is_told_to(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    old = _write(cache, "a", "1", 1000, used=1_000_000)
    _write(cache, "b", "1", 1000, used=1_000_001)
    assert cache.evict(0, keep=(old,)) == [cache.path("b", "1")]
    assert _names(tmp_path) == ["a-1"]


def test_write_evicts_to_the_environment_limit_but_keeps_the_new_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = CacheDir(tmp_path)
    _write(cache, "a", "1", 1000, used=1_000_000)
    _write(cache, "b", "1", 1000, used=1_000_001)
    monkeypatch.setenv("EDGEKD_CACHE_MAX_BYTES", "1500")
    _write(cache, "c", "1", 3000)  # alone over the limit: still kept, it is about to be used
    assert _names(tmp_path) == ["c-1"]


def test_eviction_never_touches_a_folder_being_written(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    _write(cache, "a", "1", 1000, used=1_000_000)
    with cache.write("b", "1") as tmp:
        (tmp / "data.bin").write_bytes(b"x" * 5000)
        assert cache.evict(0) == [cache.path("a", "1")]
        assert (tmp / "data.bin").exists()
    assert _names(tmp_path) == ["b-1"]


def test_eviction_removes_folders_of_dead_writers_only(tmp_path: Path) -> None:
    cache = CacheDir(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    orphan = tmp_path / cache._temp_name("stage-k1", "tmp").replace(
        f"~{os.getpid()}~", f"~{int(dead.stdout)}~")
    live = tmp_path / cache._temp_name("stage-k2", "tmp")
    elsewhere = tmp_path / ".stage-k3~tmp~another-host~1~abcd1234"
    for folder in (orphan, live, elsewhere):
        folder.mkdir()
    cache.evict()
    assert _names(tmp_path) == sorted([live.name, elsewhere.name])


@pytest.mark.parametrize(("value", "expected"), [
    (None, DEFAULT_MAX_BYTES), ("", DEFAULT_MAX_BYTES), ("12345", 12345), ("2K", 2048),
    ("1.5M", 3 << 19), ("2GiB", 2 << 30), ("1gb", 1 << 30), ("0", None)])
def test_the_limit_comes_from_the_environment(value: str | None, expected: int | None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("EDGEKD_CACHE_MAX_BYTES", raising=False)
    else:
        monkeypatch.setenv("EDGEKD_CACHE_MAX_BYTES", value)
    assert max_bytes_from_env() == expected


@pytest.mark.parametrize("value", ["lots", "-5", "nan", "inf", "2X"])
def test_a_bad_limit_names_the_variable(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKD_CACHE_MAX_BYTES", value)
    with pytest.raises(UsageError, match="EDGEKD_CACHE_MAX_BYTES=.*2G"):
        max_bytes_from_env()


# -- digests ------------------------------------------------------------------------------


def test_digests_are_stable_across_processes() -> None:
    parts = '"stage", {"b": 1, "a": [1.5, None]}, np.arange(6, dtype=np.int32).reshape(2, 3)'
    code = f"import numpy as np; from edgekd.common.cache import digest_of; " \
           f"print(digest_of({parts}))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout.strip()
    here = digest_of("stage", {"a": [1.5, None], "b": 1},  # key order does not matter
                     np.arange(6, dtype=np.int32).reshape(2, 3))
    assert here == other and len(here) == 64
    assert digest_of("x", length=16) == digest_of("x")[:16]


def test_json_parts_count_in_order_and_with_their_boundaries() -> None:
    assert digest_of("a", "b") != digest_of("b", "a")
    assert digest_of("ab", "c") != digest_of("a", "bc")
    assert digest_of(["a", "b"]) != digest_of("a", "b")
    assert len({digest_of(1), digest_of(1.0), digest_of("1")}) == 3
    assert digest_of(Path("a/b")) == digest_of("a/b")
    with pytest.raises(TypeError, match="cannot digest a object"):
        digest_of(object())


def test_array_digests_follow_dtype_shape_and_bytes() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    base = digest_of(a)
    assert digest_of(a.copy()) == base
    assert digest_of(np.asfortranarray(a)) == base  # memory layout is not content
    assert digest_of(a.reshape(4, 3)) != base  # same bytes, another shape
    assert digest_of(a.astype(np.int32)) != base
    assert digest_of(a.view(np.int32)) != base  # same bytes, another dtype
    assert digest_of(a.astype(">f4")) != base  # another byte order
    b = a.copy()
    b[2, 3] = np.nextafter(b[2, 3], np.float32(100))
    assert digest_of(b) != base
    assert digest_of(a[:, ::2]) == digest_of(np.ascontiguousarray(a[:, ::2]))  # a view
    assert digest_of(a, None) != digest_of(a)
    with pytest.raises(TypeError, match="object array"):
        digest_of(np.array([None, 1], dtype=object))


def test_a_digest_of_a_file_follows_its_bytes_not_its_name(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"weights")
    (tmp_path / "b.bin").write_bytes(b"weights")
    (tmp_path / "c.bin").write_bytes(b"weighty")
    d = [Digest().update("w").file(tmp_path / n).hexdigest() for n in ("a.bin", "b.bin", "c.bin")]
    assert d[0] == d[1] != d[2]
    assert sha256_file(tmp_path / "a.bin") == hashlib.sha256(b"weights").hexdigest()
