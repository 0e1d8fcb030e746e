"""Where the default build's time goes: seconds per step, grouped by stage, with each stage's
share of the whole build.

    python benchmarks/build_time.py                  # a fresh build (teacher trained here)
    python benchmarks/build_time.py --cached         # then a second build on its cache
    python benchmarks/build_time.py --target intel-cpu --out build-time
    python benchmarks/build_time.py --set teacher.epochs=20 --set bench.seconds=1  # before
    python benchmarks/build_time.py --bench-repeats 5    # + is a shorter bench as stable?

Runs ``edgekd.build`` (the built-in digits demonstration, no project file) in a temporary
folder, with ``fresh=True`` (every training stage trained again); ``--cached`` builds once
more into the same folder and times that second build. Each step's own seconds come from its
end event (:mod:`edgekd.common.progress`; a step inside another, the teacher's outputs, is
taken out of the outer one's). "outside steps" is the build's wall time less the steps':
setup, assembling the report and the package, and writing report.json/.md/.html
("after the last step" is the part after the last step ended); "report rendering" times
report.md and report.html (plots included) rendered again from the finished report.json.

``--bench-repeats N`` then benchmarks every artifact of the build N times for each of
``bench.seconds`` 0.5, 1 and 2 (interleaved, so that load drifting during the run falls on
all three alike), and prints the spread of the p50 across the N runs next to the mean width
of each run's 95 % interval of the median: what a shorter bench costs in precision.

The import time of edgekd and torch is measured first, in this process, as a user's
``edgekd build`` pays it. The 1-minute load average before and after says how quiet the
machine was: on a 2-core machine, a load above ~0.5 before the build means another process
is taking a core, and every figure is slower.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

_T0 = time.perf_counter()
import torch  # noqa: E402,F401  (timed: the import a build pays)

import edgekd  # noqa: E402
import edgekd.pipeline.run  # noqa: E402,F401
from edgekd.common.progress import Progress  # noqa: E402

IMPORT_S = time.perf_counter() - _T0

# Stage of a step, by the start of its name (first match).
STAGES = (("data", "data"), ("teacher outputs", "training"), ("teacher", "training"),
          ("student_", "training"), ("quantize", "export"), ("export", "export"),
          ("verify", "verify"), ("robustness", "robustness"), ("bench", "bench"),
          ("compare", "compare"))


def stage_of(step: str) -> str:
    return next((stage for prefix, stage in STAGES if step.startswith(prefix)), "other steps")


class Timeline:
    """Each step's own seconds (its end event) and when the last one ended."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, float]] = []
        self.last_end = 0.0

    def __call__(self, event: Progress) -> None:
        if event.task == "step" and event.finished:
            self.steps.append((event.stage, event.seconds))
            self.last_end = time.perf_counter()


def timed_build(target: str, out: Path, fresh: bool, settings: list[str]
                ) -> tuple[Timeline, float, float, dict[str, object]]:
    """(the steps, the build's wall seconds, seconds after the last step ended, report)."""
    timeline = Timeline()
    start = time.perf_counter()
    result = edgekd.build(target, out=out, fresh=fresh, on_progress=timeline, cwd=out.parent,
                          settings=settings)
    end = time.perf_counter()
    return timeline, end - start, end - timeline.last_end, result.report


def rendering_seconds(report: dict[str, object]) -> float:
    """report.md + report.html (with its plots) rendered from ``report``, as the build does."""
    from edgekd.report.html import render_html
    from edgekd.report.markdown import render_markdown

    start = time.perf_counter()
    render_markdown(report)
    render_html(report)
    return time.perf_counter() - start


def print_table(title: str, timeline: Timeline, wall: float, tail: float,
                load: tuple[float, float], render: float) -> None:
    by_stage: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for name, seconds in timeline.steps:
        by_stage[stage_of(name)].append((name, seconds))
    inside = sum(s for _, s in timeline.steps)
    print(f"\n{title}: {wall:.1f} s build, load average {load[0]:.2f} before, "
          f"{load[1]:.2f} after ({os.cpu_count()} cores)")
    print(f"{'stage / step':<46} {'seconds':>8} {'share':>7}")
    order = dict.fromkeys([s for _, s in STAGES] + ["other steps"])
    for stage in order:
        rows = by_stage.get(stage)
        if not rows:
            continue
        total = sum(s for _, s in rows)
        print(f"{stage:<46} {total:8.2f} {total / wall:7.1%}")
        for name, seconds in rows:
            print(f"  {name:<44} {seconds:8.2f} {seconds / wall:7.1%}")
    outside = wall - inside
    print(f"{'outside steps':<46} {outside:8.2f} {outside / wall:7.1%}")
    print(f"  {'after the last step (report, package)':<44} {tail:8.2f} {tail / wall:7.1%}")
    print(f"    {'report rendering (.md, .html, plots)':<42} {render:8.2f} {render / wall:7.1%}")
    print(f"{'total (build)':<46} {wall:8.2f} {1:7.1%}")
    print(f"{'import edgekd + torch (before the build)':<46} {IMPORT_S:8.2f}")


def bench_stability(folder: Path, repeats: int, threads: int) -> None:
    """Each artifact of ``folder`` (and its reference/), benched ``repeats`` times per
    duration: the p50's spread across runs and the 95 % interval's width within a run."""
    import statistics

    from edgekd.backends import runtime_for_suffix
    from edgekd.measure.bench import BenchSpec, run_bench

    durations = (0.5, 1.0, 2.0)
    paths = sorted([*folder.glob("*.onnx"), *folder.glob("*.tflite"), *folder.glob("*.xml"),
                    *folder.glob("reference/*.onnx"), *folder.glob("reference/*.tflite"),
                    *folder.glob("reference/*.xml")])
    p50: dict[tuple[str, float], list[float]] = defaultdict(list)
    width: dict[tuple[str, float], list[float]] = defaultdict(list)
    took: dict[float, list[float]] = defaultdict(list)
    for _ in range(repeats):
        for path in paths:
            for seconds in durations:
                start = time.perf_counter()
                lat = run_bench(BenchSpec(path, runtime_for_suffix(path), threads,
                                          seconds=seconds, samples=False))["latency_ms"]
                took[seconds].append(time.perf_counter() - start)
                p50[(path.name, seconds)].append(lat["p50"])
                lo, hi = lat["p50_ci95"]
                width[(path.name, seconds)].append((hi - lo) / lat["p50"])
    print(f"\nbench stability: {repeats} runs per artifact and duration, {threads} thread(s)"
          f", load average {os.getloadavg()[0]:.2f} after")
    print(f"{'artifact':<28} {'seconds':>7} {'p50 ms (median)':>15} {'p50 spread':>10} "
          f"{'CI width':>9}")
    for path in paths:
        for seconds in durations:
            runs = p50[(path.name, seconds)]
            mid = statistics.median(runs)
            spread = (max(runs) - min(runs)) / mid
            print(f"{path.name:<28} {seconds:7.1f} {mid:15.4f} {spread:10.1%} "
                  f"{statistics.mean(width[(path.name, seconds)]):9.1%}")
    for seconds in durations:
        print(f"one bench at {seconds:.1f} s takes {statistics.median(took[seconds]):.2f} s "
              "(worker start-up included)")


def print_accuracy(report: dict[str, object]) -> None:
    """What a faster build must not lose: each stage's and each artifact's test accuracy."""
    def line(rows: object, key: str) -> str:
        return ", ".join(f"{r[key]} {r['accuracy']:.2%}" for r in rows  # type: ignore[attr-defined]
                         if isinstance(r, dict) and isinstance(r.get("accuracy"), float))
    print(f"accuracy: {line(report.get('stages', []), 'name')}")
    print(f"artifacts: {line(report.get('artifacts', []), 'path')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="raspberrypi")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: a temporary one, removed after)")
    parser.add_argument("--cached", action="store_true",
                        help="also time a second build that reuses the first one's cache")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a build setting, as edgekd build --set (repeatable)")
    parser.add_argument("--bench-repeats", type=int, default=0, metavar="N",
                        help="then bench every artifact N times per duration (see above)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekd-build-time-") as tmp:
        out = args.out or Path(tmp) / "build"
        runs = [("fresh build", True)] + ([("cached build", False)] if args.cached else [])
        for title, fresh in runs:
            before = os.getloadavg()[0]
            timeline, wall, tail, report = timed_build(args.target, out, fresh, args.set)
            after = os.getloadavg()[0]
            print_table(f"{title} ({args.target}{', ' if args.set else ''}"
                        f"{' '.join(args.set)})", timeline, wall, tail, (before, after),
                        rendering_seconds(report))
            print_accuracy(report)
        if args.bench_repeats:
            bench_stability(out / args.target, args.bench_repeats,
                            max(1, min(4, os.cpu_count() or 1)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
