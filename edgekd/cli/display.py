"""The tables and summaries the ``edgekd`` command line prints (rich). Printing happens
here and in :mod:`edgekd.cli.commands` only. Numbers go through :mod:`edgekd.report.format`,
so a value prints here as it reads in ``report.md`` and ``report.html``."""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import sysconfig
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from rich import box
from rich.console import Console, ConsoleDimensions
from rich.file_proxy import FileProxy
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table

import edgekd
from edgekd.common.progress import Progress
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


# Loggers of the libraries a build imports (converters, runtimes, their dependencies): their
# warnings at import ("Failed to load ..._C_mxfp8.so", "no triton", a torch deprecation)
# are about optional kernels edgekd never uses, and read like a broken install. Every logger
# outside edgekd is treated so (these are the ones known to attach handlers of their own);
# their warnings show with --log-level debug only; edgekd's own warnings (and any error)
# always do.
THIRD_PARTY = ("torch", "torchao", "absl", "jax", "litert_torch", "ai_edge_litert",
               "onnxscript", "onnx_ir", "transformers", "openvino", "root")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Third-party warnings that are the user's to act on, in edgekd's words: (pattern of the
# library's message, what edgekd says instead). The rest are the library's own business.
REPHRASED = (
    (re.compile(r"This DataLoader will create (\d+) worker processes in total\. Our suggested "
                r"max number of worker in current system is (\d+)"),
     r"the DataLoader given as data starts \1 worker processes on a machine with \2 usable "
     r"cores: lower its num_workers to at most \2 (more only contend for the cores)"),
)


def _library_file(filename: str) -> bool:
    """A file of Python itself or of an installed package: not edgekd's, not the user's."""
    if filename.startswith("<"):  # <frozen importlib._bootstrap>; <string> is python -c
        return filename.startswith("<frozen")
    path = Path(filename).resolve()
    if path.is_relative_to(Path(edgekd.__file__).resolve().parent):
        return False
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(path.is_relative_to(Path(r).resolve()) for r in roots)


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    """Python warnings (``warnings.warn``) into logging: those raised in edgekd's or the
    user's own code (their models.py) and those :data:`REPHRASED` as edgekd's warnings, a
    library's own as ``py.warnings`` (shown with --log-level debug)."""
    text = str(message)
    for pattern, ours in REPHRASED:
        if pattern.search(text):
            logging.getLogger("edgekd.warnings").warning("%s", pattern.sub(ours, text))
            return
    if _library_file(filename):
        logging.getLogger("py.warnings").warning("%s:%d: %s: %s", filename, lineno,
                                                 category.__name__, text)
    else:
        logging.getLogger("edgekd.warnings").warning("%s (%s, %s:%d)", text,
                                                     category.__name__, filename, lineno)


class _Shown(logging.Filter):
    """edgekd's records at the chosen level; other libraries' warnings only at debug; any
    error always."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == "edgekd" or record.name.startswith("edgekd."):
            return record.levelno >= self.level
        return self.level <= logging.DEBUG and record.levelno >= logging.WARNING


def _own_stream(stream: TextIO) -> TextIO:
    """A stream of our own on ``stream``'s file descriptor (a duplicate): converters that
    silence descriptors 1 and 2 while they run (:func:`edgekd.common.quiet.quiet`) do not
    silence edgekd's progress and warnings. ``stream`` itself where it has no descriptor (a
    test's captured output)."""
    try:
        fd = stream.fileno()
        stream.flush()
    except (AttributeError, OSError, ValueError):
        return stream
    return open(os.dup(fd), "w", encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="replace", buffering=1)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler edgekd's command line installs (replaced, not added, on each call)."""

    owned = False  # its stream is a duplicate made for it (closed when it is replaced)


def mute_third_party(debug: bool) -> None:
    """Other libraries' loggers at ERROR (WARNING with ``debug``). Again after a library is
    imported: torch sets the levels of its loggers, and gives them a handler of their own
    (writing "W1201 ... torchvision is not installed" to stderr), when it loads."""
    level = logging.WARNING if debug else logging.ERROR
    for name in (*THIRD_PARTY, *logging.root.manager.loggerDict):
        # "root" is the root logger (litert's logging.info calls): its records are filtered
        # by the handler; its level is every logger's default, edgekd's included.
        if name.split(".")[0] not in ("edgekd", "root", "py"):
            logger = logging.getLogger(name)
            if logger.level < level:
                logger.setLevel(level)


def setup_logging(level: str = "warning") -> None:
    """Log records to stderr, one line each: edgekd's from ``level`` (``debug``, ``info``,
    ``warning``, ``error``); other libraries' warnings and Python warnings raised inside
    them with ``debug`` only; any error always."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: choose from {', '.join(LOG_LEVELS)}")
    number = getattr(logging, level.upper())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        if old.owned:
            old.stream.close()
    stream = _own_stream(sys.stderr)
    handler = _Handler(stream)
    handler.owned = stream is not sys.stderr
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_Shown(number))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if number <= logging.DEBUG else min(number, logging.WARNING))
    logging.getLogger("edgekd").setLevel(number)
    mute_third_party(number <= logging.DEBUG)  # some attach handlers of their own
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.showwarning = _show_warning


def _clock(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m}:{s:02d}"


def _count(n: int, unit: str) -> str:
    return f"{n} {unit}" + ("" if n == 1 or unit.endswith("s") else "s")


def _rate(p: Progress) -> str:
    """Items per second (or seconds per item) so far."""
    f = p.fraction
    if not f or p.seconds <= 0 or not p.total:
        return ""
    if p.unit == "batch" and "epochs" in p.metrics:
        per, unit = f * p.metrics["epochs"] * p.total / p.seconds, "batch"
    else:
        per, unit = f * p.total / p.seconds, p.unit
    return f"{per:.1f} {unit}/s" if per >= 1 else f"{1 / per:.1f} s/{unit}"


def describe(p: Progress) -> str:
    """An event as one line: ``teacher: epoch 3/20, batch 40/120, loss 0.412, acc 88.1 %,
    12.0 batch/s, ETA 2:10``."""
    m = p.metrics
    if p.task == "train" and p.unit == "batch" and "epoch" in m:
        what = [f"epoch {int(m['epoch'])}/{int(m['epochs'])}, batch {p.done}/{p.total}"]
    elif p.task == "train":
        what = [f"training, {_count(p.total or 0, 'epoch')}" if p.started
                else f"epoch {p.done}/{p.total}"]
    elif p.task == "step":  # the step itself: its line says how it ended
        return f"{p.stage} …" if p.started else f"{p.stage}: done in {fmt.seconds(p.seconds)}"
    elif p.total and p.total > 1:
        what = [f"{p.task}, {_count(p.total, p.unit)}" if p.started
                else f"{p.task} {p.done}/{_count(p.total, p.unit)}"]
    else:
        what = [p.task]
    what += [f"loss {v:.3f}" if k == "loss" else f"acc {fmt.percent(v)}" if k == "accuracy"
             else f"{k} {fmt.number(v)}" for k, v in m.items() if k not in ("epoch", "epochs")]
    if p.finished and not p.started:
        what.append(f"done in {fmt.seconds(p.seconds)}")
    elif not p.started:
        eta = p.eta
        what += [r for r in (_rate(p), f"ETA {_clock(eta)}" if eta is not None else "") if r]
    elif p.task != "train":
        what[-1] += " …"
    return f"{p.stage}: {', '.join(what)}"


class PlainLines:
    """Progress as plain lines for a log (stdout not a terminal): each task's start and end,
    and between them at most one line per :attr:`every` seconds. A step's own start and end
    events print nothing: its ✓ line says it ended."""

    def __init__(self, print_line: Callable[[str], None], every: float = 12.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.print_line, self.every, self.clock = print_line, every, clock
        self.last: dict[tuple[str, str], float] = {}

    def __call__(self, p: Progress) -> None:
        if p.task == "step":
            return
        key, now = (p.stage, p.task), self.clock()
        if p.started or p.finished or now - self.last.get(key, -math.inf) >= self.every:
            self.last[key] = now
            self.print_line(describe(p))


class BuildProgress:
    """What ``edgekd build`` shows while it runs. On a terminal, a live line: the running
    step and what it is doing (a bar with epoch and batch, loss, accuracy, rate and time
    left while a stage trains; calibration and conversions likewise). Where stdout is not a
    terminal (a CI log), plain lines instead (:class:`PlainLines`). And a line per finished
    step, with the time of its own work.

    ``quiet``: nothing but the summary at the end (and warnings, on stderr).

    While it runs, the display writes to its own duplicate of stdout's descriptor: a
    converter that silences descriptors 1 and 2 for a minute does not silence the display."""

    def __init__(self, target: str, *, quiet: bool = False, debug: bool = False) -> None:
        self.target, self.quiet, self.debug = target, quiet, debug
        self.live = not quiet and console.is_terminal and err_console.is_terminal
        # sys.stdout and sys.stderr are left alone (rich would redirect them through the
        # display): what a converter prints there while edgekd silences it must stay silent.
        self.spinner = Spinner("dots", text=self._title())
        self.status = Live(self.spinner, console=console, transient=True,
                           refresh_per_second=12.5, redirect_stdout=False,
                           redirect_stderr=False)
        self.plain = PlainLines(self._line)
        self._own: TextIO | None = None
        self._logs: list[tuple[logging.StreamHandler, Any]] = []  # type: ignore[type-arg]

    def _title(self) -> str:
        return f"building for [bold]{escape(self.target)}[/] …"

    def _line(self, text: str) -> None:
        console.print(escape(text), soft_wrap=True)

    def __enter__(self) -> BuildProgress:
        if self.quiet:
            return self
        own = _own_stream(sys.stdout)
        if own is not sys.stdout:
            self._own = own
            console.file = own
        if self.live:
            self.status.start()
            # Log lines (warnings) print above the live display, not glued to its line.
            for h in logging.getLogger().handlers:
                if isinstance(h, _Handler):
                    self._logs.append((h, h.setStream(FileProxy(console, h.stream))))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.live:
            for h, stream in self._logs:
                h.setStream(stream)
            self._logs.clear()
            self.status.stop()
        if self._own is not None:
            console.file = None  # type: ignore[assignment]  # back to sys.stdout
            self._own.close()
            self._own = None

    def step(self, name: str, detail: str) -> None:
        """A step (a training stage included) has finished."""
        if self.quiet:
            return
        console.print(f"[green]✓[/] [bold]{escape(name)}[/] {escape(detail)}", soft_wrap=True)

    def progress(self, p: Progress) -> None:
        """An event of the running step (see :mod:`edgekd.common.progress`)."""
        if self.quiet:
            return
        if not self.live:
            if p.started:
                mute_third_party(self.debug)
            self.plain(p)
            return
        if p.started:  # a library may have set up its loggers since the last task
            mute_third_party(self.debug)
        text = describe(p)
        f = p.fraction
        grid = Table.grid(padding=(0, 1))
        if f is None or p.task == "step" or p.total == 1:  # nothing to count: no bar
            grid.add_row(self._title(), escape(text))
        else:
            stage, _, rest = text.partition(": ")
            grid.add_row(f"{self._title()} [bold]{escape(stage)}[/]",
                         ProgressBar(total=1000, completed=round(1000 * f), width=24),
                         escape(rest))
        self.spinner.update(text=grid)


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
    if report.get("budget"):
        from edgekd.report.gate import BROKEN, OFF_TARGET, check_state, verdict

        checks, source = report["budget"]["checks"], report["budget"]["source"]
        states = {check_state(c) for c in checks}
        mark = ("[bold red]✗[/]" if BROKEN in states else "[yellow]⚠[/]" if OFF_TARGET in states
                else "[green]✓[/]")
        console.print(f"{mark} budgets ({escape(source)}): {escape(verdict(checks))}",
                      soft_wrap=True)
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
