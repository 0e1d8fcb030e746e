"""Data augmentation: random shifts and flips of image batches while a stage trains
(:func:`augment_batch`, the training recipe's light augmentation), and augmented training
views for distillation: "function matching" (Beyer et al., 2022, *A good
teacher is patient and consistent*).

A teacher that has memorised its training set gives near one-hot answers on it, so soft
targets on the training images alone carry little more than the labels. On inputs it has not
seen (shifted digits, mixtures of two digits) its answers carry the "dark knowledge" a small
student can learn from. ``training_views`` appends ``views`` augmented copies of the training
split (a random shift of up to one pixel, then mixup with a random partner); the teacher's
outputs for all of them are computed once and cached like any other sample's, and the scratch
baseline trains on exactly the same inputs with the mixed labels (:class:`SoftTargets`), so
the comparison stays fair. The original samples come first, so sample ``i < len(split)`` is
the same in the augmented split and in the original one.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.inputs.dataset import Split


def random_shift(x: np.ndarray, rng: np.random.Generator, max_pixels: int = 1) -> np.ndarray:
    """Translate each NCHW image by up to ``max_pixels`` in each direction, filling with the
    image's own minimum (the background once preprocessed)."""
    out = np.empty_like(x)
    h, w = x.shape[2:]
    for i, (dy, dx) in enumerate(rng.integers(-max_pixels, max_pixels + 1, (len(x), 2))):
        out[i] = x[i].min()
        out[i, :, max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
            x[i, :, max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def augment_batch(x: torch.Tensor, gen: torch.Generator, *, shift: float, flip: bool
                  ) -> torch.Tensor:
    """A randomly shifted (and, with ``flip``, half of the time mirrored) copy of an NCHW
    image batch; any other batch is returned as it is.

    Each image moves by up to ``shift`` of its height and width in each direction, rounded
    down to whole pixels (0.1: 3 pixels on 32x32, as CIFAR's pad-and-crop; none on 8x8,
    where one pixel is 12 % of the image), the edge rows and columns repeated into the space
    it leaves. Flips are left right only, and off by default: they change the
    meaning of digits, letters and arrows."""
    if x.dim() != 4 or not (shift > 0 or flip):
        return x
    n, _, h, w = x.shape
    rows, cols = torch.arange(h).expand(n, h), torch.arange(w).expand(n, w)
    py, px = int(shift * h), int(shift * w)
    if py or px:
        rows = (rows + torch.randint(-py, py + 1, (n, 1), generator=gen)).clamp(0, h - 1)
        cols = (cols + torch.randint(-px, px + 1, (n, 1), generator=gen)).clamp(0, w - 1)
    if flip:
        mirrored = torch.rand(n, generator=gen) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    return x[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
             rows[:, None, :, None], cols[:, None, None, :]]


def augment_inputs(batch: torch.Tensor | dict[str, torch.Tensor], images: set[str],
                   gen: torch.Generator, *, shift: float, flip: bool
                   ) -> torch.Tensor | dict[str, torch.Tensor]:
    """:func:`augment_batch` on one call's inputs: the batch of a one-input model, or only
    the ``images`` of a model fed by name (token ids, masks and other inputs as they are:
    a shifted sentence or mask means nothing)."""
    if not isinstance(batch, dict):
        return augment_batch(batch, gen, shift=shift, flip=flip)
    return {k: augment_batch(v, gen, shift=shift, flip=flip) if k in images else v
            for k, v in batch.items()}


def training_views(split: Split, views: int, *, mixup: float, num_classes: int,
                   seed: int) -> tuple[Split, np.ndarray]:
    """The split followed by ``views`` augmented copies, and soft labels (rows sum to 1).

    ``mixup`` is the Beta(a, a) parameter of the mixing weight (0 = shifts only); the weight of
    the sample's own image is at least 0.5, so its hard label stays the dominant class.
    """
    rng = np.random.default_rng(seed)
    onehot = np.eye(num_classes, dtype=np.float32)[split.y]
    if views == 0:  # the split itself, every input of it
        return split, onehot
    if split.extra:
        raise ValueError("augmented views (shifts and mixup) are made of one image input, and "
                         f"this model takes {len(split.extra)} ({', '.join(split.extra)})")
    xs, labels = [split.x], [onehot]
    for _ in range(views):
        x = random_shift(split.x, rng)
        soft = onehot
        if mixup > 0:
            partner = rng.permutation(len(x))
            lam = rng.beta(mixup, mixup, len(x)).astype(np.float32)
            lam = np.maximum(lam, 1 - lam)
            x = lam[:, None, None, None] * x + (1 - lam[:, None, None, None]) * x[partner]
            soft = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[partner]
        xs.append(x.astype(np.float32))
        labels.append(soft)
    soft_labels = np.concatenate(labels)
    x_all = np.concatenate(xs)
    index = np.concatenate([split.index] * (views + 1))
    return Split(x_all, soft_labels.argmax(1).astype(np.int64), index), soft_labels


class SoftTargets:
    """Cross-entropy against per-sample label distributions (mixup labels): the scratch
    baseline's loss on augmented views."""

    def __init__(self, soft_labels: np.ndarray) -> None:
        self.soft_labels = torch.from_numpy(soft_labels)

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor | None) -> torch.Tensor:
        return F.cross_entropy(logits, self.soft_labels[index].to(logits.device))

    def parameters(self) -> Iterable[nn.Parameter]:
        return ()
