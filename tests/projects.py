"""Real user projects on disk for the bring-your-own tests: model code, weights, data files
and an edgekd.toml, the way a user would lay them out."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

# Quick settings for every test project: real stages, few epochs, short benchmarks.
QUICK = """
[teacher]
epochs = 2
[student]
epochs = 2
[distill]
epochs = 2
[prune]
finetune_epochs = 1
[bench]
warmup = 2
runs = 10
seconds = 0
[robustness]
noise_sigmas = []
corruptions = []
signal_snr_db = []
signal_gains = []
signal_shifts = []
token_dropout = []
token_replace = []
"""

MODELS = '''
"""A user's models: plain PyTorch, nothing from edgekd."""
import torch
from torch import nn


def teacher(num_classes=10, channels=1):
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.LazyLinear(num_classes))


class Student(nn.Module):  # not an nn.Sequential: distillation pairs must be named
    def __init__(self, num_classes=10, channels=1):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def student(num_classes=10, channels=1):
    model = Student(num_classes, channels)
    return model


class Regressor(nn.Module):
    """1-D sensor signals [3, 64] -> 4 values: not a classifier."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(3, 8, 5, padding=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool1d(8), nn.Flatten(), nn.Linear(64, 4))

    def forward(self, x):
        return self.net(x)


def regressor():
    return Regressor()


def broken():
    raise ValueError("the factory is broken on purpose")
'''


# The residual block of the 3-channel teachers (not an nn.Sequential) that tests write into
# their models.py: a stride-2 conv pair with a 1x1 projection as the skip connection.
RESIDUAL_BLOCK = '''
import torch.nn.functional as F
from torch import nn


class Block(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Conv2d(cin, cout, 1, 2, bias=False)

    def forward(self, x):
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.skip(x))
'''


def digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw digits [N, 1, 8, 8] (0..16) and labels, as a user's own .npz would hold them."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.images.astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    return (x[:n], y[:n]) if n else (x, y)


def write(root: Path, toml: str, *, quick: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "models.py").write_text(MODELS)
    body = textwrap.dedent(toml).strip() + "\n"
    (root / "edgekd.toml").write_text(body + (QUICK if quick else ""))
    return root / "edgekd.toml"


def classifier_project(root: Path, *, n: int = 600) -> Path:
    """Distill the user's teacher (trained by edgekd: no weights given) into their student,
    on a .npz of digits with labels; test split held out of train."""
    x, y = digits(n)
    (root / "data").mkdir(parents=True, exist_ok=True)
    np.savez(root / "data" / "digits.npz", x=x, y=y)
    return write(root, """
        target = "x86-cpu"
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "data/digits.npz"
        scale = 0.0625
        mean = 0.3
        std = 0.4
        """)


def trained_regressor(root: Path) -> Path:
    """A finished non-classifier on 1-D signals: safetensors weights, unlabeled .npy data."""
    import importlib.util

    import torch
    from safetensors.torch import save_file

    write(root, "")
    spec = importlib.util.spec_from_file_location("user_models", root / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    rng = np.random.default_rng(0)
    t = np.linspace(0, 6.28, 64, dtype=np.float32)
    x = np.stack([np.sin(t * (1 + k % 5) + rng.uniform(0, 6)) for k in range(3 * 160)])
    signals = (x.reshape(160, 3, 64) + 0.05 * rng.standard_normal((160, 3, 64))
               ).astype(np.float32)
    np.save(root / "signals.npy", signals)
    # Trained to a smooth target (each channel's mean and spread, and their sum): the INT8
    # check of untrained weights would measure noise in near-zero outputs, not quantization.
    torch.manual_seed(0)
    model = mod.regressor()
    xs = torch.from_numpy(signals)
    target = torch.cat([xs.mean(2)[:, :2], xs.std(2)[:, :1], xs.sum((1, 2))[:, None] / 64], 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(xs), target).backward()
        opt.step()
    (root / "weights").mkdir(exist_ok=True)
    save_file(model.eval().state_dict(), root / "weights" / "regressor.safetensors")
    return write(root, """
        target = "raspberrypi"
        [model]
        student = "models.py:regressor"
        student_weights = "weights/regressor.safetensors"
        task = "regression"
        [data]
        test = "signals.npy"
        """)
