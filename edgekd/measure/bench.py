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
import math
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import runtime_for_suffix
from edgekd.common.interrupts import run_child
from edgekd.errors import BuildError, UsageError
from edgekd.settings.targets import load_target

TIMEOUT_S = 900
WORKER = Path(__file__).parents[1] / "device" / "worker.py"
# What a device needs to run the worker: these three files, nothing else of edgekd.
WORKER_FILES = (WORKER, WORKER.with_name("runtimes.py"), WORKER.with_name("feeds.py"))

# Bounds: beyond them a benchmark only exhausts the machine (100000 threads took 7 GB).
MAX_SECONDS = 600.0
MAX_RUNS = 1_000_000
MAX_WARMUP = 100_000
MAX_BATCH = 4096
MAX_SEED = 2**32 - 1  # numpy's and torch's seeds are unsigned 32-bit
MAX_INPUT_ELEMENTS = 2**28  # 1 GiB of float32 in one input
INPUT_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8",
                "bool")
INPUT_KEYS = ("name", "shape", "dtype", "value", "low", "high")


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
    # One dict per model input, by name (empty: derived from the model, as input_shape says):
    # {"name": str, "dtype": one of INPUT_DTYPES, "shape": [ints, batch included] (optional:
    # the model's declared shape, symbolic dims 1), "value": nested list fed as given
    # (broadcast to shape), or "low" and "high": draw from [low, high] (integers: both ends
    # included; floats: uniform; neither: floats standard normal, integers 0/1)}.
    inputs: tuple[dict[str, Any], ...] = ()

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
        if self.input_shape is not None:
            object.__setattr__(self, "input_shape", _checked_shape("input_shape",
                                                                   self.input_shape))
        object.__setattr__(self, "inputs", _checked_inputs(self.inputs))
        if self.inputs and (self.input_shape is not None or self.batch != 1):
            raise ValueError("with inputs, give each input's full shape (batch included) "
                             "there, and neither input_shape nor a batch other than 1")

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
            "inputs": [dict(d) for d in self.inputs],
        }


def _checked_shape(what: str, shape: Any) -> tuple[int, ...]:
    if isinstance(shape, str | bytes) or not hasattr(shape, "__iter__"):
        raise ValueError(f"{what} must be a list of dimensions, got {shape!r}")
    dims = tuple(shape)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise ValueError(f"{what} must be non-negative integers, got {list(dims)}")
    if math.prod(dims) > MAX_INPUT_ELEMENTS:
        raise ValueError(f"{what} {list(dims)} has over {MAX_INPUT_ELEMENTS} elements")
    return dims


def _number(what: str, v: Any, integer: bool) -> float | int:
    ok = (isinstance(v, int) if integer else isinstance(v, int | float) and math.isfinite(v))
    if isinstance(v, bool) or not ok:
        kind = "an integer" if integer else "a finite number"
        raise ValueError(f"{what} must be {kind}, got {v!r}")
    return v  # type: ignore[no-any-return]


def _checked_input(i: int, d: Any) -> dict[str, Any]:
    """One entry of BenchSpec.inputs, checked, with its shape as a list."""
    if not isinstance(d, dict):
        raise ValueError(f"inputs[{i}] must be a dict with keys {', '.join(INPUT_KEYS)}")
    unknown = sorted(set(d) - set(INPUT_KEYS))
    if unknown:
        raise ValueError(f"inputs[{i}] has unknown keys {', '.join(unknown)}: allowed are "
                         f"{', '.join(INPUT_KEYS)}")
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"inputs[{i}] needs a name (the model's input name)")
    what = f"input {name!r}"
    if d.get("dtype") not in INPUT_DTYPES:
        raise ValueError(f"{what}: dtype must be one of {', '.join(INPUT_DTYPES)}, "
                         f"got {d.get('dtype')!r}")
    out: dict[str, Any] = {"name": name, "dtype": d["dtype"]}
    if d.get("shape") is not None:
        out["shape"] = list(_checked_shape(f"{what} shape", d["shape"]))
    bounds = [d.get("low"), d.get("high")]
    if d.get("value") is not None:
        if any(b is not None for b in bounds):
            raise ValueError(f"{what}: give value or low/high, not both")
        try:
            value = np.asarray(d["value"], dtype=d["dtype"])
            if "shape" in out:
                np.broadcast_to(value, out["shape"])
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"{what}: value is not a {d['dtype']} array of shape "
                             f"{out.get('shape', 'the model declares')} ({exc})") from exc
        out["value"] = value.tolist()
    elif any(b is not None for b in bounds):
        integer = d["dtype"] != "bool" and np.issubdtype(np.dtype(d["dtype"]), np.integer)
        if None in bounds or d["dtype"] == "bool":
            raise ValueError(f"{what}: give both low and high (not for bool inputs)")
        low, high = (_number(f"{what} {k}", d[k], integer) for k in ("low", "high"))
        if low > high:
            raise ValueError(f"{what}: low {low} is above high {high}")
        if integer:
            info = np.iinfo(d["dtype"])
            if low < info.min or high > info.max:
                raise ValueError(f"{what}: low/high must be within {d['dtype']} "
                                 f"({info.min}..{info.max})")
        out["low"], out["high"] = low, high
    return out


def _checked_inputs(inputs: Any) -> tuple[dict[str, Any], ...]:
    if isinstance(inputs, dict | str) or not hasattr(inputs, "__iter__"):
        raise ValueError("inputs must be a list of dicts, one per model input")
    checked = tuple(_checked_input(i, d) for i, d in enumerate(inputs))
    names = [d["name"] for d in checked]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"inputs name {', '.join(twice)} more than once: give each input once")
    return checked


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


def _run_worker(spec: dict[str, Any], what: str, threads: int, timeout_s: float
                ) -> dict[str, Any]:
    """The worker's result for ``spec``, run in a fresh local Python process."""
    # Same thread count for the OpenMP pools some runtimes start besides their own.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "EDGEKD_PARENT_PID": str(os.getpid())}  # the worker dies with edgekd
    try:
        # The spec on stdin: no spec file, no temporary folder to leave behind. -P keeps the
        # working folder off sys.path, so nothing there shadows a runtime's imports.
        proc = run_child([sys.executable, "-P", "-m", "edgekd.device.worker", "-"],
                         input=json.dumps(spec).encode(), timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{what} took over {timeout_s:.0f} s: lower --runs or "
                         "--seconds") from exc
    return parse_result(proc.stdout.decode(errors="replace"), what, proc.returncode,
                        proc.stderr.decode(errors="replace"))


def run_bench(spec: BenchSpec, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Latency and memory of one artifact, measured in a fresh local Python process."""
    return _run_worker(spec.to_dict(), f"benchmark of {spec.artifact.name} in {spec.runtime}",
                       spec.threads, timeout_s)


@dataclass(frozen=True)
class PairSpec:
    """How to compare two artifacts of one runtime: both loaded in one worker and timed in
    alternating rounds (:func:`edgekd.device.worker.run_pair`) for about ``seconds``, each
    block of runs about ``block_ms`` long; ``rounds`` fixes the number of rounds instead."""

    baseline: BenchSpec
    candidate: BenchSpec
    seconds: float = 2.0
    block_ms: float = 2.0
    rounds: int | None = None

    def __post_init__(self) -> None:
        if self.baseline.runtime != self.candidate.runtime:
            raise ValueError(f"a pair runs in one runtime, got {self.baseline.runtime} and "
                             f"{self.candidate.runtime}")
        if not 0 < self.seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be > 0 and <= {MAX_SECONDS:g}, got {self.seconds}")
        if not 0 < self.block_ms <= 1000:
            raise ValueError(f"block_ms must be > 0 and <= 1000, got {self.block_ms}")
        if self.rounds is not None:
            _bounded("rounds", self.rounds, 2, 1000)

    def to_dict(self) -> dict[str, Any]:
        return {"pair": [self.baseline.to_dict(), self.candidate.to_dict()],
                "seconds": self.seconds, "block_ms": self.block_ms, "rounds": self.rounds}


def run_pair(spec: PairSpec, timeout_s: float = TIMEOUT_S) -> dict[str, Any]:
    """Each round's median latency of both artifacts of ``spec``, timed alternately in one
    fresh local Python process (see :mod:`edgekd.measure.payoff` for the verdict)."""
    what = (f"comparison of {spec.candidate.artifact.name} with {spec.baseline.artifact.name} "
            f"in {spec.baseline.runtime}")
    return _run_worker(spec.to_dict(), what, spec.baseline.threads, timeout_s)


def bench_specs(artifacts: list[Path], runtime: str | None, target: str | None,
                threads: int | None, remote: bool, **kw: object) -> list[BenchSpec]:
    """What ``edgekd bench`` measures: one spec per artifact, its runtime from the suffix
    (or ``runtime``), threads and providers from ``target`` (capped to this host's cores
    unless it runs on remote devices)."""
    from edgekd.backends import BACKENDS, get_backend

    if runtime is not None and runtime not in BACKENDS:
        get_backend(runtime)  # one line with "did you mean", before any work
    t = load_target(target) if target else None
    specs = []
    for path in artifacts:
        if not path.exists():
            raise UsageError(f"{path}: no such file; give the path of an .onnx, .xml or "
                             ".tflite artifact")
        rt = runtime or runtime_for_suffix(path)
        if path.suffix == ".onnx":
            _check_onnx_artifact(path, kw.get("input_shape"))
        if t and rt not in t.runtimes:
            raise UsageError(f"{path.name} runs in {rt}, which target {t.name!r} does not "
                             f"use ({', '.join(t.runtimes)}); pass --runtime or another target")
        n = threads or (t.threads if t else (os.cpu_count() or 1))
        if t and not remote:  # more threads than this host's cores only measure contention
            n = min(n, os.cpu_count() or 1)
        providers = t.providers if t else ("CPUExecutionProvider",)
        specs.append(BenchSpec(path, rt, n, providers=providers, **kw))  # type: ignore[arg-type]
    return specs


def _check_onnx_artifact(path: Path, shape: object) -> None:
    """A damaged ONNX file, or a ``--shape`` of another rank than the model's input, is the
    user's to fix (exit 2), found before any work. Skipped where the ``onnx`` package is not
    installed (a device with only the runtime): the worker then reports it."""
    try:
        from edgekd.inputs.io import onnx_io
    except ImportError:
        return
    try:
        inputs, _ = onnx_io(path)
    except ImportError:
        return
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError for damaged files
        text = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise UsageError(f"{path} is not a valid ONNX model ({text}): it may be truncated; "
                         "export it again (torch.onnx.export)") from exc
    dims = inputs[0].dims if inputs else None
    if isinstance(shape, tuple) and dims is not None and len(shape) != len(dims):
        shown = ",".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in dims)
        raise UsageError(f"--shape {','.join(map(str, shape))}: {path.name}'s input "
                         f"{inputs[0].name!r} has rank {len(dims)} ({shown}), not "
                         f"{len(shape)}: give {len(dims)} numbers")
