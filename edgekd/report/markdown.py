"""``report.md``: the build report as Markdown that reads well as a GitHub Actions step
summary."""

from __future__ import annotations

from typing import Any


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


def _robustness(report: dict[str, Any]) -> list[str]:
    """Accuracy per corruption and model, the distilled-minus-scratch gap, and the finding."""
    rob = report.get("robustness")
    if not rob:
        return []
    models = rob["models"]
    gap = any("distilled_minus_scratch_points" in c for c in rob["conditions"])
    lines = ["", "## Robustness: test accuracy under input corruptions", "",
             "| condition | " + " | ".join(f"`{m}`" if "." in m else m for m in models)
             + (" | distilled − scratch |" if gap else " |"),
             "|---|" + "---:|" * (len(models) + gap)]
    for c in rob["conditions"]:
        cells = [_pct(c["accuracy"][m]) for m in models]
        if gap:
            cells.append(f"{c['distilled_minus_scratch_points']:+.2f}")
        lines.append(f"| {c['name']} | " + " | ".join(cells) + " |")
    lines += ["", f"Corruptions on {rob['pixel_units']}; noise sigma in raw pixel units; "
              f"seed {rob['seed']}, {rob['samples']} test samples, the same corrupted inputs "
              "for every model; `.onnx`/`.xml`/`.tflite` columns are the shipped INT8 artifacts "
              "(the pruned student), run in their runtime."]
    if "summary" in rob:
        lines += ["", f"**{rob['summary']['finding']}**"]
    return lines


def _pruning(report: dict[str, Any]) -> list[str]:
    """Per-layer shapes and sparsity of the pruned student, and dense vs pruned FP32 files."""
    stage: dict[str, Any] = next(
        (s for s in report["stages"] if s["name"] == "student_pruned"), {})
    if "layers" not in stage:
        return []
    lines = [f"## Pruning: {stage['method']}, {stage['schedule']}, target "
             f"{stage['target_sparsity']:.0%} of "
             f"{'channels' if stage['method'] == 'structured' else 'weights'}", "",
             "| layer | type | weight shape before → after | zero |", "|---|---|---|---:|"]
    lines += [f"| `{r['layer']}` | {r['type']} | {'×'.join(map(str, r['before']))} → "
              f"{'×'.join(map(str, r['after']))} | {r['zero_fraction']:.1%} |"
              for r in stage["layers"]]
    lines.append("")
    pruned = {a["runtime"]: a for a in report["artifacts"] if a["precision"] == "fp32"}
    speed = {r["runtime"]: r for r in report.get("payoff", [])
             if r["step"] == "pruning" and r["where"] == "host"}
    for dense in report.get("references", []):
        a = pruned.get(dense["runtime"])
        if not a or "latency_ms" not in a or "latency_ms" not in dense:
            continue
        verdict = speed.get(dense["runtime"], {}).get("verdict", "not compared")
        lines.append(
            f"- {dense['runtime']}: `reference/{dense['path']}` → `{a['path']}`: file "
            f"{dense['size_bytes'] / 1024:.1f} → {a['size_bytes'] / 1024:.1f} KiB, gzip "
            f"{dense['size_gzip_bytes'] / 1024:.1f} → {a['size_gzip_bytes'] / 1024:.1f} KiB, "
            f"p50 {dense['latency_ms']['p50']:.4g} → {a['latency_ms']['p50']:.4g} ms ({verdict})")
    if stage["method"] == "unstructured":
        lines.append("\n**Unstructured sparsity gives no speed-up on ONNX Runtime, OpenVINO or "
                     "LiteRT**: the zeroed weights keep their dense shapes and run through the "
                     "same dense kernels; what it buys is a smaller compressed (gzip) file. "
                     "A latency difference measured between these same-shaped files comes "
                     "from the machine, not from pruning. `prune.method = \"structured\"` removes "
                     "channels instead.")
    else:
        lines.append(f"\nChannels were removed: {stage['macs_before']:,} → "
                     f"{stage['macs_after']:,} multiply-adds per sample.")
    return [*lines, ""]


def _quantization(report: dict[str, Any]) -> list[str]:
    q = report.get("quantization")
    if not q:
        return []
    lines = ["## Quantization", "",
             f"Static INT8 (ONNX Runtime's tools, QDQ), calibration `{q['method']}`."]
    if q.get("fp32_accuracy") is not None:
        lines.append(f"On the calibration split: FP32 {_pct(q['fp32_accuracy'])}, INT8 "
                     f"{_pct(q['int8_accuracy'])}.")
    for i, step in enumerate(q.get("steps", [])[1:], 1):
        lines.append(f"- step {i}: kept in float {', '.join(step['float_layers'])} -> "
                     f"{_pct(step['accuracy'])}")
    if q.get("float_layers"):
        lines.append(f"Kept in float to stay within the accuracy budget: "
                     f"{', '.join(q['float_layers'])}.")
    return [*lines, ""]


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
    if not stages:
        lines.append(f"| (finished model: {report.get('model', {}).get('onnx', 'ONNX')}) "
                     "| | | |")
    summary = report.get("summary", {})
    lines.append("")
    if "compression" in summary:
        lines.append(f"- Compression: the student has **{summary['compression']:.1f}× fewer "
                     "parameters** than the teacher.")
    if "distillation_gain_points" in summary:
        lines.append(f"- Distillation: {_pct(summary['distilled_accuracy'])} vs "
                     f"{_pct(summary['scratch_accuracy'])} from scratch "
                     f"(**{summary['distillation_gain_points']:+.2f} points**).")
    lines += [
        "",
        "## Artifacts",
        "",
        "Each artifact is compared with the model it came from on the whole test split: top-1 "
        "agreement for classifiers; for every model the worst sample's cosine similarity and "
        "relative error (‖Δ‖ / ‖reference‖).",
        "",
        "| file | runtime | precision | size KiB | gzip KiB | accuracy | agreement | "
        "min cosine | max rel. error | max abs Δ |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in report["artifacts"]:
        lines.append(
            f"| `{a['path']}` | {a['runtime']} {_version(a['runtime_version'])} | "
            f"{a['precision']} | {a['size_bytes'] / 1024:.1f} | "
            f"{a.get('size_gzip_bytes', 0) / 1024:.1f} | {_pct(a['accuracy'])} | "
            f"{_pct(a['top1_agreement'])} | {a.get('cosine_min', float('nan')):.5f} | "
            f"{a.get('max_rel_error', float('nan')):.3g} | {a['max_abs_diff']:.3g} |")
    lines += _quantization(report)
    lines += _robustness(report)
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
    lines += _pruning(report)
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


