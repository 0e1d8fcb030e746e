"""The README's walkthrough for your own project, run exactly as written, on a copy of
examples/digits-images: write the data, `edgekd build --check`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits-images"


@pytest.mark.slow
def test_readme_walkthrough_builds_the_example_project(tmp_path: Path) -> None:
    work = tmp_path / "digits-images"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("data", "build"))
    for cmd in ([sys.executable, "make_data.py"],
                [sys.executable, "-m", "edgekd", "build", "--check"]):
        done = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((work / "build" / "raspberrypi" / "report.json").read_text())
    assert report["dataset"]["sources"] == {"train": "data/train", "test": "data/test",
                                            "calibration": "data/calibration"}
    assert report["input"]["shape"] == [1, 1, 16, 16]
    assert report["budget"]["source"].endswith("edgekd.toml")
    assert all(c["ok"] for c in report["budget"]["checks"])
    assert report["summary"]["compression"] > 20
    for a in report["artifacts"]:
        assert a["accuracy"] > 0.9 and a["top1_agreement"] > 0.98
