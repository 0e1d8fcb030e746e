from __future__ import annotations

import os
from pathlib import Path

import pytest

from edgekd import UsageError
from edgekd.report.staging import staged_dir


def test_success_replaces_the_folder_whole(tmp_path: Path) -> None:
    final = tmp_path / "raspberrypi"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with staged_dir(final) as stage:
        (stage / "new.txt").write_text("new")
        assert not (final / "new.txt").exists()  # nothing visible until the end
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["raspberrypi"]


def test_failure_keeps_the_earlier_build_and_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "raspberrypi"
    final.mkdir()
    (final / "report.json").write_text("good")
    with pytest.raises(RuntimeError), staged_dir(final) as stage:
        (stage / "half.onnx").write_bytes(b"half")
        raise RuntimeError("verification failed")
    assert (final / "report.json").read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["raspberrypi"]


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
