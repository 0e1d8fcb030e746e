"""The benchmark child process: load one artifact in its runtime, time it, print JSON.

``python worker.py SPEC.json`` (or ``python -m edgekd.device.worker -`` with the spec on
stdin) writes one JSON object to stdout: the result, or ``{"error": ...}`` with exit code 3.
SIGTERM and SIGHUP (edgekd's death, through ``PR_SET_PDEATHSIG``) end it like Ctrl-C: its
temporary files go with it.

This file, :mod:`edgekd.device.runtimes` and :mod:`edgekd.device.feeds` need only the
standard library, NumPy and the one runtime measured. ``edgekd bench --remote`` copies just
these three files to a device (a Raspberry Pi with only ``ai-edge-litert``, a Jetson with
only ``onnxruntime-gpu``) and runs it there, so the numbers come from the device's own
runtime. It never imports torch or the rest of edgekd.

One method for every runtime
----------------------------
- Inputs: one tensor for every model input, fed by name, drawn from
  ``numpy.random.default_rng(seed)``. Without ``inputs`` in the spec: the model's declared
  shape and dtype (batch in dim 0, ``input_shape`` for the first input), float standard
  normal, integers 0/1. With ``inputs`` (one entry per model input: name, dtype, shape,
  optional ``value`` fed as given or ``low``/``high`` bounds, see
  :class:`edgekd.measure.bench.BenchSpec`): what each entry says, in the dtype the runtime
  declares. A full-integer model gets a float tensor quantized with its own input scale and
  zero point. Same seed, same tensors. The result's ``inputs`` lists what was fed.
- Timed region: one synchronous inference call with the inputs already in the runtime's
  buffers, as ``benchmark_app`` and ``benchmark_model`` do: ``run_with_iobinding`` (ONNX
  Runtime), ``InferRequest.infer()`` (OpenVINO), ``Interpreter.invoke()`` (LiteRT).
- The first inference is timed on its own (it includes lazy initialisation such as kernel
  packing, XNNPACK weight repacking, TensorRT engine building); then ``warmup`` untimed runs;
  then ``runs`` timed runs, or as many as fit in ``seconds``.
- Threads: the runtime's own setting, fixed to ``threads`` (ORT intra-op threads with one
  inter-op thread and sequential execution; OpenVINO ``INFERENCE_NUM_THREADS`` with one
  stream; LiteRT ``num_threads``).

Memory, in MiB, all of this process (Linux ``/proc/self/status``):
- ``baseline_rss_mb``: resident memory of the interpreter with NumPy loaded, before the
  runtime is imported (the "empty interpreter").
- ``model_rss_mb``: resident memory after the runtime is imported, the model loaded and
  one inference run, minus the baseline: runtime libraries + model + the runtime's arena.
- ``peak_rss_mb``: the process's high-water mark (VmHWM) at the end of the timed runs;
  this is what ``/usr/bin/time -v`` calls "Maximum resident set size".
- ``file_size_bytes``: the artifact on disk (.xml + .bin for OpenVINO).

A spec with ``"pair": [baseline_spec, candidate_spec]`` compares two artifacts instead: both
loaded in this process and timed in alternating rounds (:func:`run_pair`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import signal
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__:  # part of edgekd: python -m edgekd.device.worker
    from .runtimes import LOADERS, Loaded, WorkerError, import_runtime
else:  # copied onto a device beside runtimes.py (edgekd bench --remote): python3 worker.py
    from runtimes import LOADERS, Loaded, WorkerError, import_runtime  # type: ignore[no-redef]

EXIT_ERROR = 3
MAX_SAMPLES = 2000
# --- memory -----------------------------------------------------------------------------

def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb / 1024
    return peak_rss_mb()  # no procfs (macOS): the best this process can say without psutil


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory, in MiB.

    On Linux this reads VmHWM, which belongs to the address space the process got at exec.
    ``ru_maxrss`` is not used there: the kernel carries it over from the parent through
    fork + exec, so a child of a 900 MB torch process would report 900 MB.
    """
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS


# --- statistics -------------------------------------------------------------------------

def latency_stats(times_ms: np.ndarray) -> dict[str, Any]:
    """Percentiles, moments and a 95 % confidence interval of the median.

    The interval is the distribution-free one from order statistics: the median lies
    between the j-th and k-th smallest of n samples with j, k = n/2 -+ 1.96 sqrt(n)/2
    (normal approximation to Binomial(n, 1/2)). Latency is skewed, so no normality is
    assumed; SciPy is not a dependency of a device-side script for three lines.
    """
    t = np.sort(np.asarray(times_ms, dtype=np.float64))
    n = len(t)
    half = 1.959964 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    r = lambda v: round(float(v), 5)  # noqa: E731
    return {
        "p50": r(np.percentile(t, 50)), "p90": r(np.percentile(t, 90)),
        "p95": r(np.percentile(t, 95)), "p99": r(np.percentile(t, 99)),
        "mean": r(t.mean()), "std": r(t.std(ddof=1) if n > 1 else 0.0),
        "min": r(t[0]), "max": r(t[-1]), "p50_ci95": [r(t[lo]), r(t[hi])],
    }




# --- the measurement --------------------------------------------------------------------

def device_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    model = None
    with contextlib.suppress(OSError):  # Raspberry Pi, Jetson: the board's name
        model = Path("/proc/device-tree/model").read_text(encoding="ascii",
                                                           errors="replace").strip("\0\n ")
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii",
                                                    errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"hostname": platform.node(), "machine": platform.machine(), "cpu": cpu,
            "model": model, "cpus": os.cpu_count(), "system": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__}


def _ms_since(t0_ns: int) -> float:
    return (time.perf_counter_ns() - t0_ns) / 1e6


def _artifact_files(path: Path) -> list[Path]:
    """The artifact's files on disk: an OpenVINO IR is its .xml and its .bin."""
    files = [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]
    for f in files:
        if not f.is_file():
            raise WorkerError(f"artifact {f} not found")
    return files


def _load(spec: dict[str, Any], rng: np.random.Generator) -> tuple[Loaded, float, float]:
    """Import the runtime and load the artifact in it; also the milliseconds each took."""
    t0 = time.perf_counter_ns()
    module = import_runtime(spec["runtime"])
    import_ms = _ms_since(t0)
    t0 = time.perf_counter_ns()
    try:
        loaded = LOADERS[spec["runtime"]](module, spec, rng)
    except WorkerError:
        raise
    except Exception as exc:  # noqa: BLE001 - the runtime's own message, on one line
        msg = " ".join(str(exc).split())[:300]
        name = Path(spec["artifact"]).name
        raise WorkerError(f"{spec['runtime']} could not load {name}: {msg}") from exc
    return loaded, import_ms, _ms_since(t0)


def _timed_runs(infer: Callable[[], None], spec: dict[str, Any]) -> tuple[array[float], float]:
    """``warmup`` untimed runs, then the timed ones: their latencies (ms) and the seconds
    they took together."""
    for _ in range(spec.get("warmup", 50)):
        infer()
    times = array("d")  # 8 bytes a run: a long --seconds run barely moves peak RSS
    seconds, runs = spec.get("seconds"), spec.get("runs") or 0
    start = time.perf_counter()
    # At least ``runs`` runs and at least ``seconds`` seconds, whichever is given (both: both).
    while (len(times) < max(runs, 10 if seconds else 1)
           or (seconds and time.perf_counter() - start < seconds)):
        t0 = time.perf_counter_ns()
        infer()
        times.append(_ms_since(t0))
    return times, time.perf_counter() - start


def _placement(placement: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Where the runtime put each operator; best-effort, the timing stands without it."""
    try:
        return placement()
    except Exception as exc:  # noqa: BLE001 - inspection is best-effort, timing stands
        return {"error": " ".join(str(exc).split())[:300]}


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, time and inspect one artifact as ``spec`` says (see the module docstring)."""
    path = Path(spec["artifact"])
    files = _artifact_files(path)
    spec.setdefault("batch", 1)
    rng = np.random.default_rng(spec.get("seed", 0))
    baseline = rss_mb()
    (infer, placement, version, inputs), import_ms, load_ms = _load(spec, rng)
    t0 = time.perf_counter_ns()
    try:
        infer()
    except Exception as exc:  # noqa: BLE001 - the runtime's own message, on one line
        msg = " ".join(str(exc).split())[:300]
        given = ", ".join(f"{i['name']} {i['dtype']} {i['shape']}" for i in inputs)
        raise WorkerError(f"{spec['runtime']} could not run {path.name} on the benchmark "
                          f"inputs ({given}): {msg}") from exc
    first_ms = _ms_since(t0)
    loaded = rss_mb()
    times, timed_s = _timed_runs(infer, spec)
    peak = peak_rss_mb()
    result = {
        "artifact": path.name, "runtime": spec["runtime"], "runtime_version": version,
        "file_size_bytes": sum(f.stat().st_size for f in files),
        "threads": spec["threads"], "batch": spec["batch"], "seed": spec.get("seed", 0),
        "inputs": inputs,
        "providers": [p if isinstance(p, str) else p[0] for p in spec.get("providers") or []],
        "warmup": spec.get("warmup", 50), "runs": len(times), "timed_seconds": round(timed_s, 3),
        "import_ms": round(import_ms, 2), "load_ms": round(load_ms, 3),
        "first_inference_ms": round(first_ms, 4),
        "latency_ms": latency_stats(np.array(times)),
        "memory": {"baseline_rss_mb": round(baseline, 2),
                   "model_rss_mb": round(loaded - baseline, 2),
                   "peak_rss_mb": round(peak, 2)},
        "device": device_info(),
    }
    if spec.get("placement", True):
        result["placement"] = _placement(placement)
    if spec.get("samples"):  # for plots: at most MAX_SAMPLES, evenly spread over the run
        step = max(1, math.ceil(len(times) / MAX_SAMPLES))
        result["samples_ms"] = [round(t, 5) for t in times[::step]]
    return result


# --- paired comparison --------------------------------------------------------------------

PAIR_MIN_ROUNDS, PAIR_MAX_ROUNDS = 10, 60
PAIR_MAX_BLOCK = 2000  # runs in one block: a block stays short, so load barely moves within it


def _block(infer: Callable[[], None], n: int, out: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter_ns()
        infer()
        out.append(_ms_since(t0))


def _loaded_for_pair(spec: dict[str, Any]) -> Callable[[], None]:
    """One side of a pair: loaded, run once (errors say which artifact) and warmed up."""
    _artifact_files(Path(spec["artifact"]))
    spec.setdefault("batch", 1)
    (infer, _, _, _), _, _ = _load(spec, np.random.default_rng(spec.get("seed", 0)))
    try:
        infer()
    except Exception as exc:  # noqa: BLE001 - the runtime's own message, on one line
        msg = " ".join(str(exc).split())[:300]
        raise WorkerError(f"{spec['runtime']} could not run {Path(spec['artifact']).name} on "
                          f"the benchmark inputs: {msg}") from exc
    for _ in range(spec.get("warmup", 50)):
        infer()
    return infer


def run_pair(spec: dict[str, Any]) -> dict[str, Any]:
    """Latency of ``pair[1]`` (candidate) against ``pair[0]`` (baseline), both loaded in this
    one process and timed in alternating rounds, so that load on the machine that changes
    during the measurement hits both sides alike instead of looking like a speed difference.

    Each round times a block of runs of each side in the order A B B A (B A A B in odd
    rounds): a load that rises or falls steadily through a round weighs on both sides
    equally. Each side's block has as many runs as take it about ``block_ms``, from its own
    latency: one count for both, sized from the slower side, would give a model 50× faster
    only a few runs per block, each right after the other model ran (cold caches), and
    understate the speed-up (a 46× pair read 3.6×). The rounds fill about ``seconds``
    (between PAIR_MIN_ROUNDS and PAIR_MAX_ROUNDS rounds). The result has each round's median
    latency of each side; :mod:`edgekd.measure.payoff` turns them into a speed-up per round
    and an interval over rounds.
    """
    base_spec, cand_spec = spec["pair"]
    infer = [_loaded_for_pair(base_spec), _loaded_for_pair(cand_spec)]
    probe: list[list[float]] = [[], []]
    for side in (0, 1, 1, 0):  # a first estimate of each side's latency
        _block(infer[side], 5, probe[side])
    latency = [max(float(np.median(p)), 1e-6) for p in probe]
    block_ms = spec.get("block_ms", 2.0)
    n = [int(min(PAIR_MAX_BLOCK, max(3, block_ms / v))) for v in latency]
    round_ms = 2 * (n[0] * latency[0] + n[1] * latency[1])
    rounds = int(min(PAIR_MAX_ROUNDS, max(PAIR_MIN_ROUNDS,
                                          spec.get("seconds", 2.0) * 1000 / round_ms)))
    rounds = spec.get("rounds") or rounds
    medians = []
    for r in range(rounds):
        times: list[list[float]] = [[], []]
        for side in ((0, 1, 1, 0) if r % 2 == 0 else (1, 0, 0, 1)):
            _block(infer[side], n[side], times[side])
        medians.append([round(float(np.median(t)), 6) for t in times])
    return {"pair": [Path(base_spec["artifact"]).name, Path(cand_spec["artifact"]).name],
            "runtime": base_spec["runtime"], "threads": base_spec["threads"],
            "rounds": rounds, "runs_per_block": n, "round_p50_ms": medians}


def _stop(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds: temporary folders are removed


def _die_with_parent() -> None:
    """Have the kernel send SIGTERM when the edgekd that started this worker dies, even by
    SIGKILL (Linux prctl PR_SET_PDEATHSIG). Set here, in the worker, rather than through a
    ``preexec_fn`` in edgekd: that would make edgekd fork, which is unsafe once a threaded
    library (JAX, through LiteRT-Torch) is loaded. ``EDGEKD_PARENT_PID`` closes the window
    before this call: a parent already gone means exit now."""
    parent = os.environ.get("EDGEKD_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if str(os.getppid()) != parent:
        os._exit(EXIT_ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _die_with_parent()
    for name in ("SIGTERM", "SIGHUP"):  # no SIGHUP on Windows
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _stop)
    # Runtimes print to stdout (banners, logs); keep the real stdout for the one JSON line.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    if len(argv) != 1:
        out.write(json.dumps({"error": "usage: worker.py SPEC.json (- for stdin)"}) + "\n")
        return EXIT_ERROR
    try:
        text = sys.stdin.read() if argv[0] == "-" else Path(argv[0]).read_text(encoding="utf-8")
        spec = json.loads(text)
        result = run_pair(spec) if "pair" in spec else run_spec(spec)
    except WorkerError as exc:
        out.write(json.dumps({"error": str(exc)}) + "\n")
        out.flush()
        return EXIT_ERROR
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
