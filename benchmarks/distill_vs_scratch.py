"""Does distillation pay off for the built-in student? Scratch vs each distillation variant
over several seeds.

Same student, epochs and learning rate for every column; only the loss differs: hard labels
(scratch), Hinton's logits, logits + FitNets features, logits + attention transfer, and all
three (weights from ``--feature-weight`` / ``--attention-weight``, layer pairs automatic).
Prints test accuracy per seed and the mean gain over scratch in points.

    python benchmarks/distill_vs_scratch.py --seeds 0 1 2
    python benchmarks/distill_vs_scratch.py --student student_tiny --views 16 --epochs 30

``--views N`` trains every column (scratch included, with the mixed labels) on the training
split plus N augmented copies (edgekd.train.augment: 1-pixel shifts + mixup), the teacher's outputs
for all of them cached.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgekd import (
    BuildConfig,
    Schedule,
    accuracy,
    default_calibration_file,
    load_digits,
    set_seed,
    train_model,
)
from edgekd.train.augment import SoftTargets, training_views
from edgekd.train.distill import Distillation, auto_pairs
from edgekd.train.models import STUDENTS, count_params, teacher_cnn
from edgekd.train.teacher_cache import teacher_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--feature-weight", type=float, default=1.0)
    parser.add_argument("--attention-weight", type=float, default=100.0)
    parser.add_argument("--student", default="student_cnn", choices=sorted(STUDENTS))
    parser.add_argument("--views", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=BuildConfig().distill.epochs)
    args = parser.parse_args()
    cfg = BuildConfig()
    d = replace(cfg.distill, epochs=args.epochs, views=args.views)
    make_student = STUDENTS[args.student]
    torch.set_num_threads(2)
    variants = {"logits": (0.0, 0.0), "+ FitNets": (args.feature_weight, 0.0),
                "+ attention": (0.0, args.attention_weight),
                "+ both": (args.feature_weight, args.attention_weight)}
    acc: dict[str, list[float]] = {name: [] for name in ["teacher", "scratch", *variants]}
    for seed in args.seeds:
        data = load_digits(default_calibration_file(), seed=seed)
        t = cfg.teacher
        set_seed(seed)
        teacher = train_model(teacher_cnn(), data.train,
                              Schedule(t.epochs, t.lr, t.batch_size), seed=seed)
        acc["teacher"].append(accuracy(teacher, data.test))
        schedule = Schedule(d.epochs, d.lr, d.batch_size)
        split, soft = training_views(data.train, d.views, mixup=d.mixup,
                                     num_classes=data.num_classes, seed=seed)
        set_seed(seed)
        scratch = train_model(make_student(), split, schedule, seed=seed,
                              objective=SoftTargets(soft) if d.views else None)
        acc["scratch"].append(accuracy(scratch, data.test))
        example = torch.from_numpy(data.train.x[:1])
        pairs = auto_pairs(make_student(), teacher, example)
        with tempfile.TemporaryDirectory() as tmp:
            outputs, _ = teacher_outputs(teacher, split.x, [p.teacher for p in pairs],
                                         Path(tmp))
            for name, (fw, aw) in variants.items():
                set_seed(seed)
                student = make_student()
                objective = Distillation(student, outputs, pairs, example,
                                         temperature=d.temperature, alpha=d.alpha,
                                         feature_weight=fw, attention_weight=aw)
                train_model(student, split, schedule, seed=seed, objective=objective)
                objective.close()
                acc[name].append(accuracy(student, data.test))

    ratio = count_params(teacher_cnn())[0] / count_params(make_student())[0]
    table = Table("seed", *acc, title=f"Digits test accuracy (%), student {ratio:.0f}x smaller "
                  f"than the teacher ({args.student}), T={d.temperature}, alpha={d.alpha}, "
                  f"{d.epochs} epochs each, {d.views} augmented views, "
                  f"pairs {', '.join(map(str, pairs))}")
    for i, seed in enumerate(args.seeds):
        table.add_row(str(seed), *(f"{100 * v[i]:.2f}" for v in acc.values()))
    means = {k: 100 * statistics.mean(v) for k, v in acc.items()}
    table.add_row("mean", *(f"{m:.2f}" for m in means.values()))
    table.add_row("gain vs scratch (points)", "", "",
                  *(f"{means[k] - means['scratch']:+.2f}" for k in variants))
    Console().print(table)


if __name__ == "__main__":
    main()
