"""Training steps: supervised training, Hinton distillation, evaluation.

Distillation loss (Hinton et al., 2015)::

    L = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones
when T changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import Split


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            *, temperature: float, alpha: float) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


def train(model: nn.Module, data: Split, schedule: Schedule, *, seed: int,
          teacher_logits: torch.Tensor | None = None, temperature: float = 1.0,
          alpha: float = 0.0) -> nn.Module:
    """Train in place with Adam and a cosine learning rate; distil when teacher logits are given.

    ``teacher_logits`` are the teacher's outputs for every sample of ``data`` (computed once,
    since the inputs are not augmented, the teacher's answer never changes between epochs).
    """
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    opt = torch.optim.Adam(model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay)
    steps = schedule.epochs * -(-len(y) // schedule.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    model.train()
    for _ in range(schedule.epochs):
        for idx in _batches(len(y), schedule.batch_size, gen):
            logits = model(x[idx])
            if teacher_logits is None:
                loss = F.cross_entropy(logits, y[idx])
            else:
                loss = kd_loss(logits, teacher_logits[idx], y[idx],
                               temperature=temperature, alpha=alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


@torch.no_grad()
def logits_of(model: nn.Module, x: np.ndarray, batch_size: int = 512) -> torch.Tensor:
    model.eval()
    xs = torch.from_numpy(x)
    return torch.cat([model(xs[i:i + batch_size]) for i in range(0, len(xs), batch_size)])


def predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return logits_of(model, x).argmax(1).numpy()


def accuracy(model: nn.Module, data: Split) -> float:
    return float((predict(model, data.x) == data.y).mean())
