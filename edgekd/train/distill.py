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

The teacher's outputs come from :class:`~edgekd.train.teacher_cache.TeacherOutputs` (computed once
per sample, memory-mapped), so training never runs the teacher.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.train.teacher_cache import OnlineTeacher, TeacherOutputs, tap


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            *, temperature: float, alpha: float) -> torch.Tensor:
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


class LogitDistillation:
    """Hinton's loss against teacher logits held in memory (one row per training sample)."""

    def __init__(self, teacher_logits: torch.Tensor, *, temperature: float, alpha: float) -> None:
        self.teacher_logits = teacher_logits
        self.temperature = temperature
        self.alpha = alpha

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, self.teacher_logits[index].to(logits.device), labels,
                       temperature=self.temperature, alpha=self.alpha)

    def parameters(self) -> Iterable[nn.Parameter]:
        return ()


@dataclass(frozen=True)
class LayerPair:
    """A student layer and the teacher layer it learns to imitate (``named_modules`` names)."""

    student: str
    teacher: str

    def __str__(self) -> str:
        return f"{self.student}->{self.teacher}"


def _shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shape of each top-level layer of a sequential model, in order."""
    names = [name for name, _ in model.named_children()]
    with torch.no_grad(), tap(model, names) as seen:
        model.eval()(example)
    return {n: tuple(seen[n].shape[1:]) for n in names if isinstance(seen.get(n), torch.Tensor)}


def auto_pairs(student: nn.Module, teacher: nn.Module, example: torch.Tensor) -> list[LayerPair]:
    """The default pairing for sequential CNNs: at every spatial resolution that both models
    compute, the *last* top-level layer with a feature map at that resolution (the most
    processed features before the next downsampling), student with teacher."""
    if not isinstance(student, nn.Sequential) or not isinstance(teacher, nn.Sequential):
        raise ValueError("automatic layer pairs need nn.Sequential models; name the pairs in "
                         "the config (distill.pairs = [[\"student.layer\", \"teacher.layer\"]])")

    def last_per_resolution(model: nn.Module) -> dict[tuple[int, ...], str]:
        out: dict[tuple[int, ...], str] = {}
        for name, shape in _shapes(model, example).items():
            if len(shape) == 3:  # C, H, W
                out[shape[1:]] = name
        return out

    s, t = last_per_resolution(student), last_per_resolution(teacher)
    return [LayerPair(s[res], t[res]) for res in s if res in t]


def _projection(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """FitNets' regressor: a 1x1 conv (or a linear map for flat features) from the student's
    width to the teacher's; spatial sizes are matched by resizing before it."""
    if len(student_shape) == 3 and len(teacher_shape) == 3:
        return nn.Conv2d(student_shape[0], teacher_shape[0], 1)
    if len(student_shape) == 1 and len(teacher_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0])
    raise ValueError(f"cannot pair a feature of shape {student_shape} with one of shape "
                     f"{teacher_shape}: pair conv layers with conv layers, flat with flat")


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' spatial attention: mean over channels of the squared activation,
    flattened and L2-normalised per sample."""
    return F.normalize(feature.pow(2).mean(1).flatten(1), dim=1)


def _resize(feature: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if feature.shape[2:] == size:
        return feature
    return F.adaptive_avg_pool2d(feature, (size[0], size[1]))


class Distillation:
    """Logit distillation plus, for each layer pair, FitNets feature and/or attention-transfer
    terms, against the teacher's cached outputs::

        L = L_kd + feature_weight * mean_pairs MSE(proj(f_s), f_t)
                 + attention_weight * mean_pairs mean((A(f_s) - A(f_t))^2)

    The student's features are captured with forward hooks while it trains; call
    :meth:`close` (or use it as a context manager) to remove them.
    """

    def __init__(self, student: nn.Module, teacher: TeacherOutputs | OnlineTeacher,
                 pairs: Sequence[LayerPair], example: torch.Tensor, *, temperature: float,
                 alpha: float, feature_weight: float = 0.0, attention_weight: float = 0.0) -> None:
        self.teacher = teacher
        self.temperature, self.alpha = temperature, alpha
        self.feature_weight, self.attention_weight = feature_weight, attention_weight
        self.pairs = list(pairs) if (feature_weight or attention_weight) else []
        self._tap = tap(student, [p.student for p in self.pairs])
        self._seen = self._tap.__enter__()
        self.projections = nn.ModuleDict()
        if self.pairs and feature_weight:
            with torch.no_grad():  # one forward pass to learn the student's feature shapes
                training = student.training
                student.eval()(example)
                student.train(training)
            for i, p in enumerate(self.pairs):
                self.projections[str(i)] = _projection(
                    tuple(self._seen[p.student].shape[1:]),
                    tuple(self.teacher.features[p.teacher].shape[1:]))

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor) -> torch.Tensor:
        loss = kd_loss(logits, self.teacher.logits_for(index).to(logits.device), labels,
                       temperature=self.temperature, alpha=self.alpha)
        if not self.pairs:
            return loss
        feature_terms, attention_terms = [], []
        for i, p in enumerate(self.pairs):
            f_s = self._seen[p.student]
            f_t = self.teacher.feature_for(p.teacher, index).to(f_s.device)
            f_s_sized = _resize(f_s, tuple(f_t.shape[2:])) if f_s.dim() == 4 else f_s
            if self.feature_weight:
                feature_terms.append(F.mse_loss(self.projections[str(i)](f_s_sized), f_t))
            if self.attention_weight and f_s.dim() == 4:
                attention_terms.append(
                    (attention_map(f_s_sized) - attention_map(f_t)).pow(2).mean())
        if feature_terms:
            loss = loss + self.feature_weight * torch.stack(feature_terms).mean()
        if attention_terms:
            loss = loss + self.attention_weight * torch.stack(attention_terms).mean()
        return loss

    def parameters(self) -> Iterable[nn.Parameter]:
        return self.projections.parameters()

    def close(self) -> None:
        self._tap.__exit__(None, None, None)
