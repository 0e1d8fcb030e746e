"""Your models: plain PyTorch. edgekd calls these factories by the names in edgekd.toml
([model] teacher / student) with the keyword arguments given there (*_args)."""

from torch import nn


def teacher(num_classes: int = 4) -> nn.Module:
    """A wider CNN for 16x16 RGB images (~30 k parameters): edgekd trains it first, then
    it teaches the student."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, num_classes))


def student(num_classes: int = 4) -> nn.Module:
    """The model to deploy: a small CNN (~3 k parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, num_classes))
