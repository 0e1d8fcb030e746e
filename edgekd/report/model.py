"""Build outputs that people and CI read: ``report.json``, ``report.md``, ``manifest.json``."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import edgekd
from edgekd.common.cache import sha256_file
from edgekd.report.versions import versions

if TYPE_CHECKING:
    from edgekd.inputs.dataset import Dataset
    from edgekd.settings.config import BuildConfig
    from edgekd.settings.project import Project
    from edgekd.settings.targets import Target


def artifact_files(path: Path) -> list[Path]:
    """The files that make up an artifact (an OpenVINO IR is its .xml and its .bin)."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def gzip_size(files: list[Path]) -> int:
    """Bytes after gzip -9: what pruning's zeros save in a download or an OTA update."""
    return sum(len(gzip.compress(f.read_bytes(), compresslevel=9, mtime=0)) for f in files)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _summary(stages: list[dict[str, Any]]) -> dict[str, Any]:
    by_name = {s["name"]: s for s in stages}
    out: dict[str, Any] = {}
    last = stages[-1] if stages else None
    if "teacher" in by_name and last is not None:
        out["compression"] = round(by_name["teacher"]["params"] / last["params"], 2)
    scratch, kd = by_name.get("student_scratch"), by_name.get("student_distilled")
    if scratch and kd and scratch["accuracy"] is not None and kd["accuracy"] is not None:
        out |= {"scratch_accuracy": scratch["accuracy"], "distilled_accuracy": kd["accuracy"],
                "distillation_gain_points": round(100 * (kd["accuracy"] - scratch["accuracy"]),
                                                  2)}
    return out


def build_report(target: Target, data: Dataset, config: BuildConfig, stages: list[dict[str, Any]],
                 artifacts: list[dict[str, Any]], threads: int, seconds: float, *,
                 output_shape: list[int] | None = None) -> dict[str, Any]:
    prep = data.preprocessing
    return {
        "edgekd_version": edgekd.__version__,
        "target": target.name,
        "target_description": target.description,
        "input": {
            "name": "input", "shape": list(data.input_shape), "dtype": "float32",
            "layout": prep.layout,
            "preprocessing": {
                "raw": prep.raw, "scale": prep.scale, "mean": prep.mean, "std": prep.std,
                "formula": "x = (raw * scale - mean) / std",
            },
            "output": {"name": "logits" if data.num_classes else "output",
                       "shape": output_shape or [1, data.num_classes], "dtype": "float32"},
        },
        "dataset": data.summary(),
        "stages": stages,
        "summary": _summary(stages),
        "artifacts": artifacts,
        "bench": {"warmup": config.bench.warmup, "runs": config.bench.runs,
                  "seconds": config.bench.seconds, "batch": 1, "threads": threads,
                  "target_threads": target.threads},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "processor": platform.processor() or platform.machine()},
        "build_seconds": round(seconds, 2),
    }


def build_manifest(target: Target, data: Dataset, project: Project, stage: Path,
                   artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything needed to reproduce the build: versions, seeds, the full settings, where
    the data came from with a fingerprint of each split, and the sha256 of every file."""
    files = {f: sha256_file(stage / f) for a in artifacts for f in a["files"]}
    if (stage / "student.safetensors").is_file():
        files["student.safetensors"] = sha256_file(stage / "student.safetensors")
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
        "input_example_sha256": hashlib.sha256(data.test.x[:1].tobytes()).hexdigest(),
    }
