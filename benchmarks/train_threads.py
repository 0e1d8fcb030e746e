"""How many threads should training use? Seconds per epoch of one training stage for 1
thread, ``[train] threads = 0`` (automatic: edgekd.train.loop.auto_threads) and all usable
cores, on an idle machine and with a background CPU load started (and stopped) here.

The stage: the residual teacher of benchmarks/rgb_recipe.py (a user's small ResNet) on
32x32 RGB images, with edgekd's training loop and recipe::

    python benchmarks/train_threads.py                 # ~2 minutes on 2 cores
    python benchmarks/train_threads.py --images 1200 --epochs 3 --load 2

"Idle" means no load started here; the 1-minute load average before each row says what else
was running.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import rgb_recipe  # noqa: E402

from edgekd.inputs.dataset import Split  # noqa: E402
from edgekd.train.loop import (  # noqa: E402
    Schedule,
    auto_threads,
    set_seed,
    train,
    training_threads,
    usable_cores,
)
from tests.rgb_data import shapes  # noqa: E402

BUSY = "while True: pass"


def seconds_per_epoch(split: Split, threads: int, epochs: int) -> float:
    user = types.ModuleType("user_models")
    exec(rgb_recipe.MODELS, user.__dict__)  # noqa: S102 - the benchmark's own model code
    times: list[float] = []
    with training_threads(threads):
        set_seed(0)
        model = user.teacher(6)
        last = [0.0]

        def lap(report: object) -> None:
            times.append(report.seconds - last[0])  # type: ignore[attr-defined]
            last[0] = report.seconds  # type: ignore[attr-defined]

        train(model, split, Schedule(epochs, 3e-3, 64, shift=0.1), seed=0, on_epoch=lap)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--load", type=int, default=0,
                   help="busy processes for the loaded rows (default: one per usable core)")
    args = p.parse_args()
    x, y = shapes(-(-args.images // 6), seed=0)
    split = Split(((x.astype(np.float32) / 255 - 0.5) / 0.25), y, np.arange(len(y)))
    cores = usable_cores()
    counts = sorted({1, auto_threads(), cores})
    print(f"usable cores {cores} (os.cpu_count {os.cpu_count()}), automatic threads "
          f"{auto_threads()}; {len(y)} images 32x32 RGB, median of {args.epochs} epochs\n")
    print("| machine | threads | s / epoch | load avg before |")
    print("|---|---|---|---|")
    for loaded in (False, True):
        busy = []
        if loaded:
            busy = [subprocess.Popen([sys.executable, "-c", BUSY])
                    for _ in range(args.load or cores)]
            time.sleep(1.0)
        try:
            for n in counts:
                load = os.getloadavg()[0]
                s = seconds_per_epoch(split, n, args.epochs)
                label = f"{n} (auto)" if n == auto_threads() else str(n)
                what = f"{len(busy)} busy process(es) started" if loaded else "no load started"
                print(f"| {what} | {label} | {s:.2f} | {load:.1f} |", flush=True)
        finally:
            for proc in busy:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
