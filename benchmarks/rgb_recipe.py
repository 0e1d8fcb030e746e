"""Does edgekd's training recipe learn a real small CNN on RGB images, and does distillation
add to it? Real ``edgekd build`` projects on a 3-channel 32x32 data set made here.

For each seed, a project folder as a user would write it: class folders of PNGs
(tests/rgb_data.py: coloured shapes, 6 classes, the colours random so only the shape tells
the class), a residual teacher that is not an ``nn.Sequential`` (defined in the project's
models.py), edgekd's own MobileNetV2-0.35 as the student, and ONNX Runtime as the runtime.
Each build trains teacher -> scratch -> distilled -> pruned, quantizes to INT8 and verifies;
the table is read from each build's report.json::

    python benchmarks/rgb_recipe.py                        # 3 seeds, small: a few minutes
    python benchmarks/rgb_recipe.py --per-class 400 --student-epochs 40   # the issue's size

Prints, per seed and as mean ± sd over the seeds: teacher, scratch, distilled, pruned and
INT8 test accuracy, and the gain of distillation over scratch in points.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rgb_data import CLASSES, shapes, write_folders  # noqa: E402

MODELS = '''
"""The user's teacher: a small ResNet (residual blocks, not an nn.Sequential)."""
from torch import nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                   nn.BatchNorm2d(cout)))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ResNet(nn.Module):
    def __init__(self, num_classes=6, width=24):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.layer1 = Block(width, width, 2)          # 16x16
        self.layer2 = Block(width, 2 * width, 2)      # 8x8
        self.layer3 = Block(2 * width, 4 * width, 2)  # 4x4
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.head(x.mean((2, 3)))


def teacher(num_classes=6, width=24):
    return ResNet(num_classes, width)
'''

PROJECT = """
runtimes = ["onnxruntime"]
seed = {seed}
# This measures accuracy: a student that learned little has flat logits whose INT8 top-1
# flips easily, and the build would stop there instead of reporting it.
min_agreement = 0.0

[model]
teacher = "models.py:teacher"
teacher_args = {{ num_classes = {classes} }}
student = "edgekd.train.models:mobilenet_v2"
student_args = {{ num_classes = {classes}, width = 0.35, in_channels = 3, stem_stride = {stem} }}

[data]
train = "{data}/train"
test = "{data}/test"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]

[teacher]
epochs = {teacher_epochs}
lr = 3e-3
[student]
epochs = {student_epochs}
batch_size = {batch_size}
[distill]
epochs = {student_epochs}
batch_size = {batch_size}
[prune]
finetune_epochs = {prune_epochs}
[train]
threads = {threads}
[bench]
warmup = 2
runs = 10
seconds = 0
[robustness]
noise_sigmas = []
corruptions = []
"""


def project(folder: Path, data: Path, seed: int, args: argparse.Namespace) -> Path:
    folder.mkdir(parents=True)
    (folder / "models.py").write_text(MODELS)
    (folder / "edgekd.toml").write_text(PROJECT.format(  # one data set for every seed
        data=data.resolve(), seed=seed, classes=len(CLASSES), teacher_epochs=args.teacher_epochs,
        student_epochs=args.student_epochs, prune_epochs=args.prune_epochs,
        batch_size=args.batch_size, stem=args.stem_stride,
        threads=args.threads))
    return folder


def figures(report: dict) -> dict[str, float]:
    acc = {s["name"]: s["accuracy"] for s in report["stages"]}
    int8 = [a["accuracy"] for a in report["artifacts"]
            if a["precision"] == "int8" and a["accuracy"] is not None]
    out = {"teacher": acc["teacher"], "scratch": acc["student_scratch"],
           "distilled": acc["student_distilled"], "pruned": acc["student_pruned"],
           "int8": int8[0] if int8 else float("nan")}
    out["gain"] = 100 * (out["distilled"] - out["scratch"])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--per-class", type=int, default=100, help="training images per class")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--student-epochs", type=int, default=30, help="scratch and distilled")
    p.add_argument("--prune-epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32,
                   help="students' batch size (more steps per epoch on a small data set)")
    p.add_argument("--threads", type=int, default=0, help="train.threads (0 = automatic)")
    p.add_argument("--stem-stride", type=int, default=1,
                   help="the MobileNetV2 student's first stride (1 for 32x32 inputs)")
    p.add_argument("--out", type=Path, default=None, help="keep the projects here")
    args = p.parse_args()

    from edgekd.pipeline.api import build

    work = args.out or Path(tempfile.mkdtemp(prefix="rgb_recipe_"))
    data = work / "data"
    if not data.exists():
        x, y = shapes(args.per_class, seed=1000)
        write_folders(data / "train", x, y)
        tx, ty = shapes(max(20, args.per_class // 4), seed=2000)
        write_folders(data / "test", tx, ty)
    rows = []
    for seed in range(args.seeds):
        start = time.perf_counter()
        folder = project(work / f"seed{seed}", data, seed, args)
        result = build(config=folder / "edgekd.toml", out=folder / "build", cwd=folder)
        rows.append(figures(result.report))
        print(f"seed {seed}: {time.perf_counter() - start:.0f} s "
              + json.dumps({k: round(v, 4) for k, v in rows[-1].items()}), flush=True)
    keys = ("teacher", "scratch", "distilled", "pruned", "int8")
    print(f"\n{len(CLASSES)} classes (chance {100 / len(CLASSES):.1f} %), "
          f"{args.per_class * len(CLASSES)} training images 32x32 RGB; epochs: teacher "
          f"{args.teacher_epochs}, students {args.student_epochs}, prune fine-tune "
          f"{args.prune_epochs}; student batch {args.batch_size}; MobileNetV2-0.35\n")
    print("| seed | " + " | ".join(keys) + " | distill gain (points) |")
    print("|---" * (len(keys) + 2) + "|")
    for seed, r in enumerate(rows):
        print(f"| {seed} | " + " | ".join(f"{100 * r[k]:.1f} %" for k in keys)
              + f" | {r['gain']:+.1f} |")

    def ms(k: str, scale: float = 100.0) -> str:
        values = [scale * r[k] for r in rows]
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.1f} ± {sd:.1f}"

    print("| mean ± sd | " + " | ".join(ms(k) + " %" for k in keys)
          + f" | {ms('gain', 1.0)} |")
    print(f"\nprojects in {work}")


if __name__ == "__main__":
    main()
