"""Benchmarking an artifact in its own process (see :mod:`edgekd.bench_worker`)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import BuildError

TIMEOUT_S = 600


@dataclass(frozen=True)
class BenchSpec:
    artifact: Path
    runtime: str
    input_shape: tuple[int, ...]
    threads: int
    warmup: int
    runs: int
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    seed: int = 0

    def to_json(self) -> str:
        return json.dumps({
            "artifact": str(self.artifact), "runtime": self.runtime,
            "input_shape": list(self.input_shape), "threads": self.threads,
            "warmup": self.warmup, "runs": self.runs, "providers": list(self.providers),
            "seed": self.seed,
        })


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Latency and memory of one artifact, measured in a fresh Python process."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "edgekd.bench_worker", spec.to_json(), str(result)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"benchmark of {spec.artifact.name} took over {TIMEOUT_S} s: "
                             "lower --runs") from exc
        if proc.returncode != 0 or not result.exists():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise BuildError(f"benchmark of {spec.artifact.name} in {spec.runtime} failed "
                             f"(exit {proc.returncode}): {last}")
        data: dict[str, Any] = json.loads(result.read_text(encoding="utf-8"))
        return data
