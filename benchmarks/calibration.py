"""Which calibration to use by default: ONNX Runtime INT8 accuracy on the digits test split
for each calibration method x per-channel/per-tensor weights x calibration sample count.

Each student is trained from scratch with the build's recipe (seeds ``--seeds``), exported to
ONNX, quantized with ``edgekd.compress.quantize`` (no mixed-precision fallback), and run in the real
ONNX Runtime. The table shows mean test accuracy over seeds and the drop from FP32 in points.

    python benchmarks/calibration.py [--seeds 0 1 2] [--students student_cnn student_convnet]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from edgekd import (
    BuildConfig,
    QuantConfig,
    Schedule,
    default_calibration_file,
    load_digits,
    ort_accuracy,
    set_seed,
    to_onnx,
    train_model,
)
from edgekd.compress.quantize import quantize
from edgekd.train.models import STUDENTS

METHODS = ("minmax", "percentile", "entropy")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--students", nargs="+", default=["student_cnn", "student_convnet"])
    ap.add_argument("--samples", type=int, nargs="+", default=[50, 200])
    args = ap.parse_args()
    torch.set_num_threads(2)
    st = BuildConfig().student
    rows: dict[tuple[str, str, bool, int], list[float]] = {}
    fp32: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed in itertools.product(args.students, args.seeds):
            data = load_digits(default_calibration_file(), seed=seed)
            set_seed(seed)
            model = train_model(STUDENTS[name](), data.train,
                                Schedule(st.epochs, st.lr, st.batch_size), seed=seed)
            onnx_fp32 = to_onnx(model, data.test.x[:1], Path(tmp) / f"{name}{seed}.onnx")
            fp32.setdefault(name, []).append(ort_accuracy(onnx_fp32, data.test.x, data.test.y)[0])
            for method, per_channel, n in itertools.product(METHODS, (True, False),
                                                            args.samples):
                config = QuantConfig(method=method, per_channel=per_channel,
                                     calibration_samples=n, max_accuracy_drop=None)
                q = quantize(onnx_fp32, Path(tmp) / "q.onnx", data.calibration.x[:n], config)
                acc, _ = ort_accuracy(q.path, data.test.x, data.test.y)
                rows.setdefault((name, method, per_channel, n), []).append(acc)

    table = Table("student", "calibration", "weights", "samples", "INT8 accuracy %",
                  "drop vs FP32 (points)",
                  title=f"ONNX Runtime INT8 on digits, mean of seeds {args.seeds}")
    for (name, method, per_channel, n), accs in rows.items():
        base = statistics.mean(fp32[name])
        mean = statistics.mean(accs)
        table.add_row(name, method, "per-channel" if per_channel else "per-tensor", str(n),
                      f"{100 * mean:.2f}", f"{100 * (base - mean):+.2f}")
    for name, accs in fp32.items():
        table.add_row(name, "FP32", "", "", f"{100 * statistics.mean(accs):.2f}", "")
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
