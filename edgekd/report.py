"""Build outputs that people and CI read: ``report.json``, ``report.md``, ``manifest.json``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_files(path: Path) -> list[Path]:
    """The files that make up an artifact (an OpenVINO IR is its .xml and its .bin)."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def render_markdown(report: dict[str, Any]) -> str:
    stages = report["stages"]
    lines = [
        f"# edgekd build: `{report['target']}`",
        "",
        f"{report['target_description']}",
        "",
        f"Data: {report['dataset']['name']} — train {report['dataset']['splits']['train']}, "
        f"test {report['dataset']['splits']['test']}, calibration "
        f"{report['dataset']['splits']['calibration']} (seed {report['dataset']['seed']}). "
        f"Input `{report['input']['shape']}` {report['input']['dtype']}, "
        f"`{report['input']['preprocessing']['formula']}`.",
        "",
        "## Models",
        "",
        "| stage | params | non-zero | test accuracy |",
        "|---|---:|---:|---:|",
    ]
    for s in stages:
        lines.append(f"| {s['name']} | {s['params']:,} | {s['nonzero_params']:,} | "
                     f"{_pct(s['accuracy'])} |")
    summary = report["summary"]
    lines += [
        "",
        f"- Compression: the student has **{summary['compression']:.1f}× fewer parameters** "
        f"than the teacher.",
        f"- Distillation: {_pct(summary['distilled_accuracy'])} vs "
        f"{_pct(summary['scratch_accuracy'])} from scratch "
        f"(**{summary['distillation_gain_points']:+.2f} points**).",
        "",
        "## Artifacts",
        "",
        "| file | runtime | precision | size | accuracy | agreement | p50 ms | p90 ms | "
        "p99 ms | mean ms | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in report["artifacts"]:
        lat = a["latency_ms"]
        lines.append(
            f"| `{a['path']}` | {a['runtime']} | {a['precision']} | "
            f"{a['size_bytes'] / 1024:.1f} KiB | {_pct(a['accuracy'])} | "
            f"{_pct(a['top1_agreement'])} | {lat['p50']:.4f} | {lat['p90']:.4f} | "
            f"{lat['p99']:.4f} | {lat['mean']:.4f} | {a['peak_rss_mb']:.1f} |")
    lines += [
        "",
        "Latency: batch 1, one process per artifact, "
        f"{report['bench']['warmup']} warm-up runs then {report['bench']['runs']} timed runs, "
        f"{report['bench']['threads']} thread(s) (target asks for "
        f"{report['bench']['target_threads']}). Peak RSS: high-water mark of that process "
        "(Python + runtime + model). Agreement: top-1 agreement with the PyTorch model the "
        "artifact was made from, on the whole test split.",
        "",
        f"Built in {report['build_seconds']:.1f} s on {report['host']['machine']} "
        f"({report['host']['cpus']} CPUs).",
        "",
    ]
    return "\n".join(lines)
