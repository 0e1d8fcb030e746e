"""What ``edgekd build`` shows while it runs (:class:`BuildProgress`): on a terminal a live
line with a bar, loss, accuracy, rate and time left (rich); in a log (stdout not a
terminal) plain periodic lines (:class:`PlainLines`); a line per finished step. Each event
(:class:`~edgekd.common.progress.Progress`) reads as one line through :func:`describe`."""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from rich.file_proxy import FileProxy
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table

from edgekd.cli.display import console, err_console
from edgekd.cli.logs import LogHandler, mute_third_party, own_stream
from edgekd.common.progress import Progress
from edgekd.report import format as fmt


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
        own = own_stream(sys.stdout)
        if own is not sys.stdout:
            self._own = own
            console.file = own
        if self.live:
            self.status.start()
            # Log lines (warnings) print above the live display, not glued to its line.
            for h in logging.getLogger().handlers:
                if isinstance(h, LogHandler):
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
