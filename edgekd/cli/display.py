"""The tables and summaries the ``edgekd`` command line prints (rich). Printing happens
here and in :mod:`edgekd.cli.commands` only. Numbers go through :mod:`edgekd.report.format`,
so a value prints here as it reads in ``report.md`` and ``report.html``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from edgekd.report import format as fmt

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


# Loggers of the libraries a build imports (converters, runtimes, their dependencies): their
# warnings at import ("Failed to load ..._C_mxfp8.so", "no triton", a torch deprecation)
# are about optional kernels edgekd never uses, and read like a broken install. They are
# shown with --debug only; edgekd's own warnings (and any error) always are.
THIRD_PARTY = ("torch", "torchao", "absl", "jax", "litert_torch", "ai_edge_litert",
               "onnxscript", "onnx_ir", "transformers", "openvino", "root")


class _EdgekdOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("edgekd") or record.levelno >= logging.ERROR


def setup_logging(debug: bool) -> None:
    """Warnings of edgekd to stderr (everything with ``debug``); third-party warnings only
    with ``debug``."""
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if debug:
        return
    for handler in logging.getLogger().handlers:
        handler.addFilter(_EdgekdOnly())
    for name in THIRD_PARTY:  # libraries that attach handlers of their own (torch does)
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)


class Epoch(Protocol):
    """What a training stage reports after each epoch (edgekd.train.loop.EpochReport)."""

    @property
    def epoch(self) -> int: ...
    @property
    def epochs(self) -> int: ...
    @property
    def loss(self) -> float: ...
    @property
    def accuracy(self) -> float | None: ...  # on the training batches, not the test split
    @property
    def seconds(self) -> float: ...  # since the stage started training


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


class BuildProgress:
    """What ``edgekd build`` shows while it runs: a spinner naming the last finished step, a
    line per finished step and, while a stage trains, a bar with its epoch, training loss,
    training accuracy and the time left.

    ``quiet``: nothing but the summary at the end. The spinner and the bar are live terminal
    displays: where stdout or stderr is not a terminal (a log file, CI) they are not drawn
    and only the step lines are printed, one per stage."""

    def __init__(self, target: str, *, quiet: bool = False) -> None:
        self.target, self.quiet = target, quiet
        self.live = not quiet and console.is_terminal and err_console.is_terminal
        self.status = console.status(self._title(), spinner="dots")
        self._logs: list[tuple[logging.StreamHandler, object]] = []  # type: ignore[type-arg]

    def _title(self, done: str | None = None) -> str:
        return f"building for [bold]{escape(self.target)}[/] …" + (
            f" (done: {escape(done)})" if done else "")

    def __enter__(self) -> BuildProgress:
        if self.live:
            real = sys.stderr
            self.status.start()
            # Log lines (warnings) printed above the display, not through it: the live
            # display stands in for stderr while it runs, and a handler holds the stream it
            # was made with.
            for h in logging.getLogger().handlers:
                if isinstance(h, logging.StreamHandler) and h.stream is real:
                    self._logs.append((h, h.setStream(sys.stderr)))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live:
            for h, stream in self._logs:
                h.setStream(stream)  # type: ignore[arg-type]
            self._logs.clear()
            self.status.stop()

    def step(self, name: str, detail: str) -> None:
        """A step (a training stage included) has finished."""
        if self.quiet:
            return
        console.print(f"[green]✓[/] [bold]{escape(name)}[/] {escape(detail)}")
        if self.live:
            self.status.update(self._title(name))

    def epoch(self, stage: str, e: Epoch) -> None:
        """A training stage has finished epoch ``e.epoch`` of ``e.epochs``."""
        if not self.live:
            return
        left = e.seconds / e.epoch * (e.epochs - e.epoch)
        acc = "" if e.accuracy is None else f", train acc. {fmt.percent(e.accuracy)}"
        grid = Table.grid(padding=(0, 1))
        grid.add_row(f"{self._title()} [bold]{escape(stage)}[/] epoch {e.epoch}/{e.epochs}",
                     ProgressBar(total=e.epochs, completed=e.epoch, width=24),
                     f"loss {e.loss:.3f}{acc}, ETA {_clock(left)}")
        self.status.update(grid)


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
    arts = Table("artifact", "KiB", *checks, "p50 ms", "p95 ms", "RSS MiB",
                 title="Artifacts, verified in their runtimes", box=box.SIMPLE)
    arts.columns[0].no_wrap = True
    for a in report["artifacts"]:
        cells = ((fmt.percent(a["accuracy"]), fmt.percent(a["top1_agreement"])) if classifier
                 else _numeric_cells(a))
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
