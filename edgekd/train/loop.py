"""Training steps: one training loop for every stage (teacher, scratch student, distilled
student, pruning fine-tune), evaluation, and data-parallel training under ``torchrun``.

What a stage learns from is an :class:`Objective`: plain cross-entropy, or a distillation
objective (:mod:`edgekd.train.distill`) that compares the student with the teacher's cached outputs
for the same samples. The loop only knows which samples are in the batch.

Under ``torchrun`` (``torch.distributed`` initialised; gloo on CPU, nccl on GPU) the model is
wrapped in ``DistributedDataParallel`` and every global batch is sharded across the ranks, so
N processes take the same optimisation steps as one process with the same batch size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgekd.inputs.dataset import Split

StepHook = Callable[[int, int], None]  # (optimizer steps done, total steps) after each step


@dataclass(frozen=True)
class Schedule:
    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0


class Objective(Protocol):
    """The loss of one batch, given the student's logits, the batch's sample indices into the
    training split and its labels. ``parameters`` are extra trainable tensors (e.g. FitNets
    projections) that the optimiser must update with the model."""

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterable[nn.Parameter]: ...


class CrossEntropy:
    """Hard labels only: training from scratch."""

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels)

    def parameters(self) -> Iterable[nn.Parameter]:
        return ()


def set_seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside ``torchrun``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device() -> torch.device:
    """Where training runs: this rank's GPU when there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


@contextmanager
def distributed() -> Iterator[tuple[int, int]]:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``MASTER_ADDR``...): nccl with GPUs, gloo on CPU. Yields (rank, world size);
    a no-op for a plain single process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield world()
        return
    gpu = torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(device())
    dist.init_process_group("nccl" if gpu else "gloo")
    try:
        yield world()
    finally:
        dist.destroy_process_group()


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


class _Trainable(nn.Module):
    """The student and the objective's own parameters as one module, so that
    DistributedDataParallel averages the gradients of both."""

    def __init__(self, model: nn.Module, extra: Iterable[nn.Parameter]) -> None:
        super().__init__()
        self.model = model
        self.extra = nn.ParameterList(list(extra))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def train(model: nn.Module, data: Split, schedule: Schedule, *, seed: int,
          objective: Objective | None = None, on_step: StepHook | None = None) -> nn.Module:
    """Train ``model`` in place with Adam and a cosine learning rate.

    Every rank draws the same permutation (same seed) and takes its own slice of each global
    batch (the sharding a ``DistributedSampler`` does per epoch, done per batch so that the
    number of steps and the learning-rate schedule are the same for any number of ranks).
    """
    objective = objective or CrossEntropy()
    rank, size = world()
    dev = device()
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.from_numpy(data.x), torch.from_numpy(data.y)
    trainable = _Trainable(model, objective.parameters()).to(dev)
    params = list(trainable.parameters())
    opt = torch.optim.Adam(params, lr=schedule.lr, weight_decay=schedule.weight_decay)
    steps = schedule.epochs * -(-len(y) // schedule.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    net: nn.Module = trainable
    if size > 1:
        net = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[dev] if dev.type == "cuda" else None)
    model.train()
    done = 0
    for _ in range(schedule.epochs):
        for batch in _batches(len(y), schedule.batch_size, gen):
            idx = batch[rank::size] if size > 1 else batch
            if len(idx) == 0:  # a last batch smaller than the world: nothing for this rank
                idx = batch[:1]
            loss = objective(net(x[idx].to(dev)), idx, y[idx].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            if on_step:
                on_step(done, steps)
    if size > 1:  # BatchNorm statistics saw each rank's last batch: make rank 0's everyone's
        for buffer in trainable.buffers():
            dist.broadcast(buffer, src=0)
    trainable.to("cpu")
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


def predictor(model: nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    """A PyTorch model as a function of NumPy inputs to NumPy logits (what the torch-free
    measurements in :mod:`edgekd.measure` take)."""
    return lambda x: logits_of(model, x).numpy()
