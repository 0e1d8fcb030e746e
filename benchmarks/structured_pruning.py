"""Does pruning make the student faster? Dense vs structured (50 % of channels) vs unstructured
(50 % of weights), side by side in one run, on ONNX Runtime FP32 and INT8.

For each student (the default ``student_cnn`` and the conv-heavy ``student_convnet``): distil
it from ``teacher_cnn``, then prune a copy each way and fine-tune it with the same distillation
loss; export every model to ONNX (FP32 and static INT8 QDQ); measure its test accuracy (in
PyTorch), its latency with ``edgekd.measure.bench.run_bench`` (fresh process, batch 1, 2 threads;
the median of ``--repeats`` alternating rounds) and the weights left in the ONNX initializers.

    python benchmarks/structured_pruning.py [--seeds 0 1 2] [--width 32] [--repeats 3] [--schedules]

``--schedules`` adds the comparison that chose ``PruneConfig``'s defaults: one-shot vs gradual
unstructured pruning of the default student at several sparsities (accuracy only).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from edgekd import (
    BenchSpec,
    BuildConfig,
    Dataset,
    LogitDistillation,
    PruneConfig,
    default_calibration_file,
    load_digits,
    prune_model,
    quantize_int8,
    run_bench,
    to_onnx,
)
from edgekd.compress.structured import macs
from edgekd.train.loop import Objective, Schedule, accuracy, logits_of, set_seed, train
from edgekd.train.models import count_params, student_cnn, student_convnet, teacher_cnn

THREADS = 2


def onnx_weights(path: Path) -> int:
    """Elements in the ONNX file's initializers (weights as the runtime sees them)."""
    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def constant(objective: Objective) -> Callable[[nn.Module], Objective]:
    """The same objective whatever the student (logit distillation ignores its widths)."""
    return lambda _student: objective


def latency(path: Path, seed: int) -> float:
    return float(run_bench(BenchSpec(path, "onnxruntime", THREADS, warmup=50, runs=300,
                                     seconds=1.0, seed=seed, samples=False))["latency_ms"]["p50"])


def distil(make: Callable[[int], nn.Module], data: Dataset, kd: LogitDistillation,
           cfg: BuildConfig, seed: int) -> nn.Module:
    d = cfg.distill
    set_seed(seed)
    return train(make(data.num_classes), data.train, Schedule(d.epochs, d.lr, d.batch_size),
                 seed=seed, objective=kd)


def measure(students: dict[str, Callable[[int], nn.Module]], seed: int, cfg: BuildConfig,
            tmp: Path, table: Table, drops: dict[str, list[float]], repeats: int) -> None:
    data = load_digits(default_calibration_file(), seed=seed)
    t = cfg.teacher
    set_seed(seed)
    teacher = train(teacher_cnn(data.num_classes), data.train,
                    Schedule(t.epochs, t.lr, t.batch_size), seed=seed)
    d = cfg.distill
    kd = LogitDistillation(logits_of(teacher, data.train.x), temperature=d.temperature,
                           alpha=d.alpha)
    example = torch.from_numpy(data.test.x[:1])
    calibration = data.calibration.x[:cfg.quant.calibration_samples]
    variants = {
        "structured 50 % channels": replace(cfg.prune, method="structured", schedule="oneshot",
                                            sparsity=0.5),
        "unstructured 50 % weights": replace(cfg.prune, method="unstructured", sparsity=0.5),
    }
    for name, make in students.items():
        dense = distil(make, data, kd, cfg, seed)
        models = {"dense (distilled)": dense}
        for label, pcfg in variants.items():
            models[label], _ = prune_model(dense, pcfg, data.train, objective_for=constant(kd),
                                           example=example, seed=seed + 1,
                                           batch_size=d.batch_size)
        files = {}
        for label, model in models.items():
            stem = tmp / f"{name}-{seed}-{label.split()[0]}"
            fp32 = to_onnx(model, data.test.x[:1], stem.with_suffix(".fp32.onnx"))
            files[label] = {"fp32": fp32, "int8": quantize_int8(
                fp32, stem.with_suffix(".int8.onnx"), calibration,
                per_channel=cfg.quant.per_channel)}
        # This VM drifts between runs: measure every file once per round, alternating, and
        # take each file's median p50 over the rounds.
        rounds: dict[Path, list[float]] = {}
        for _ in range(repeats):
            for pair in files.values():
                for path in pair.values():
                    rounds.setdefault(path, []).append(latency(path, seed))
        base: dict[str, float] = {}
        for label, model in models.items():
            acc = accuracy(model, data.test)
            ms = {prec: statistics.median(rounds[path]) for prec, path in files[label].items()}
            base = base or {"acc": acc, **ms}
            if label.startswith("structured"):
                drops.setdefault(name, []).append(100 * (base["acc"] - acc))
            table.add_row(
                name if label.startswith("dense") else "", str(seed), label,
                f"{count_params(model)[1]:,}", f"{onnx_weights(files[label]['fp32']):,}",
                f"{macs(model, example):,}", f"{acc:.2%}", f"{100 * (acc - base['acc']):+.2f}",
                f"{1000 * ms['fp32']:.1f}", f"{base['fp32'] / ms['fp32']:.2f}×",
                f"{1000 * ms['int8']:.1f}", f"{base['int8'] / ms['int8']:.2f}×")
        table.add_section()


def schedules(seeds: list[int], cfg: BuildConfig) -> Table:
    """One-shot vs gradual unstructured pruning of the default student (accuracy only)."""
    table = Table("sparsity", "frequency", "seed", "distilled", "one-shot", "gradual",
                  title=f"Unstructured pruning of student_cnn, {cfg.prune.finetune_epochs} "
                        "fine-tune epochs with distillation: test accuracy")
    for seed in seeds:
        data = load_digits(default_calibration_file(), seed=seed)
        t, d = cfg.teacher, cfg.distill
        set_seed(seed)
        teacher = train(teacher_cnn(data.num_classes), data.train,
                        Schedule(t.epochs, t.lr, t.batch_size), seed=seed)
        kd = LogitDistillation(logits_of(teacher, data.train.x), temperature=d.temperature,
                               alpha=d.alpha)
        dense = distil(student_cnn, data, kd, cfg, seed)
        example = torch.from_numpy(data.test.x[:1])
        for sparsity, frequency in [(0.5, 10), (0.8, 10), (0.9, 5), (0.9, 10), (0.9, 20)]:
            accs = []
            for schedule in ("oneshot", "gradual"):
                p = PruneConfig(schedule=schedule, sparsity=sparsity, frequency=frequency)
                model, _ = prune_model(dense, p, data.train, objective_for=constant(kd),
                                       example=example, seed=seed + 1, batch_size=d.batch_size)
                accs.append(accuracy(model, data.test))
            table.add_row(f"{sparsity:.0%}", str(frequency), str(seed),
                          f"{accuracy(dense, data.test):.2%}", f"{accs[0]:.2%}",
                          f"{accs[1]:.2%}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--width", type=int, default=32, help="student_convnet's width")
    parser.add_argument("--repeats", type=int, default=3,
                        help="latency rounds per file (median of the p50s)")
    parser.add_argument("--schedules", action="store_true",
                        help="also compare one-shot and gradual unstructured pruning")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    cfg = BuildConfig()
    students: dict[str, Callable[[int], nn.Module]] = {"student_cnn": student_cnn,
                f"student_convnet (width {args.width})":
                    lambda n: student_convnet(n, width=args.width)}
    table = Table("student", "seed", "model", "non-zero params", "ONNX weights", "MACs",
                  "accuracy", "Δ points", "ORT FP32 p50 µs", "FP32 speed-up",
                  "ORT INT8 p50 µs", "INT8 speed-up",
                  title=f"Pruning on digits, ONNX Runtime, batch 1, {THREADS} threads "
                        f"(speed-up and Δ vs the dense distilled student of the same seed; "
                        f"p50: median over {args.repeats} alternating rounds)")
    drops: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            measure(students, seed, cfg, Path(tmp), table, drops, args.repeats)
    console = Console(width=200)
    console.print(table)
    for name, d in drops.items():
        console.print(f"{name}: structured pruning lost {statistics.mean(d):+.2f} accuracy "
                      f"points on average over seeds {args.seeds} (negative = gained)")
    if args.schedules:
        console.print(schedules(args.seeds, cfg))


if __name__ == "__main__":
    main()
