"""What the teacher-output cache buys: distillation epochs with the teacher's logits and
features read from the memory-mapped cache vs running the teacher on every batch.

Same student, teacher, data, objective (logits + FitNets + attention transfer on the automatic
layer pairs) and steps; only where the teacher's outputs come from differs. Both variants run
alternately ``--repeat`` times in this one process and the table shows medians.

    python benchmarks/teacher_cache.py --epochs 3 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgekd import (
    Schedule,
    default_calibration_file,
    load_digits,
    set_seed,
    student_cnn,
    teacher_cnn,
    train_model,
)
from edgekd.train.distill import Distillation, auto_pairs
from edgekd.train.teacher_cache import OnlineTeacher, teacher_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits(default_calibration_file(), seed=0)
    set_seed(0)
    teacher = teacher_cnn().eval()  # untrained is fine: the cost of its forward pass is the same
    example = torch.from_numpy(data.train.x[:1])
    pairs = auto_pairs(student_cnn(), teacher, example)
    layers = [p.teacher for p in pairs]
    schedule = Schedule(args.epochs, 3e-3, 64)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        cached, _ = teacher_outputs(teacher, data.train.x, layers, Path(tmp))
        fill = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in Path(tmp).rglob("*.npy")) / 2**20
        sources = {"memory-mapped cache": cached,
                   "teacher on every batch": OnlineTeacher(teacher, data.train.x, layers)}
        seconds: dict[str, list[float]] = {name: [] for name in sources}
        for _ in range(args.repeat):
            for name, source in sources.items():
                set_seed(0)
                student = student_cnn()
                objective = Distillation(student, source, pairs, example, temperature=4.0,
                                         alpha=0.5, feature_weight=1.0, attention_weight=100.0)
                start = time.perf_counter()
                train_model(student, data.train, schedule, seed=0, objective=objective)
                seconds[name].append((time.perf_counter() - start) / args.epochs)
                objective.close()

    base = statistics.median(seconds["teacher on every batch"])
    table = Table("teacher outputs from", "s / epoch (median)", "runs", "speedup",
                  title=f"Distillation, {len(data.train)} samples, pairs "
                        f"{', '.join(map(str, pairs))}, {args.threads} threads")
    for name, values in seconds.items():
        med = statistics.median(values)
        table.add_row(name, f"{med:.3f}", " ".join(f"{v:.3f}" for v in values),
                      f"{base / med:.2f}x")
    console = Console()
    console.print(table)
    console.print(f"Filling the cache once took {fill:.2f} s and {size_mb:.1f} MB on disk "
                  f"(logits + layer {', '.join(layers)}); it saves "
                  f"{base - statistics.median(seconds['memory-mapped cache']):.3f} s per epoch.")


if __name__ == "__main__":
    main()
