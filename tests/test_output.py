from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgekd import UsageError
from edgekd.report.staging import build_lock, check_replaceable, staged_dir


def _earlier_build(final: Path) -> Path:
    """What an earlier edgekd build leaves: its manifest says edgekd wrote it."""
    final.mkdir(parents=True)
    (final / "manifest.json").write_text(json.dumps({"edgekd_version": "0.1.0", "sha256": {}}))
    return final


def test_success_replaces_an_earlier_build_whole(tmp_path: Path) -> None:
    final = _earlier_build(tmp_path / "raspberrypi")
    (final / "old.txt").write_text("old")
    with staged_dir(final) as stage:
        (stage / "new.txt").write_text("new")
        assert not (final / "new.txt").exists()  # nothing visible until the end
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["raspberrypi"]


def test_an_empty_folder_is_replaced(tmp_path: Path) -> None:
    final = tmp_path / "raspberrypi"
    final.mkdir()
    with staged_dir(final) as stage:
        (stage / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]


def test_failure_keeps_the_earlier_build_and_leaves_nothing(tmp_path: Path) -> None:
    final = _earlier_build(tmp_path / "raspberrypi")
    (final / "model.onnx").write_text("good")
    with pytest.raises(RuntimeError), staged_dir(final) as stage:
        (stage / "half.onnx").write_bytes(b"half")
        raise RuntimeError("verification failed")
    assert (final / "model.onnx").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["raspberrypi"]


def _refused(final: Path) -> str:
    with pytest.raises(UsageError) as info:
        check_replaceable(final)
    return str(info.value)


def test_what_is_not_an_edgekd_build_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    assert _refused(mine) == (f"{mine} exists and is not an edgekd build (no manifest.json): "
                              "move it away or choose another --out")
    (mine / "manifest.json").write_text('{"name": "my app"}')  # someone else's manifest
    assert "(its manifest.json is not edgekd's)" in _refused(mine)
    (mine / "manifest.json").write_text("not json")
    assert "(its manifest.json is not edgekd's)" in _refused(mine)
    (mine / "manifest.json").unlink()
    os.mkfifo(mine / "manifest.json")  # read without blocking: refused, no hang
    assert "(its manifest.json is not a file edgekd wrote)" in _refused(mine)
    a_file = tmp_path / "flash.sh"
    a_file.write_text("#!/bin/sh\n")
    assert "(it is a file, not a folder)" in _refused(a_file)
    link = tmp_path / "link"
    link.symlink_to(_earlier_build(tmp_path / "elsewhere"))
    assert _refused(link) == (f"{link} is a symbolic link, not an edgekd build folder: remove "
                              "the link or choose another --out")
    check_replaceable(tmp_path / "nothing-there")
    check_replaceable(tmp_path / "elsewhere")


def test_something_put_there_during_the_build_is_kept(tmp_path: Path) -> None:
    final = tmp_path / "raspberrypi"
    with pytest.raises(UsageError, match="not an edgekd build"), staged_dir(final) as stage:
        (stage / "model.onnx").write_text("new")
        final.mkdir()
        (final / "notes.txt").write_text("mine")
    assert [p.name for p in final.iterdir()] == ["notes.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["raspberrypi"]


def test_an_earlier_build_a_killed_swap_set_aside_comes_back(tmp_path: Path) -> None:
    final = tmp_path / "raspberrypi"
    _earlier_build(tmp_path / ".raspberrypi.old-12345")  # killed between the two renames
    not_ours = tmp_path / ".raspberrypi.old-999"
    not_ours.mkdir()
    (not_ours / "x").write_text("x")
    with build_lock(final):
        assert (final / "manifest.json").is_file()
    assert not (tmp_path / ".raspberrypi.old-12345").exists()
    assert (not_ours / "x").read_text() == "x"  # only what edgekd made is ever touched


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_is_a_usage_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="not writable"), staged_dir(tmp_path / "t"):
            pass
    finally:
        tmp_path.chmod(0o700)


def test_output_under_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="cannot create output folder"), \
            staged_dir(tmp_path / "file" / "sub" / "t"):
        pass
