"""Training steps: one training loop for every stage (teacher, scratch student, distilled
student, pruning fine-tune), evaluation, and data-parallel training under ``torchrun``.

What a stage learns from is an :class:`Objective`: plain cross-entropy (with label
smoothing), or a distillation objective (:mod:`edgekd.train.distill`) that compares the student
with the teacher's cached outputs for the same samples. The loop only knows which samples are
in the batch.

The recipe (:class:`Schedule`) is what one would pick for small vision and audio CNNs: AdamW
(or SGD with Nesterov momentum) without weight decay on biases and normalisation weights, a
linear warm-up then cosine decay, label smoothing for hard labels, and light augmentation of
image batches (random shifts, optional flips; :func:`edgekd.train.augment.augment_batch`).
Without the warm-up and the BatchNorm-aware decay, MobileNetV2-0.35 stayed at chance on 32x32
RGB images (benchmarks/rgb_recipe.py measures the recipe).

Under ``torchrun`` (``torch.distributed`` initialised; gloo on CPU, nccl on GPU) the model is
wrapped in ``DistributedDataParallel`` and every global batch is sharded across the ranks, so
N processes take the same optimisation steps as one process with the same batch size.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from edgekd.common.interrupts import raise_if_interrupted
from edgekd.common.progress import emit
from edgekd.inputs.dataset import InputSpec, Split
from edgekd.train.augment import augment_inputs
from edgekd.train.epochs import BatchEvents, EpochReport, Tally

# What a trained model predicts lives beside the loop; importers of the loop keep them here.
from edgekd.train.inference import (  # noqa: F401
    Batch,
    accuracy,
    call,
    logits_of,
    model_input,
    predict,
    predictor,
    rows,
    to_device,
)

StepHook = Callable[[int, int], None]  # (optimizer steps done, total steps) after each step
OPTIMIZERS = ("adamw", "sgd")
NEEDS_LABELS = ("training on hard labels needs labeled samples, and the training split has "
                "none: give the data labels (y), or train with an objective that needs none")


@dataclass(frozen=True)
class Schedule:
    """How one stage trains. ``warmup``: the fraction of all steps over which the learning
    rate rises linearly from ``lr / warm-up steps`` to ``lr``, before a cosine decay to 0.
    ``weight_decay`` (decoupled for AdamW) skips biases and normalisation weights.
    ``label_smoothing`` applies to plain cross-entropy (hard labels) only. ``shift``: the
    largest random translation of an image batch, as a fraction of its height and width
    (rounded down to whole pixels);
    ``flip``: random horizontal flips (only where a mirrored sample keeps its label)."""

    epochs: int
    lr: float
    batch_size: int
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    warmup: float = 0.05
    label_smoothing: float = 0.0
    shift: float = 0.0
    flip: bool = False

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; allowed: "
                             f"{', '.join(OPTIMIZERS)}")


EpochHook = Callable[[EpochReport], None]
# The epoch callback of the stage being trained, for loops that a caller does not call
# directly (the pruning fine-tune inside edgekd.compress): see :func:`reporting_epochs`.
_EPOCH_HOOK: ContextVar[EpochHook | None] = ContextVar("edgekd_epoch_hook", default=None)


@contextmanager
def reporting_epochs(hook: EpochHook | None) -> Iterator[None]:
    """Every :func:`train` inside this context reports its epochs to ``hook`` (unless it is
    given its own ``on_epoch``)."""
    token = _EPOCH_HOOK.set(hook)
    try:
        yield
    finally:
        _EPOCH_HOOK.reset(token)


class Objective(Protocol):
    """The loss of one batch, given the student's logits, the batch's sample indices into the
    training split and its labels (None when the split is unlabeled: an objective that
    needs labels raises ``ValueError`` saying so). ``parameters`` are extra trainable
    tensors (e.g. FitNets projections) that the optimiser must update with the model."""

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor | None) -> torch.Tensor: ...

    def parameters(self) -> Iterable[nn.Parameter]: ...


class CrossEntropy:
    """Hard labels only: training from scratch, with label smoothing (Szegedy et al., 2016)
    when ``label_smoothing`` > 0."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError(NEEDS_LABELS)
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

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


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota
    (a container limited to 2 CPUs on a 64-core host reports 64 in ``os.cpu_count()``, and
    PyTorch would start 32+ threads)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def auto_threads() -> int:
    """Training threads when ``[train] threads = 0``: half the usable cores, at least one.

    Why half (benchmarks/train_threads.py): PyTorch's intra-op threads meet at a barrier
    after every operator, so one thread whose core is taken by another process stalls all of
    them. On a loaded 2-core machine the default (2 threads) took 803 s for a teacher that
    one thread trained in 47 s. benchmarks/train_threads.py on the shared 2-core build
    machine (load average 3.6 before it started): 2.3 s per epoch with one thread, 20.4 s
    with two; with two busy processes added, 3.8 s and 28.1 s. Half the cores leaves room
    for what else runs (a build also runs a benchmark worker; CI machines are shared) at the
    cost of some speed on a dedicated machine, where ``threads`` = the core count is
    right."""
    return max(1, usable_cores() // 2)


@contextmanager
def training_threads(threads: int) -> Iterator[int]:
    """Train with ``threads`` intra-op threads (0 = :func:`auto_threads`); yields the count
    and restores the previous one after. The inter-op pool is set too where PyTorch still
    allows it (only before its first parallel work, once per process)."""
    n = threads or auto_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    with suppress(RuntimeError):  # already started (or set): it stays as it is
        torch.set_num_interop_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[torch.Tensor]:
    return list(torch.randperm(n, generator=gen).split(batch_size))


def lr_factor(step: int, total: int, warmup: float) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total``, as a fraction of
    the peak: linear warm-up over ``warmup * total`` steps (at least one when ``warmup`` >
    0), then cosine decay towards 0."""
    warm = max(1, round(warmup * total)) if warmup > 0 else 0
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Weight decay on conv and linear weights only: biases and normalisation (BatchNorm,
    LayerNorm) scales are 1-D, and decaying them only fights the normalisation."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(module: nn.Module, schedule: Schedule) -> torch.optim.Optimizer:
    groups = param_groups(module, schedule.weight_decay)
    if schedule.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=schedule.lr, momentum=0.9, nesterov=True)
    return torch.optim.AdamW(groups, lr=schedule.lr)


class _Trainable(nn.Module):
    """The student and the objective's own parameters as one module, so that
    DistributedDataParallel averages the gradients of both."""

    def __init__(self, model: nn.Module, extra: Iterable[nn.Parameter]) -> None:
        super().__init__()
        self.model = model
        self.extra = nn.ParameterList(list(extra))

    def forward(self, batch: Batch) -> torch.Tensor:
        return call(self.model, batch)


def _image_inputs(specs: Sequence[InputSpec]) -> set[str]:
    """The inputs fed by name that shifts and flips may touch: the image inputs (a one-input
    model's batch is augmented when it is an NCHW batch)."""
    return {s.name for s in specs if s.role == "data" and s.kind == "image"}


def train(model: nn.Module, data: Split, schedule: Schedule, *, seed: int,
          objective: Objective | None = None, on_step: StepHook | None = None,
          on_epoch: EpochHook | None = None, specs: Sequence[InputSpec] = ()) -> nn.Module:
    """Train ``model`` in place as ``schedule`` says (see :class:`Schedule`).

    ``specs``: the model's inputs when it is fed by name (several inputs, token ids; see
    :mod:`edgekd.train.inference`): every batch feeds each data input's rows, fixed inputs
    at their value and state inputs at zeros; ``()``: one float input, ``model(x)``.
    Shifts and flips apply to image inputs only, never to token ids, masks or signals.
    ``data.y`` may be None (unlabeled) when the objective needs no labels.

    ``on_epoch`` (default: the hook of :func:`reporting_epochs`) is called after each epoch
    with an :class:`EpochReport`. Progress events (:mod:`edgekd.common.progress`, task
    ``train``) go out at the start, after each epoch and, in long epochs, every few batches.
    Every rank draws the same permutation (same seed) and takes its own slice of each global
    batch (the sharding a ``DistributedSampler`` does per epoch, done per batch so that the
    number of steps and the learning-rate schedule are the same for any number of ranks).
    Augmentation draws from its own generator, so the batches are the same with and without
    it.
    """
    objective = objective or CrossEntropy(schedule.label_smoothing)
    on_epoch = on_epoch or _EPOCH_HOOK.get()
    rank, size = world()
    dev = device()
    gen = torch.Generator().manual_seed(seed)
    aug_gen = torch.Generator().manual_seed(seed + 1)
    x = model_input(data, specs)
    y = None if data.y is None else torch.from_numpy(data.y)
    n = len(data)
    if y is None and isinstance(objective, CrossEntropy):
        raise ValueError(NEEDS_LABELS)
    images = _image_inputs(specs)
    trainable = _Trainable(model, objective.parameters()).to(dev)
    opt = _optimizer(trainable, schedule)
    steps = schedule.epochs * -(-n // schedule.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: lr_factor(i, max(steps, 1), schedule.warmup))
    net: nn.Module = trainable
    if size > 1:
        net = nn.parallel.DistributedDataParallel(
            trainable, device_ids=[dev] if dev.type == "cuda" else None)
    model.train()
    done, start = 0, time.perf_counter()
    classes = y is not None and y.dtype == torch.int64
    per_epoch = -(-n // schedule.batch_size)
    events = BatchEvents(schedule.epochs, per_epoch, classes, start)
    emit("train", 0, schedule.epochs, "epoch")
    for epoch in range(schedule.epochs):
        tally = Tally()
        events.epoch(epoch + 1)
        for b, batch in enumerate(_batches(n, schedule.batch_size, gen), 1):
            idx = batch[rank::size] if size > 1 else batch
            if len(idx) == 0:  # a last batch smaller than the world: nothing for this rank
                idx = batch[:1]
            xb = augment_inputs(rows(x, idx), images, aug_gen, shift=schedule.shift,
                                flip=schedule.flip)
            logits = net(to_device(xb, dev))
            labels = None if y is None else y[idx].to(dev)
            loss = objective(logits, idx, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            tally.add(loss, logits, labels)
            events.batch(b, tally)
            raise_if_interrupted()  # a Ctrl-C a finalizer swallowed stops training here
            if on_step:
                on_step(done, steps)
        report = tally.report(epoch + 1, schedule.epochs, classes, start)
        emit("train", epoch + 1, schedule.epochs, "epoch", tally.metrics(classes),
             report.seconds)
        if on_epoch:
            on_epoch(report)
    if size > 1:  # BatchNorm statistics saw each rank's last batch: make rank 0's everyone's
        for buffer in trainable.buffers():
            dist.broadcast(buffer, src=0)
    trainable.to("cpu")
    model.eval()
    return model
