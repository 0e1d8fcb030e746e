"""The consoles the ``edgekd`` command line prints to (rich), and the tables and summaries
it prints there. Printing happens in :mod:`edgekd.cli` only: here, in the live progress of a
build (:mod:`.progress`) and in the commands. Numbers go through
:mod:`edgekd.report.format`, so a value prints here as it reads in ``report.md`` and
``report.html``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, ConsoleDimensions
from rich.markup import escape
from rich.table import Table

from edgekd.report import format as fmt

# Where output is not a terminal (a CI log, a pipe, a file) nothing is wrapped: a path or a
# step line stays whole on one line, and a table is as wide as its cells.
UNWRAPPED_WIDTH = 100_000


class _Console(Console):
    """rich's Console, as wide as its content when not writing to a terminal (rich would
    wrap at 80 columns there)."""

    @property  # type: ignore[override]
    def size(self) -> ConsoleDimensions:
        size = super().size
        return size if self.is_terminal else ConsoleDimensions(UNWRAPPED_WIDTH, size.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


console = _Console(highlight=False)
err_console = _Console(stderr=True, highlight=False)


def print_bench(r: dict[str, Any]) -> None:
    """One ``edgekd bench`` result: where it ran, latency percentiles, memory, placement."""
    lat, mem, dev = r["latency_ms"], r["memory"], r["device"]
    where = f" on {r['remote']}" if r.get("remote") else ""
    console.print(f"[bold]{r['artifact']}[/] — {r['runtime']} "
                  f"{fmt.version(r['runtime_version'])}{where}, "
                  f"{dev.get('model') or dev['cpu']} ({dev['machine']}), {r['threads']} "
                  f"thread(s), batch {r['batch']}, {r['runs']} runs after {r['warmup']} warm-up")
    keys = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
    # Eight latencies with their units fit an 80-column terminal; the median's interval goes
    # on the line below.
    t = Table(*keys, title="latency", box=box.SIMPLE)
    t.add_row(*(fmt.latency(lat[k]) for k in keys))
    console.print(t)
    console.print(f"p50 95 % CI {fmt.latency_range(lat['p50_ci95'])}; "
                  f"load {fmt.latency(r['load_ms'])}, first inference "
                  f"{fmt.latency(r['first_inference_ms'])}; peak RSS {fmt.mib(mem['peak_rss_mb'])} "
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


_MARKS = {"holds": "[green]ok[/]", "broken": "[bold red]BROKEN[/]",
          "not measured on the target": "[yellow]not on target[/]"}


def print_checks(checks: list[dict[str, Any]], source: str, require_device: bool = False
                 ) -> None:
    """The budget table of ``edgekd check`` and ``build --check``, and the verdict: a check
    measured on a machine that is not the target's is marked apart, neither ok nor broken
    (broken with ``require_device``)."""
    from edgekd.report.gate import OFF_TARGET, check_state, gate_fails, verdict

    table = Table("budget", "artifact", "measured", "limit", "margin", "measured on", "",
                  title=f"Budgets ({escape(source)})", box=box.SIMPLE)
    table.columns[1].overflow = table.columns[5].overflow = "fold"
    for c in checks:
        state = check_state(c)
        mark = ("[bold red]NOT ON TARGET[/]" if require_device and state == OFF_TARGET
                else _MARKS[state])
        table.add_row(c["budget"], escape(c["subject"]),
                      f"{fmt.number(c['measured'])} {c['unit']}",
                      f"{fmt.limit(c['limit'])} {c['unit']}", fmt.signed(c["margin"]),
                      escape(str(c.get("measured_on", ""))), mark)
    console.print(table)
    color = ("bold red" if gate_fails(checks, require_device) else
             "yellow" if any(check_state(c) == OFF_TARGET for c in checks) else "green")
    console.print(f"[{color}]{escape(verdict(checks, require_device))}[/]", soft_wrap=True)


def _numeric_cells(a: dict[str, Any]) -> tuple[str, str]:
    """A regression artifact's worst output: error over its range, and the worst cosine of
    the outputs large enough to have one."""
    outs = a.get("outputs") or []
    if not outs:
        return fmt.error(a.get("max_rel_error")), fmt.cosine(a.get("cosine_min"))
    errors = [o["rel_error"] for o in outs if o.get("rel_error") is not None]
    cosines = [o["cosine_min"] for o in outs if o.get("cosine_min") is not None]
    return (fmt.percent(max(errors)) if errors else "–",
            fmt.cosine(min(cosines)) if cosines else "–")


def _artifacts_table(report: dict[str, Any]) -> Table:
    classifier = report.get("task", "classification") == "classification"
    checks = ("acc.", "agree") if classifier else ("err/range", "cos min")
    arts = Table("artifact", "KiB", *checks, "p50", "p95", "RSS MiB",
                 title="Artifacts, verified in their runtimes", box=box.SIMPLE)
    arts.columns[0].no_wrap = True
    for a in report["artifacts"]:
        cells = ((fmt.percent(a["accuracy"]), fmt.percent(a["top1_agreement"])) if classifier
                 else _numeric_cells(a))
        lat, mem = a.get("latency_ms") or {}, a.get("memory") or {}
        arts.add_row(a["path"], fmt.kib(a["size_bytes"]), *cells,
                     fmt.latency(lat.get("p50")), fmt.latency(lat.get("p95")),
                     fmt.mib(mem.get("peak_rss_mb")))
        for r in a.get("remote", []):
            arts.add_row(f"  @ {r['remote']}", "", "", "", fmt.latency(r["latency_ms"]["p50"]),
                         fmt.latency(r["latency_ms"]["p95"]),
                         fmt.mib(r["memory"]["peak_rss_mb"]))
    return arts


def print_summary(build_report: Mapping[str, Any], out_dir: Path) -> None:
    """What ``edgekd build`` prints at the end: models, artifacts, payoff, flags, the
    headline (deployed student vs teacher, one line per runtime and machine), where the
    reports are."""
    report = dict(build_report)
    stages = Table("stage", "params", "non-zero", "accuracy", title="Models", box=box.SIMPLE)
    for s in report["stages"]:
        stages.add_row(s["name"], fmt.count(s["params"]), fmt.count(s["nonzero_params"]),
                       fmt.percent(s["accuracy"]))
    if report["stages"]:
        console.print(stages)
    for s in report["stages"]:
        if s.get("warning"):  # near chance: the one thing to read before the artifacts
            console.print("[yellow]⚠[/] " + escape(s["warning"]), soft_wrap=True)
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
    if report.get("budget"):
        from edgekd.report.gate import BROKEN, OFF_TARGET, check_state, verdict

        checks, source = report["budget"]["checks"], report["budget"]["source"]
        states = {check_state(c) for c in checks}
        mark = ("[bold red]✗[/]" if BROKEN in states else "[yellow]⚠[/]" if OFF_TARGET in states
                else "[green]✓[/]")
        console.print(f"{mark} budgets ({escape(source)}): {escape(verdict(checks))}",
                      soft_wrap=True)
    for row in (report.get("headline") or {}).get("rows", []):  # what the build bought
        console.print("[bold]vs teacher[/] " + escape(row["detail"]), soft_wrap=True)
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
