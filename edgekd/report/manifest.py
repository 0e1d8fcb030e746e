"""What identifies a build's files: the artifacts' files on disk, their gzip size, and
``manifest.json`` (versions, seeds, settings, data fingerprints, sha256 of every file)."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edgekd
from edgekd.common.cache import sha256_file
from edgekd.report.versions import versions

if TYPE_CHECKING:
    from edgekd.inputs.dataset import Dataset
    from edgekd.settings.project import Project
    from edgekd.settings.targets import Target


def artifact_files(path: Path) -> list[Path]:
    """The files that make up an artifact (an OpenVINO IR is its .xml and its .bin)."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def gzip_size(files: list[Path]) -> int:
    """Bytes after gzip -9: what pruning's zeros save in a download or an OTA update."""
    return sum(len(gzip.compress(f.read_bytes(), compresslevel=9, mtime=0)) for f in files)


def build_manifest(target: Target, data: Dataset, project: Project, stage: Path,
                   artifacts: list[dict[str, Any]], package: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """Everything needed to reproduce the build: versions, seeds, the full settings, where
    the data came from with a fingerprint of each split, and the sha256 of every file.
    ``package``: the deploy files beside the artifacts (``run_<runtime>.py``, README.md)."""
    files = {f: sha256_file(stage / f) for a in artifacts for f in a["files"]}
    if (stage / "student.safetensors").is_file():
        files["student.safetensors"] = sha256_file(stage / "student.safetensors")
    files |= {f: sha256_file(stage / f) for f in package}
    config = project.build
    return {
        "edgekd_version": edgekd.__version__,
        "versions": versions(),
        "seeds": {"build": config.seed, "calibration_sample": data.seed},
        "config": config.to_dict(),
        "project": project.to_dict(),
        "target": asdict(target),
        "dataset": data.summary(),
        "sha256": files,
        "package": list(package),
        "input_example_sha256": hashlib.sha256(data.test.x[:1].tobytes()).hexdigest(),
    }
