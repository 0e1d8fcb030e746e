"""The built-in teacher and student CNNs for 8x8 single-channel images.

Both are plain ``nn.Sequential`` stacks of conv-BN-ReLU blocks, which every exporter
(torch.onnx, litert-torch) and quantizer here handles, and whose layers pruning can reach.
"""

from __future__ import annotations

from torch import nn


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


def teacher_cnn(num_classes: int = 10) -> nn.Sequential:
    """A wide CNN (~0.9 M parameters): 8x8 -> 4x4 -> 2x2 -> 512 -> classes."""
    return nn.Sequential(
        *_block(1, 64), *_block(64, 128), nn.MaxPool2d(2),
        *_block(128, 256), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256 * 2 * 2, 512), nn.ReLU(), nn.Dropout(0.3),
        nn.Linear(512, num_classes),
    )


def student_cnn(num_classes: int = 10) -> nn.Sequential:
    """A small CNN (~32 k parameters, 28x fewer than the teacher): one conv stem, then an MLP.

    Why this shape (measured with benchmarks/distill_vs_scratch.py, 4 seeds, same epochs for
    both): a conv-heavy student of this size reaches the teacher's accuracy on its own, so
    distillation has nothing left to add; a conv stem with an MLP head is capacity-limited in
    the way soft targets help (Hinton et al. distilled into MLPs too). The head's first layer
    has a wide fan-in (256) on purpose: per-output-channel quantization parameters cost ~28
    bytes per channel in TFLite, which would eat the INT8 size gain of narrow layers.
    """
    return nn.Sequential(
        *_block(1, 4),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 96), nn.ReLU(),
        nn.Linear(96, 64), nn.ReLU(),
        nn.Linear(64, num_classes),
    )


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, non-zero parameters)."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return total, nonzero
