"""Distillation objectives: what a student learns from its teacher.

- Logits (Hinton et al., 2015)::

      L_kd = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

  The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones
  when T changes.
- Features (FitNets, Romero et al., 2015): mean squared error between a student layer's
  output, passed through a learned 1x1 projection (a linear map for flat features) when the
  widths differ, and the paired teacher layer's output.
- Attention transfer (Zagoruyko & Komodakis, 2017): for each layer pair, the squared L2
  distance between the L2-normalised spatial attention maps ``mean_c |f|^2``; no projection
  needed, only equal spatial sizes (the student's map is resized when they differ).

The teacher's outputs come from :class:`~edgekd.teacher_cache.TeacherOutputs` (computed once
per sample, memory-mapped), so training never runs the teacher.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            *, temperature: float, alpha: float) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


class LogitDistillation:
    """Hinton's loss against precomputed teacher logits (one row per training sample)."""

    def __init__(self, teacher_logits: torch.Tensor, *, temperature: float, alpha: float) -> None:
        self.teacher_logits = teacher_logits
        self.temperature = temperature
        self.alpha = alpha

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, self.teacher_logits[index], labels,
                       temperature=self.temperature, alpha=self.alpha)

    def parameters(self) -> Iterable[nn.Parameter]:
        return ()
