"""What one training epoch reports: the :class:`EpochReport` the loop gives its callback,
the running tally of loss and training accuracy, and the progress events inside a long
epoch (:mod:`edgekd.common.progress`)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from edgekd.common.progress import EVERY_S, active, emit

# Batch progress events (edgekd.common.progress) only in epochs that take longer than this:
# a short epoch's own event comes soon enough.
LONG_EPOCH_S = 2.0

@dataclass(frozen=True)
class EpochReport:
    """What the loop tells its epoch callback after each epoch. ``loss`` and ``accuracy``
    are means over the epoch's training batches as they were trained on (augmented, in
    training mode): *training* figures, not test ones."""

    epoch: int  # 1-based
    epochs: int
    loss: float
    accuracy: float | None  # None when the labels are not class indices
    seconds: float  # since the stage started training


class Tally:
    """Mean loss and training accuracy over an epoch's batches."""

    def __init__(self) -> None:
        self.loss = self.correct = 0.0
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None
            ) -> None:
        n = len(logits)
        self.loss += float(loss.detach()) * n
        if labels is not None and labels.dtype == torch.int64 and logits.dim() == 2:
            self.correct += float((logits.detach().argmax(1) == labels).sum())
        self.seen += n

    def report(self, epoch: int, epochs: int, classes: bool, start: float) -> EpochReport:
        return EpochReport(epoch, epochs, self.loss / max(self.seen, 1),
                           self.correct / max(self.seen, 1) if classes else None,
                           time.perf_counter() - start)

    def metrics(self, classes: bool) -> dict[str, float]:
        out = {"loss": self.loss / max(self.seen, 1)}
        if classes:
            out["accuracy"] = self.correct / max(self.seen, 1)
        return out


class BatchEvents:
    """Progress events inside an epoch: at most one per :data:`EVERY_S`, and only when the
    epoch, at the pace of its batches so far, takes longer than :data:`LONG_EPOCH_S`. The
    batch's loss is read by the tally anyway, so an event costs no extra synchronisation."""

    def __init__(self, epochs: int, batches: int, classes: bool, start: float) -> None:
        self.epochs, self.batches, self.classes, self.start = epochs, batches, classes, start
        self.on = active()
        self.epoch_start = self.last = start
        self.current = 1

    def epoch(self, epoch: int) -> None:
        self.epoch_start = self.last = time.perf_counter()
        self.current = epoch

    def batch(self, done: int, tally: Tally) -> None:
        if not self.on or done >= self.batches:  # the epoch's own event follows
            return
        now = time.perf_counter()
        if (now - self.last < EVERY_S
                or (now - self.epoch_start) / done * self.batches <= LONG_EPOCH_S):
            return
        self.last = now
        emit("train", done, self.batches, "batch",
             {"epoch": self.current, "epochs": self.epochs, **tally.metrics(self.classes)},
             now - self.start)
