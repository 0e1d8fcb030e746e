"""Progress events: how far a long piece of work (a training stage, INT8 calibration, a
conversion, a verification, a benchmark) has got, for whoever shows it: the CLI's bars and
log lines, or a caller of ``edgekd.build(on_progress=...)``.

The library never prints. The pipeline opens :func:`reporting` around each step (its name
becomes the events' ``stage``); code anywhere below calls :func:`emit`, or counts items with
:func:`tracking`, without a callback in its signature. Outside :func:`reporting` both cost
one context-variable lookup and send nothing.

    with reporting(callback, "export tflite"):
        with tracking("calibrate", len(samples), "sample") as t:
            for x in samples:
                model(x)
                t.advance()   # throttled: at most a few events per second reach callback

Rule (as all of :mod:`edgekd.common`): standard library only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

# Intermediate events of one task reach the callback at most this often (start and end
# always do): a display redraws a few times a second, and a training loop never waits on it.
EVERY_S = 0.5


@dataclass(frozen=True)
class Progress:
    """One event. ``stage``: the build step (``teacher``, ``quantize``, ``export tflite``,
    ``bench student_int8.onnx``); ``task``: the work inside it (``train``, ``calibrate``,
    ``convert student_int8``), or ``step`` for the step itself (done 0 at its start, 1 at its
    end). ``done`` of ``total`` ``unit`` (``epoch``, ``batch``, ``sample``, ``step``;
    ``total`` None when unknown). ``metrics``: figures so far (``loss`` and ``accuracy`` of
    a training epoch, means over its batches so far); a batch event of a training stage also
    carries ``epoch`` (1-based) and ``epochs``. ``seconds``: since the task started."""

    stage: str
    task: str
    done: int
    total: int | None
    unit: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def started(self) -> bool:
        """The task's first event (nothing done yet)."""
        return self.done == 0

    @property
    def finished(self) -> bool:
        """The task's last event."""
        return self.total is not None and self.done >= self.total and self.unit != "batch"

    @property
    def fraction(self) -> float | None:
        """How much of the task is done (0..1); for a batch of a training epoch, how much of
        the whole training. None when the total is unknown."""
        if not self.total:
            return None
        part = min(self.done / self.total, 1.0)
        epoch, epochs = self.metrics.get("epoch"), self.metrics.get("epochs")
        if self.unit == "batch" and epoch and epochs:
            return min((epoch - 1 + part) / epochs, 1.0)
        return part

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before there is a rate."""
        f = self.fraction
        if not f or self.seconds <= 0:
            return None
        return self.seconds * (1 - f) / f


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class _Reporter:
    callback: ProgressCallback
    stage: str


_REPORTER: ContextVar[_Reporter | None] = ContextVar("edgekd_progress", default=None)


@contextmanager
def reporting(callback: ProgressCallback | None, stage: str) -> Iterator[None]:
    """Events emitted inside go to ``callback`` as ``stage``'s (none when it is None); an
    inner :func:`reporting` (a step inside a step) names its own stage."""
    token = _REPORTER.set(_Reporter(callback, stage) if callback else None)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def active() -> bool:
    """Whether an event emitted now reaches anyone (skip work that only feeds events)."""
    return _REPORTER.get() is not None


def emit(task: str, done: int, total: int | None, unit: str,
         metrics: Mapping[str, float] | None = None, seconds: float = 0.0) -> None:
    """One event of the current stage's ``task``, unthrottled (see :func:`tracking`)."""
    reporter = _REPORTER.get()
    if reporter is not None:
        reporter.callback(Progress(reporter.stage, task, done, total, unit,
                                   dict(metrics or {}), seconds))


class Tracker:
    """Counts a task's items; see :func:`tracking`."""

    def __init__(self, task: str, total: int | None, unit: str, every: float) -> None:
        self.task, self.total, self.unit, self.every = task, total, unit, every
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.on = active()

    def advance(self, n: int = 1, **metrics: float) -> None:
        """``n`` more items done; an event when the last one is over ``every`` s old."""
        self.done += n
        if not self.on:
            return
        now = time.perf_counter()
        if now - self.last >= self.every and (self.total is None or self.done < self.total):
            self.last = now
            emit(self.task, self.done, self.total, self.unit, metrics, now - self.start)

    def end(self, **metrics: float) -> None:
        done = self.done if self.total is None else max(self.done, self.total)
        emit(self.task, done, self.total if self.total is not None else done, self.unit,
             metrics, time.perf_counter() - self.start)


@contextmanager
def tracking(task: str, total: int | None, unit: str, *, every: float = EVERY_S
             ) -> Iterator[Tracker]:
    """Events for a task of ``total`` ``unit``: its start, at most one per ``every``
    seconds while :meth:`Tracker.advance` counts, and its end (when the block completes;
    a task that fails just stops)."""
    tracker = Tracker(task, total, unit, every)
    emit(task, 0, total, unit)
    yield tracker
    tracker.end()
