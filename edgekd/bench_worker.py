"""The benchmark child process: load one artifact in its runtime, time it, report JSON.

Runs as ``python -m edgekd.bench_worker SPEC_JSON RESULT_PATH`` so that each artifact is
measured in a fresh process (peak RSS then belongs to that model and runtime alone). Imports
no torch: this is what runs on a device that has only a runtime installed.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edgekd.backends import get_backend


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def peak_rss_mb() -> float:
    """High-water mark of this process's resident memory, in MiB.

    On Linux this reads VmHWM, which belongs to the address space the process got at exec.
    ``ru_maxrss`` is not used there: the kernel carries it over from the parent through
    fork + exec, so a child of a 900 MB torch process would report 900 MB. psutil exposes
    neither figure, hence the few lines here.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS


def measure(spec: dict) -> dict:
    backend = get_backend(spec["runtime"])
    rng = np.random.default_rng(spec.get("seed", 0))
    x = rng.standard_normal(spec["input_shape"]).astype(np.float32)
    rss_before = _rss_mb()

    t0 = time.perf_counter_ns()
    runner = backend.load(Path(spec["artifact"]), spec["threads"], tuple(spec["providers"]))
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    rss_loaded = _rss_mb()

    t0 = time.perf_counter_ns()
    runner.run(x)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    for _ in range(spec["warmup"]):
        runner.run(x)
    times = np.empty(spec["runs"], dtype=np.float64)
    for i in range(spec["runs"]):
        t0 = time.perf_counter_ns()
        runner.run(x)
        times[i] = (time.perf_counter_ns() - t0) / 1e6
    peak_mb = peak_rss_mb()
    return {
        "runtime": spec["runtime"],
        "threads": spec["threads"],
        "runs": spec["runs"],
        "warmup": spec["warmup"],
        "load_ms": round(load_ms, 3),
        "first_inference_ms": round(first_ms, 4),
        "latency_ms": {
            "p50": round(float(np.percentile(times, 50)), 4),
            "p90": round(float(np.percentile(times, 90)), 4),
            "p99": round(float(np.percentile(times, 99)), 4),
            "mean": round(float(times.mean()), 4),
            "min": round(float(times.min()), 4),
            "max": round(float(times.max()), 4),
        },
        "peak_rss_mb": round(peak_mb, 2),
        "load_rss_mb": round(rss_loaded - rss_before, 2),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = measure(spec)
    Path(sys.argv[2]).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    main()
