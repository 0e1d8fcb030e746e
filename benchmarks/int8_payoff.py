"""Does ONNX Runtime INT8 pay off, and which INT8 form? FP32 and every INT8 variant of
:mod:`edgekd.compress.variants`, side by side in one run, on the default digits student and
on MobileNetV2-224 (random weights: latency does not depend on them), 2 threads.

Each INT8 file is timed against FP32 *paired* (both in one worker, alternating rounds:
:func:`edgekd.measure.bench.run_pair`), the speed-up with its 95 % interval
(:func:`edgekd.measure.payoff.paired_speedup`); p50 is the median of the per-round medians.
The last column says which file ``ship = "fastest"`` would ship (accuracy is not checked
here: MobileNetV2's random weights have none; the build verifies each variant).

    python benchmarks/int8_payoff.py [--seconds 2] [--threads 2] [--only digits|mobilenet]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from edgekd.backends.from_torch import to_onnx
from edgekd.compress.quantize import quantize
from edgekd.compress.variants import build_settings, make_variants
from edgekd.measure.bench import BenchSpec, PairSpec, run_pair
from edgekd.measure.payoff import paired_speedup
from edgekd.settings.config import QuantConfig


def digits_student() -> tuple[torch.nn.Module, np.ndarray]:
    """The default student (student_cnn), from the default build's weights when present,
    else trained briefly here; its calibration samples (standardised digits)."""
    from sklearn.datasets import load_digits

    from edgekd.train.models import student_cnn

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None] / 16.0
    x = (x - x.mean()) / x.std()
    net = student_cnn()
    weights = Path("out/x86-cpu/student.safetensors")
    if weights.exists():
        from safetensors.torch import load_file

        net.load_state_dict(load_file(weights))
    else:
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        xt, yt = torch.from_numpy(x), torch.from_numpy(bunch.target)
        for _ in range(60):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt), yt).backward()
            opt.step()
    return net.eval(), x[:200]


def mobilenet() -> tuple[torch.nn.Module, np.ndarray]:
    """MobileNetV2-224, random weights; calibration on smooth structured images (random
    noise would calibrate ranges no real image has)."""
    from edgekd.train.models import mobilenet_v2

    torch.manual_seed(0)
    net = mobilenet_v2(num_classes=1000).eval()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:224, 0:224] / 224.0
    images = []
    for _ in range(32):
        f = rng.uniform(1, 6, size=(3, 2))
        phase = rng.uniform(0, 6.3, size=3)
        images.append(np.stack([np.sin(f[c, 0] * 6.3 * xx + f[c, 1] * 6.3 * yy + phase[c])
                                for c in range(3)]))
    return net, np.asarray(images, np.float32)


def table(name: str, net: torch.nn.Module, calib: np.ndarray, threads: int,
          seconds: float) -> None:
    config = QuantConfig(max_accuracy_drop=None)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fp32 = to_onnx(net, calib[:2], folder / "fp32.onnx")
        built = quantize(fp32, folder / "int8.onnx", calib, config).path
        variants = [("build", build_settings(config), built)] + [
            (v.name, v.settings, v.path) for v in make_variants(fp32, folder / "v", calib, config)]
        shape = (1, *calib.shape[1:])

        def spec(path: Path) -> BenchSpec:
            return BenchSpec(path, "onnxruntime", threads, warmup=20, runs=None,
                             seconds=seconds, input_shape=shape)

        rows = []
        fp32_p50 = []
        for vname, _, path in variants:
            p = paired_speedup(run_pair(PairSpec(spec(fp32), spec(path), seconds=seconds)))
            fp32_p50.append(p["p50_ms"][0])
            rows.append((vname, p, path.stat().st_size))
        print(f"\n{name}, ONNX Runtime, {threads} threads, paired {seconds:g} s each")
        print(f"{'file':30} {'p50 ms':>9} {'speed-up vs FP32':>17} {'95 % CI':>15} "
              f"{'verdict':>22} {'KiB':>8}")
        print(f"{'FP32':30} {np.median(fp32_p50):9.3f} {'1.00×':>17} {'':>15} {'':>22} "
              f"{fp32.stat().st_size / 1024:8.1f}")
        for vname, p, size in rows:
            lo, hi = p["speedup_ci95"]
            print(f"{vname:30} {p['p50_ms'][1]:9.3f} {p['speedup']:16.2f}× "
                  f"{f'{lo:.2f}–{hi:.2f}×':>15} {p['verdict']:>22} {size / 1024:8.1f}")
        best = max(rows, key=lambda r: r[1]["speedup"])
        ships = "FP32" if best[1]["verdict"] == "slower" else best[0]
        print(f'ship = "fastest" would ship: {ships} (fastest INT8: {best[0]}, '
              f"{best[1]['speedup']:.2f}×)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("digits", "mobilenet"))
    args = parser.parse_args()
    if args.only != "mobilenet":
        table("digits student (student_cnn, 1x8x8)", *digits_student(), args.threads,
              args.seconds)
    if args.only != "digits":
        table("MobileNetV2-224 (random weights)", *mobilenet(), args.threads, args.seconds)


if __name__ == "__main__":
    main()
