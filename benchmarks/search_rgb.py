"""Does ``edgekd search`` find a student as good as a hand-picked one, under half its latency?

On the 3-channel RGB project of benchmarks/rgb_recipe.py (coloured shapes, 6 classes, a
residual teacher, edgekd's MobileNetV2 as the student, ONNX Runtime):

1. builds the hand-picked student (MobileNetV2-0.35, stem stride 1, no structured pruning)
   and reads its INT8 accuracy and p50 latency from report.json;
2. searches width x stem stride x structured sparsity with ``max_p95_ms`` = half the
   hand-picked p50 (the same teacher, trained once in the shared stage cache);
3. prints every candidate, and whether the winner is within 1 point of the hand-picked
   accuracy, in how many trainings (and how many the untrained check saved)::

    python benchmarks/search_rgb.py                      # small: tens of minutes on 2 cores
    python benchmarks/search_rgb.py --per-class 400 --student-epochs 40 --trials 12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rgb_recipe import MODELS, PROJECT  # noqa: E402
from tests.rgb_data import CLASSES, shapes, write_folders  # noqa: E402

SEARCH = """
[search]
trials = {trials}
student_args = {{ width = [0.25, 0.35, 0.5], stem_stride = [1, 2] }}
prune_sparsity = [0.0, 0.3]
precision = ["int8"]

[budget]
max_p95_ms = {budget:.4f}
"""


def _project(folder: Path, data: Path, args: argparse.Namespace, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "models.py").write_text(MODELS)
    text = PROJECT.format(data=data.resolve(), seed=0, classes=len(CLASSES),
                          teacher_epochs=args.teacher_epochs,
                          student_epochs=args.student_epochs, prune_epochs=args.prune_epochs,
                          batch_size=args.batch_size, stem=1, threads=args.threads)
    # The hand-picked student is not pruned; the search explores structured ratios.
    text = text.replace("[prune]\n", "[prune]\nmethod = \"structured\"\nsparsity = 0.0\n")
    (folder / "edgekd.toml").write_text(text + extra)
    return folder / "edgekd.toml"


def _int8(report: dict) -> dict:
    a = next(a for a in report["artifacts"] if a["precision"] == "int8")
    return {"accuracy": a["accuracy"], "p50_ms": a["latency_ms"]["p50"],
            "size_kib": a["size_bytes"] / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--student-epochs", type=int, default=15)
    p.add_argument("--prune-epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    from edgekd.pipeline.api import build, load
    from edgekd.search.api import search

    work = args.out or Path(tempfile.mkdtemp(prefix="search_rgb_"))
    data = work / "data"
    if not data.exists():
        x, y = shapes(args.per_class, seed=1000)
        write_folders(data / "train", x, y)
        tx, ty = shapes(max(20, args.per_class // 4), seed=2000)
        write_folders(data / "test", tx, ty)
    # One project folder and output root: the search's candidates reuse the teacher the
    # hand-picked build trained (the stage cache in build/.cache).
    out, folder = work / "build", work / "project"

    start = time.perf_counter()
    hand_cfg = _project(folder, data, args)
    hand = _int8(build("x86-cpu", config=hand_cfg, out=out, cwd=folder).report)
    hand_s = time.perf_counter() - start
    budget = hand["p50_ms"] / 2
    print(f"hand-picked MobileNetV2-0.35: {100 * hand['accuracy']:.2f}%, p50 "
          f"{hand['p50_ms']:.3f} ms, {hand['size_kib']:.1f} KiB ({hand_s:.0f} s); "
          f"budget max_p95_ms = {budget:.3f}", flush=True)

    start = time.perf_counter()
    cfg = _project(folder, data, args, SEARCH.format(trials=args.trials, budget=budget))
    result = search("x86-cpu", project=load(cfg), out=out)
    took = time.perf_counter() - start
    s = result.section
    print("\n| # | candidate | state | INT8 accuracy | p50 ms | p95 ms | size KiB | trained |")
    print("|---|---|---|---|---|---|---|---|")
    for c in s["candidates"]:
        f = c["figures"]
        acc = f"{100 * f['accuracy']:.2f}%" if f["accuracy"] is not None else "—"
        mark = " **winner**" if c["number"] == s["winner"] else ""
        print(f"| {c['number']} | {c['label']}{mark} | {c['state']} | {acc} | "
              f"{f['p50_ms']:.3f} | {f['p95_ms']:.3f} | {f['size_bytes'] / 1024:.1f} | "
              f"{'yes' if c['trained'] else 'no'} |")
    best = next(c for c in s["candidates"] if c["number"] == s["winner"])["figures"]
    gap = 100 * (hand["accuracy"] - best["accuracy"])
    print(f"\nwinner: {100 * best['accuracy']:.2f}% at p50 {best['p50_ms']:.3f} ms "
          f"({hand['p50_ms'] / best['p50_ms']:.2f}x faster than hand-picked); "
          f"{gap:+.2f} points below hand-picked -> "
          f"{'within' if gap <= 1.0 else 'NOT within'} 1 point")
    print(f"{len(s['candidates'])} candidates, {s['trainings']} trainings, "
          f"{s['trainings_saved']} stopped untrained; search {took:.0f} s")
    print(f"why: {s['why']}\nprojects in {work}")


if __name__ == "__main__":
    main()
