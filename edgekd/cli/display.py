"""The tables and summaries the ``edgekd`` command line prints (rich). Printing happens
here and in :mod:`edgekd.cli.commands` only."""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_bench(r: dict) -> None:
    lat, mem, dev = r["latency_ms"], r["memory"], r["device"]
    where = f" on {r['remote']}" if r.get("remote") else ""
    console.print(f"[bold]{r['artifact']}[/] — {r['runtime']} {r['runtime_version']}{where}, "
                  f"{dev.get('model') or dev['cpu']} ({dev['machine']}), {r['threads']} "
                  f"thread(s), batch {r['batch']}, {r['runs']} runs after {r['warmup']} warm-up")
    unit, scale = ("µs", 1000.0) if lat["p50"] < 1 else ("ms", 1.0)
    keys = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
    t = Table(*keys, "p50 95% CI", title=f"latency, {unit}", box=box.SIMPLE)
    lo, hi = lat["p50_ci95"]
    t.add_row(*(f"{lat[k] * scale:.3g}" for k in keys), f"{lo * scale:.3g}–{hi * scale:.3g}")
    console.print(t)
    console.print(f"load {r['load_ms']:.1f} ms, first inference {r['first_inference_ms']:.3f} "
                  f"ms; peak RSS {mem['peak_rss_mb']:.1f} MiB, model + runtime "
                  f"{mem['model_rss_mb']:.1f} MiB over an empty interpreter's "
                  f"{mem['baseline_rss_mb']:.1f} MiB; file {r['file_size_bytes'] / 1024:.1f} KiB")
    p = r.get("placement") or {}
    if p.get("not_as_intended"):
        console.print("[yellow]not as intended:[/] " + ", ".join(
            f"{n['op']} {n['node']} ({n['ran']})" for n in p["not_as_intended"]))
    elif "nodes" in p:
        console.print(f"placement: all {p['nodes']} nodes as intended "
                      f"({'INT8' if p['quantized'] else 'float'} model)")
    console.print()


def print_checks(checks: list[dict], source: str) -> None:
    table = Table("budget", "artifact", "measured", "limit", "margin", "",
                  title=f"Budgets ({escape(source)})", box=box.SIMPLE)
    table.columns[1].overflow = "fold"
    for c in checks:
        mark = "[green]ok[/]" if c["ok"] else "[bold red]BROKEN[/]"
        table.add_row(c["budget"], c["subject"], f"{c['measured']:.4g} {c['unit']}",
                      f"{c['limit']:g} {c['unit']}", f"{c['margin']:+.4g}", mark)
    console.print(table)
    broken = sum(not c["ok"] for c in checks)
    console.print(f"[bold red]{broken} of {len(checks)} budgets broken[/]" if broken
                  else f"[green]all {len(checks)} budgets hold[/]")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.2%}"


def print_summary(report: dict, out_dir: Path) -> None:
    stages = Table("stage", "params", "non-zero", "accuracy", title="Models", box=box.SIMPLE)
    for s in report["stages"]:
        stages.add_row(s["name"], f"{s['params']:,}", f"{s['nonzero_params']:,}",
                       _pct(s["accuracy"]))
    if report["stages"]:
        console.print(stages)
    classifier = report.get("task", "classification") == "classification"
    checks = ("acc.", "agree") if classifier else ("cos min", "max rel.")
    arts = Table("artifact", "KiB", *checks, "p50 ms", "p95 ms", "RSS MB",
                 title="Artifacts, verified in their runtimes", box=box.SIMPLE)
    arts.columns[0].no_wrap = True
    for a in report["artifacts"]:
        cells = ((_pct(a["accuracy"]), _pct(a["top1_agreement"])) if classifier
                 else (f"{a['cosine_min']:.5f}", f"{a['max_rel_error']:.2g}"))
        arts.add_row(a["path"], f"{a['size_bytes'] / 1024:.1f}", *cells,
                     f"{a['latency_ms']['p50']:.4f}", f"{a['latency_ms']['p95']:.4f}",
                     f"{a['memory']['peak_rss_mb']:.0f}")
        for r in a.get("remote", []):
            arts.add_row(f"  @ {r['remote']}", "", "", "", f"{r['latency_ms']['p50']:.4f}",
                         f"{r['latency_ms']['p95']:.4f}", f"{r['memory']['peak_rss_mb']:.0f}")
    console.print(arts)
    for row in report.get("payoff", []):
        mark = "[yellow]⚠[/] " if row["verdict"] == "slower" else "• "
        console.print(mark + escape(row["detail"]), soft_wrap=True)
    for flag in report.get("flags", []):
        if not flag.startswith("SLOWER"):
            console.print("[yellow]⚠[/] " + escape(flag), soft_wrap=True)
    s = report.get("summary", {})
    parts = []
    if "compression" in s:
        parts.append(f"student: {s['compression']:.1f}× fewer parameters than the teacher")
    if "distillation_gain_points" in s:
        parts.append(f"distillation {s['distillation_gain_points']:+.2f} points vs scratch")
    parts.append(f"built in {report['build_seconds']:.0f} s")
    console.print("; ".join(parts))
    console.print(f"reports: {out_dir / 'report.md'}, {out_dir / 'report.html'}, "
                  f"{out_dir / 'report.json'}, {out_dir / 'manifest.json'}")
