"""Benchmarking an artifact in a fresh process (see :mod:`edgekd.device.worker`).

Imports no torch: ``edgekd bench`` runs on devices that have only a runtime installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import BuildError

TIMEOUT_S = 900
WORKER = Path(__file__).parents[1] / "device" / "worker.py"
# What a device needs to run the worker: these two files, nothing else of edgekd.
WORKER_FILES = (WORKER, WORKER.with_name("runtimes.py"))


class BenchError(BuildError):
    """A benchmark that could not run (runtime missing, artifact unreadable, timeout)."""


Provider = str | tuple[str, dict[str, Any]]


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
        for name in ("threads", "batch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.seconds is not None and self.seconds <= 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds}")
        if self.runs is not None and self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
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
    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(json.dumps(spec.to_dict()), encoding="utf-8")
        # Same thread count for the OpenMP pools some runtimes start besides their own.
        env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads)}
        try:
            # -m with an empty working folder: nothing on sys.path shadows a runtime's imports.
            proc = subprocess.run([sys.executable, "-m", "edgekd.device.worker", str(spec_file)],
                                  capture_output=True, text=True, timeout=timeout_s,
                                  check=False, env=env, cwd=tmp)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{what} took over {timeout_s:.0f} s: lower --runs or "
                             "--seconds") from exc
    return parse_result(proc.stdout, what, proc.returncode, proc.stderr)
