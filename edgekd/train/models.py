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


def student_convnet(num_classes: int = 10, width: int = 32) -> nn.Sequential:
    """A conv-heavy student (~98 k parameters, ~2.4 M multiply-adds at width 32; the teacher's
    layout at half its width, 9x fewer parameters): 8x8 -> 4x4 -> 2x2 -> classes.

    For structured pruning: ``student_cnn`` runs in ~10 µs, where runtime overhead, not its
    one 4-channel conv, sets the latency, so removing channels cannot make it faster. Here the
    convs at 8x8 and 4x4 do the work (benchmarks/structured_pruning.py measures both).
    """
    return nn.Sequential(
        *_block(1, width), *_block(width, 2 * width), nn.MaxPool2d(2),
        *_block(2 * width, 4 * width), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * width * 2 * 2, num_classes),
    )


def student_tiny(num_classes: int = 10) -> nn.Sequential:
    """A very small student (~2.4 k parameters, 370x fewer than the teacher): a one-channel
    conv stem and a 32-unit MLP. Where distillation has room to help on digits:
    ``benchmarks/distill_vs_scratch.py --student student_tiny --views 16``."""
    return nn.Sequential(*_block(1, 1), nn.Flatten(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, num_classes))


# Students selectable by name (``BuildConfig.student_model``).
STUDENTS = {"student_cnn": student_cnn, "student_convnet": student_convnet,
            "student_tiny": student_tiny}


def student_model(name: str, num_classes: int = 10) -> nn.Sequential:
    if name not in STUDENTS:
        raise ValueError(f"unknown student model {name!r}; allowed: {', '.join(STUDENTS)}")
    return STUDENTS[name](num_classes)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand -> 3x3 depthwise -> 1x1 linear projection (+ skip)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):  # type: ignore[no-untyped-def]
        return x + self.block(x) if self.residual else self.block(x)


def mobilenet_v2(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3,
                 stem_stride: int = 2) -> nn.Sequential:
    """MobileNetV2 (Sandler et al. 2018) with a width multiplier, defined here because this
    machine has no CPU torchvision. For speed measurements at realistic input sizes
    (96x96, 224x224): 3.5 M parameters and ~300 MFLOPs at width 1.0, 224x224.

    ``stem_stride = 1`` for small inputs (64 px or less, as CIFAR variants do): the ImageNet
    layout halves a 32x32 image five times, to 1x1, with 8 channels in the early stages at
    width 0.35; on 32x32 RGB shapes a stride-1 stem learned 50 % where the stride-2 one
    learned 22 % in 10 epochs (benchmarks/rgb_recipe.py)."""
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    def c(v: float) -> int:  # channels rounded to a multiple of 8, as in the paper's code
        return max(8, int(v * width + 4) // 8 * 8)

    layers: list[nn.Module] = [nn.Conv2d(in_channels, c(32), 3, stem_stride, 1, bias=False),
                               nn.BatchNorm2d(c(32)), nn.ReLU6()]
    cin = c(32)
    for t, ch, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            layers.append(InvertedResidual(cin, c(ch), s if i == 0 else 1, t))
            cin = c(ch)
    last = max(1280, c(1280))
    layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(last, num_classes)]
    return nn.Sequential(*layers)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(all parameters, non-zero parameters)."""
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int((p != 0).sum()) for p in model.parameters())
    return total, nonzero
