"""Build outputs that people and CI read: ``report.json``, ``report.md``, ``manifest.json``."""

from __future__ import annotations

import gzip
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


def gzip_size(files: list[Path]) -> int:
    """Bytes after gzip -9: what pruning's zeros save in a download or an OTA update."""
    return sum(len(gzip.compress(f.read_bytes(), compresslevel=9, mtime=0)) for f in files)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def _version(v: str) -> str:
    """"2026.4.1-22982-e213a147257-releases/2026/4" -> "2026.4.1"; others unchanged."""
    return v.split("-")[0] if v[:1].isdigit() else v


def _ms(v: float) -> str:
    return f"{v:.4g}"


def _latency_rows(name: str, where: str, m: dict[str, Any], size: int) -> str:
    lat, mem = m["latency_ms"], m["memory"]
    lo, hi = lat["p50_ci95"]
    return (f"| `{name}` | {where} | {m.get('threads', '')} | {_ms(lat['p50'])} "
            f"({_ms(lo)}–{_ms(hi)}) | {_ms(lat['p95'])} | {_ms(lat['p99'])} | "
            f"{_ms(lat['mean'])} ± {_ms(lat['std'])} | {mem['peak_rss_mb']:.1f} | "
            f"{mem['model_rss_mb']:.1f} | {size / 1024:.1f} |")


def render_markdown(report: dict[str, Any]) -> str:
    """The build report as Markdown that reads well as a GitHub Actions step summary."""
    stages = report["stages"]
    lines = [f"# edgekd build: `{report['target']}`", "", f"{report['target_description']}", ""]
    budget = report.get("budget")
    if budget:
        broken = [c for c in budget["checks"] if not c["ok"]]
        lines += [f"**Budgets: {'❌ ' + str(len(broken)) + ' broken' if broken else '✅ all hold'}"
                  f"** ({len(budget['checks'])} checks, {budget['source']})", ""]
    for flag in report.get("flags", []):
        lines.append(f"> ⚠️ {flag}")
    if report.get("flags"):
        lines.append("")
    lines += [
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
        "| file | runtime | precision | size KiB | gzip KiB | accuracy | agreement | "
        "max abs Δ |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for a in report["artifacts"]:
        lines.append(
            f"| `{a['path']}` | {a['runtime']} {_version(a['runtime_version'])} | "
            f"{a['precision']} | {a['size_bytes'] / 1024:.1f} | "
            f"{a.get('size_gzip_bytes', 0) / 1024:.1f} | {_pct(a['accuracy'])} | "
            f"{_pct(a['top1_agreement'])} | {a['max_abs_diff']:.3g} |")
    lines += ["", "## Latency (ms) and memory (MiB)", "",
              "| file | where | threads | p50 (95 % CI) | p95 | p99 | mean ± std | peak RSS | "
              "model RSS | file KiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in report["artifacts"] + report.get("references", []):
        if "latency_ms" in a:
            lines.append(_latency_rows(a["path"], "this host", a, a["size_bytes"]))
        for r in a.get("remote", []):
            dev = r.get("device", {})
            where = f"{r['remote']} ({dev.get('model') or dev.get('cpu', '?')})"
            lines.append(_latency_rows(a["path"], where, r, a["size_bytes"]))
    b = report["bench"]
    lines += [
        "",
        f"Each artifact in its own process: {b['warmup']} warm-up runs, then at least "
        f"{b['runs']} timed runs and {b.get('seconds', 0):g} s; batch {b['batch']}; "
        f"{b['threads']} thread(s) here (the target asks for {b['target_threads']}; remote "
        "devices use the target's count). Timed: one inference call with inputs already "
        "bound. **peak RSS**: the process's high-water mark (Python + NumPy + runtime + "
        "model). **model RSS**: resident memory after importing the runtime, loading the "
        "model and one inference, minus the empty interpreter's (runtime libraries + model "
        "+ arena). `reference/dense_fp32.*` is the distilled student before pruning.",
        "",
    ]
    if report.get("payoff"):
        lines += ["## Does each step pay off?", ""]
        lines += [f"- {'⚠️ ' if r['verdict'] == 'slower' else ''}{r['detail']}"
                  for r in report["payoff"]]
        lines.append("")
    lines += ["## What ran where", ""]
    for a in report["artifacts"]:
        p = a.get("placement") or {}
        off = p.get("not_as_intended") or []
        if "error" in p:
            lines.append(f"- `{a['path']}`: could not inspect ({p['error']})")
        elif off:
            lines.append(f"- `{a['path']}`: {len(off)} of {p['nodes']} node(s) not as intended: "
                         + ", ".join(f"{n['op']} `{n['node']}` ({n['ran']})" for n in off[:12]))
        elif p:
            lines.append(f"- `{a['path']}`: all {p['nodes']} node(s) as intended "
                         f"({'INT8' if p['quantized'] else 'float'}; {p['how']})")
    lines.append("")
    if budget:
        lines += ["## Budgets", "", "| budget | artifact | measured | limit | margin | |",
                  "|---|---|---:|---:|---:|---|"]
        lines += [f"| {c['budget']} | `{c['subject']}` | {c['measured']:.4g} {c['unit']} | "
                  f"{c['limit']:g} | {c['margin']:+.4g} | {'✅' if c['ok'] else '❌'} |"
                  for c in budget["checks"]]
        lines.append("")
    lines += [f"Built in {report['build_seconds']:.1f} s on {report['host']['machine']} "
              f"({report['host']['cpus']} CPUs).", ""]
    return "\n".join(lines)
