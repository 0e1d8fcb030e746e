"""Benchmarking an artifact in a fresh process (see :mod:`edgekd.device.worker`), and the
rules every child process of edgekd follows (the worker here, ``ssh`` in
:mod:`edgekd.measure.remote`): it dies with edgekd.

Imports no torch: ``edgekd bench`` runs on devices that have only a runtime installed.

Interrupts: :func:`catch_interrupts` (used by the CLI) turns SIGINT, SIGTERM (CI cancel,
``docker stop``) and SIGHUP into :class:`KeyboardInterrupt` and records which signal came, so
that one that a library swallowed is raised again at the next :func:`raise_if_interrupted`.
Children are killed when edgekd unwinds, and get ``PR_SET_PDEATHSIG`` (Linux) so that even a
SIGKILLed edgekd leaves no child running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.interrupts import run_child
from edgekd.errors import BuildError

TIMEOUT_S = 900
WORKER = Path(__file__).parents[1] / "device" / "worker.py"
# What a device needs to run the worker: these two files, nothing else of edgekd.
WORKER_FILES = (WORKER, WORKER.with_name("runtimes.py"))

# Bounds: beyond them a benchmark only exhausts the machine (100000 threads took 7 GB).
MAX_SECONDS = 600.0
MAX_RUNS = 1_000_000
MAX_WARMUP = 100_000
MAX_BATCH = 4096
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit


def max_threads() -> int:
    """Four per core here, and at least 64 (a remote device may have more cores)."""
    return max(64, 4 * (os.cpu_count() or 1))


class BenchError(BuildError):
    """A benchmark that could not run (runtime missing, artifact unreadable, timeout)."""


Provider = str | tuple[str, dict[str, Any]]


def _bounded(name: str, value: int, low: int, high: int, unit: str = "") -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}{unit}, got {value}")


@dataclass(frozen=True)
class BenchSpec:
    """How to benchmark one artifact; ``runs`` or ``seconds`` decides how long."""

    artifact: Path
    runtime: str
    threads: int
    warmup: int = 50
    runs: int | None = 300
    seconds: float | None = None
    batch: int = 1
    input_shape: tuple[int, ...] | None = None
    providers: tuple[Provider, ...] = ("CPUExecutionProvider",)
    seed: int = 0
    samples: bool = True  # keep the raw timings (for plots)

    def __post_init__(self) -> None:
        _bounded("threads", self.threads, 1, max_threads(), " (4 per core here, at least 64)")
        _bounded("batch", self.batch, 1, MAX_BATCH)
        _bounded("warmup", self.warmup, 0, MAX_WARMUP)
        if self.seconds is not None and not 0 < self.seconds <= MAX_SECONDS:  # NaN too
            raise ValueError(f"seconds must be > 0 and <= {MAX_SECONDS:g}, got {self.seconds}")
        if self.runs is not None:
            _bounded("runs", self.runs, 1, MAX_RUNS)
        _bounded("seed", self.seed, 0, MAX_SEED)
        if self.runs is None and self.seconds is None:
            raise ValueError("give runs or seconds (or both: at least that many of each)")

    def to_dict(self, artifact: str | None = None) -> dict[str, Any]:
        """The worker's JSON spec; ``artifact`` replaces the path (for a remote copy)."""
        return {
            "artifact": artifact or str(self.artifact.resolve()), "runtime": self.runtime,
            "threads": self.threads, "warmup": self.warmup,
            "runs": self.runs, "seconds": self.seconds,
            "batch": self.batch,
            "input_shape": list(self.input_shape) if self.input_shape else None,
            "providers": [p if isinstance(p, str) else [p[0], p[1]] for p in self.providers],
            "seed": self.seed, "samples": self.samples,
        }


def parse_result(stdout: str, what: str, returncode: int, stderr: str) -> dict[str, Any]:
    """The worker's JSON line, or a :class:`BenchError` that says what went wrong."""
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            try:
                data: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                break
            if "error" in data:
                raise BenchError(f"{what}: {data['error']}")
            return data
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    raise BenchError(f"{what} failed (exit {returncode}): {last}")


def run_bench(spec: BenchSpec, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Latency and memory of one artifact, measured in a fresh local Python process."""
    what = f"benchmark of {spec.artifact.name} in {spec.runtime}"
    # Same thread count for the OpenMP pools some runtimes start besides their own.
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads),
           "EDGEKD_PARENT_PID": str(os.getpid())}  # the worker dies with edgekd
    try:
        # The spec on stdin: no spec file, no temporary folder to leave behind. -P keeps the
        # working folder off sys.path, so nothing there shadows a runtime's imports.
        proc = run_child([sys.executable, "-P", "-m", "edgekd.device.worker", "-"],
                         input=json.dumps(spec.to_dict()).encode(), timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} took over {timeout_s:.0f} s: lower --runs or "
                         "--seconds") from exc
    return parse_result(proc.stdout.decode(errors="replace"), what, proc.returncode,
                        proc.stderr.decode(errors="replace"))
