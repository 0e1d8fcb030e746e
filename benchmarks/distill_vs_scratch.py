"""Does distillation pay off for the built-in student? Scratch vs distilled over several seeds.

Same student, same epochs and learning rate; the only difference is the loss (hard labels vs
Hinton's soft + hard). Prints one row per seed and the mean gain in points.

    python benchmarks/distill_vs_scratch.py --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import statistics

import torch
from rich.console import Console
from rich.table import Table

from edgekd.config import BuildConfig
from edgekd.data import load_digits
from edgekd.distill import LogitDistillation
from edgekd.models import student_cnn, teacher_cnn
from edgekd.resources import default_calibration_file
from edgekd.train import Schedule, accuracy, logits_of, set_seed, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    args = parser.parse_args()
    cfg = BuildConfig()
    torch.set_num_threads(2)
    table = Table("seed", "teacher", "scratch", "distilled", "gain (points)",
                  title=f"Digits, student {sum(p.numel() for p in student_cnn().parameters()):,} "
                        f"params, T={cfg.distill.temperature}, alpha={cfg.distill.alpha}, "
                        f"{cfg.distill.epochs} epochs each")
    gains = []
    for seed in args.seeds:
        data = load_digits(default_calibration_file(), seed=seed)
        t = cfg.teacher
        set_seed(seed)
        teacher = train(teacher_cnn(), data.train, Schedule(t.epochs, t.lr, t.batch_size),
                        seed=seed)
        soft = logits_of(teacher, data.train.x)
        d = cfg.distill
        set_seed(seed)
        scratch = train(student_cnn(), data.train, Schedule(d.epochs, d.lr, d.batch_size),
                        seed=seed)
        set_seed(seed)
        distilled = train(student_cnn(), data.train, Schedule(d.epochs, d.lr, d.batch_size),
                          seed=seed, objective=LogitDistillation(soft, temperature=d.temperature,
                                                               alpha=d.alpha))
        a_t, a_s, a_d = (accuracy(m, data.test) for m in (teacher, scratch, distilled))
        gains.append(100 * (a_d - a_s))
        table.add_row(str(seed), f"{a_t:.2%}", f"{a_s:.2%}", f"{a_d:.2%}", f"{gains[-1]:+.2f}")
    table.add_row("mean", "", "", "", f"{statistics.mean(gains):+.2f}")
    Console().print(table)


if __name__ == "__main__":
    main()
