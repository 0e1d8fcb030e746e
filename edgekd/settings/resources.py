"""Where the files shipped with edgekd live: ``targets/`` and ``calibration/``.

They sit at the top of the repository and are packaged as ``edgekd._targets`` and
``edgekd._calibration`` (see pyproject.toml), so both a checkout and an installed wheel
find them through importlib.resources.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def targets_dir() -> Path:
    return Path(str(files("edgekd._targets")))


def calibration_dir() -> Path:
    return Path(str(files("edgekd._calibration")))


def default_calibration_file() -> Path:
    return calibration_dir() / "digits.npz"
