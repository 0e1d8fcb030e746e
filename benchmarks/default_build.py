"""The default build's headline numbers, measured in one run, against the targets set for it.

    python benchmarks/default_build.py [--target raspberrypi] [--out build-bench]

Runs the full pipeline (fresh teacher unless --keep-cache) and prints: INT8 accuracy,
compression vs the teacher, INT8 vs FP32 size and p50 latency per runtime, distillation gain
and wall time.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from edgekd.pipeline.run import build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="raspberrypi")
    parser.add_argument("--out", type=Path, default=Path("build-bench"))
    parser.add_argument("--keep-cache", action="store_true")
    args = parser.parse_args()
    if not args.keep_cache:
        shutil.rmtree(args.out / ".cache", ignore_errors=True)
    start = time.perf_counter()
    report = build(args.target, out=args.out).report
    wall = time.perf_counter() - start

    console = Console()
    stages = {s["name"]: s for s in report["stages"]}
    arts = {(a["runtime"], a["precision"]): a for a in report["artifacts"]}
    table = Table("runtime", "INT8 acc.", "FP32 KiB", "INT8 KiB", "size ratio", "FP32 p50 ms",
                  "INT8 p50 ms", "INT8 speedup", title=f"{args.target}: INT8 vs FP32")
    for runtime in dict.fromkeys(r for r, _ in arts):
        f, i = arts[(runtime, "fp32")], arts[(runtime, "int8")]
        table.add_row(runtime, f"{i['accuracy']:.2%}", f"{f['size_bytes'] / 1024:.1f}",
                      f"{i['size_bytes'] / 1024:.1f}", f"{f['size_bytes'] / i['size_bytes']:.2f}×",
                      f"{f['latency_ms']['p50']:.4f}", f"{i['latency_ms']['p50']:.4f}",
                      f"{f['latency_ms']['p50'] / i['latency_ms']['p50']:.2f}×")
    console.print(table)
    s = report["summary"]
    goals = Table("measure", "value", "goal", title="Headline numbers")
    worst = min(a["accuracy"] for a in report["artifacts"] if a["precision"] == "int8")
    goals.add_row("final INT8 accuracy (worst runtime)", f"{worst:.2%}", ">= 97 %")
    goals.add_row("teacher / student parameters", f"{s['compression']:.1f}×", ">= 20×")
    goals.add_row("distilled - scratch", f"{s['distillation_gain_points']:+.2f} points", "> 0")
    goals.add_row("teacher accuracy", f"{stages['teacher']['accuracy']:.2%}", "")
    goals.add_row("build wall time", f"{wall:.1f} s", "< 180 s")
    console.print(goals)


if __name__ == "__main__":
    main()
