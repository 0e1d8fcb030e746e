"""The tables and summaries the ``edgekd`` command line prints (rich). Printing happens
here and in :mod:`edgekd.cli.commands` only. Numbers go through :mod:`edgekd.report.format`,
so a value prints here as it reads in ``report.md`` and ``report.html``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgekd.report import format as fmt

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_bench(r: dict[str, Any]) -> None:
    """One ``edgekd bench`` result: where it ran, latency percentiles, memory, placement."""
    lat, mem, dev = r["latency_ms"], r["memory"], r["device"]
    where = f" on {r['remote']}" if r.get("remote") else ""
    console.print(f"[bold]{r['artifact']}[/] — {r['runtime']} "
                  f"{fmt.version(r['runtime_version'])}{where}, "
                  f"{dev.get('model') or dev['cpu']} ({dev['machine']}), {r['threads']} "
                  f"thread(s), batch {r['batch']}, {r['runs']} runs after {r['warmup']} warm-up")
    keys = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
    # Eight columns of ms at four significant digits fit an 80-column terminal; the median's
    # interval goes on the line below.
    t = Table(*keys, title="latency, ms", box=box.SIMPLE)
    t.add_row(*(fmt.ms(lat[k]) for k in keys))
    console.print(t)
    console.print(f"p50 95 % CI {fmt.ms_range(lat['p50_ci95'])} ms; "
                  f"load {fmt.ms(r['load_ms'])} ms, first inference "
                  f"{fmt.ms(r['first_inference_ms'])} ms; peak RSS {fmt.mib(mem['peak_rss_mb'])} "
                  f"MiB, model + runtime {fmt.mib(mem['model_rss_mb'])} MiB over an empty "
                  f"interpreter's {fmt.mib(mem['baseline_rss_mb'])} MiB; file "
                  f"{fmt.kib(r['file_size_bytes'])} KiB")
    p = r.get("placement") or {}
    if p.get("not_as_intended"):
        console.print("[yellow]not as intended:[/] " + ", ".join(
            f"{n['op']} {n['node']} ({n['ran']})" for n in p["not_as_intended"]))
    elif "nodes" in p:
        console.print(f"placement: all {p['nodes']} nodes as intended "
                      f"({'INT8' if p['quantized'] else 'float'} model)")
    console.print()


def print_checks(checks: list[dict[str, Any]], source: str) -> None:
    """The budget table of ``edgekd check`` and ``build --check``, and the verdict."""
    table = Table("budget", "artifact", "measured", "limit", "margin", "",
                  title=f"Budgets ({escape(source)})", box=box.SIMPLE)
    table.columns[1].overflow = "fold"
    for c in checks:
        mark = "[green]ok[/]" if c["ok"] else "[bold red]BROKEN[/]"
        table.add_row(c["budget"], c["subject"], f"{fmt.number(c['measured'])} {c['unit']}",
                      f"{fmt.limit(c['limit'])} {c['unit']}", fmt.signed(c["margin"]), mark)
    console.print(table)
    broken = sum(not c["ok"] for c in checks)
    console.print(f"[bold red]{broken} of {len(checks)} budgets broken[/]" if broken
                  else f"[green]all {len(checks)} budgets hold[/]")


def _artifacts_table(report: dict[str, Any]) -> Table:
    classifier = report.get("task", "classification") == "classification"
    checks = ("acc.", "agree") if classifier else ("cos min", "max rel.")
    arts = Table("artifact", "KiB", *checks, "p50 ms", "p95 ms", "RSS MiB",
                 title="Artifacts, verified in their runtimes", box=box.SIMPLE)
    arts.columns[0].no_wrap = True
    for a in report["artifacts"]:
        cells = ((fmt.percent(a["accuracy"]), fmt.percent(a["top1_agreement"])) if classifier
                 else (fmt.cosine(a["cosine_min"]), fmt.error(a["max_rel_error"])))
        lat, mem = a.get("latency_ms") or {}, a.get("memory") or {}
        arts.add_row(a["path"], fmt.kib(a["size_bytes"]), *cells, fmt.ms(lat.get("p50")),
                     fmt.ms(lat.get("p95")), fmt.mib(mem.get("peak_rss_mb")))
        for r in a.get("remote", []):
            arts.add_row(f"  @ {r['remote']}", "", "", "", fmt.ms(r["latency_ms"]["p50"]),
                         fmt.ms(r["latency_ms"]["p95"]), fmt.mib(r["memory"]["peak_rss_mb"]))
    return arts


def print_summary(build_report: Mapping[str, Any], out_dir: Path) -> None:
    """What ``edgekd build`` prints at the end: models, artifacts, payoff, flags, where the
    reports are."""
    report = dict(build_report)
    stages = Table("stage", "params", "non-zero", "accuracy", title="Models", box=box.SIMPLE)
    for s in report["stages"]:
        stages.add_row(s["name"], fmt.count(s["params"]), fmt.count(s["nonzero_params"]),
                       fmt.percent(s["accuracy"]))
    if report["stages"]:
        console.print(stages)
    console.print(_artifacts_table(report))
    for row in report.get("payoff", []):
        mark = "[yellow]⚠[/] " if row["verdict"] == "slower" else "• "
        console.print(mark + escape(row["detail"]), soft_wrap=True)
    for flag in report.get("flags", []):
        if not flag.startswith("SLOWER"):
            console.print("[yellow]⚠[/] " + escape(flag), soft_wrap=True)
    for note in report.get("nulls", []):
        console.print(f"[yellow]⚠[/] {escape(note['field'])} written as null: "
                      f"{escape(note['why'])}", soft_wrap=True)
    s = report.get("summary", {})
    parts = []
    if "compression" in s:
        parts.append(f"student: {fmt.fold(s['compression'])} fewer parameters than the teacher")
    if "distillation_gain_points" in s:
        parts.append(f"distillation {fmt.points(s['distillation_gain_points'])} points vs "
                     "scratch")
    parts.append(f"built in {fmt.seconds(report['build_seconds'])}")
    console.print("; ".join(parts))
    console.print(f"reports: {out_dir / 'report.md'}, {out_dir / 'report.html'}, "
                  f"{out_dir / 'report.json'}, {out_dir / 'manifest.json'}")
