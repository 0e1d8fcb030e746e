"""Distillation objectives: what a student learns from its teacher.

- Logits (Hinton et al., 2015)::

      L_kd = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, y)

  The T^2 factor keeps the soft-target gradients on the same scale as the hard-label ones
  when T changes.
- Features (FitNets, Romero et al., 2015): mean squared error between a student layer's
  output, passed through a learned 1x1 projection (Conv1d for [N, C, T] maps, Conv2d for
  [N, C, H, W], a linear map for flat features), and the paired teacher layer's output.
- Attention transfer (Zagoruyko & Komodakis, 2017): for each layer pair, the squared L2
  distance between the L2-normalised attention maps ``mean_c |f|^2`` (over time for 1-D
  maps, over space for 2-D); no projection needed, only equal lengths or spatial sizes (the
  student's map is resized when they differ).

The teacher's outputs come from :class:`~edgekd.train.teacher_cache.TeacherOutputs` (computed once
per sample, memory-mapped), so training never runs the teacher.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from edgekd.errors import UsageError
from edgekd.settings.recipe import DistillConfig
from edgekd.train.inference import Batch, call
from edgekd.train.teacher_cache import OnlineTeacher, TeacherOutputs, tap


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            labels: torch.Tensor | None, *, temperature: float, alpha: float) -> torch.Tensor:
    """Hinton's loss; on unlabeled samples (``labels`` None) the soft term alone, at full
    weight (``alpha`` = 1)."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1),
                    reduction="batchmean", log_target=True)
    if labels is None:
        return temperature**2 * soft
    hard = F.cross_entropy(student_logits, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


class LogitDistillation:
    """Hinton's loss against teacher logits held in memory (one row per training sample)."""

    def __init__(self, teacher_logits: torch.Tensor, *, temperature: float, alpha: float) -> None:
        self.teacher_logits = teacher_logits
        self.temperature = temperature
        self.alpha = alpha

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor | None) -> torch.Tensor:
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


# Feature maps the feature and attention terms understand, by rank without the batch axis:
# 1-D [C, T] (audio, sensor signals) and 2-D [C, H, W] (images); flat [C] for FitNets only.
_MAP_RANKS = {2: "1-D [N, C, T]", 3: "2-D [N, C, H, W]"}
_HOW = ('name the pairs in the config (distill.pairs = [["student.layer", "teacher.layer"]]) '
        "with layers whose outputs are [N, C, T] or [N, C, H, W] feature maps")


def _shapes(model: nn.Module, example: Batch) -> dict[str, tuple[int, ...]]:
    """Output shape (without the batch axis) of each top-level layer, in the order forward
    calls them (an ``nn.Sequential``'s order; any other model's own, e.g. a ResNet's stem,
    stages and head, whatever order its ``__init__`` defines them in)."""
    names = [name for name, _ in model.named_children()]
    with torch.no_grad(), tap(model, names) as seen:
        call(model.eval(), example)
    return {n: tuple(v.shape[1:]) for n, v in seen.items() if isinstance(v, torch.Tensor)}


def _feature_maps(model: nn.Module, example: Batch, who: str
                  ) -> dict[tuple[int, ...], str]:
    """The last top-level layer at each feature-map resolution (``(T,)`` or ``(H, W)``),
    counting outputs from the first conv layer on (an embedding's [N, T, C] before it is not
    a channel-first map)."""
    convs = [m for m in model.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    if not convs:
        raise ValueError(f"automatic layer pairs need conv layers and the {who} has none; "
                         + _HOW)
    rank = convs[0].weight.dim() - 1  # Conv1d: [out, in, k] -> feature maps [C, T]
    if rank not in _MAP_RANKS:
        raise ValueError(f"automatic layer pairs support 1-D and 2-D conv feature maps; the "
                         f"{who}'s first conv ({type(convs[0]).__name__}) gives rank-{rank + 1} "
                         f"features (with the batch axis); " + _HOW)
    out: dict[tuple[int, ...], str] = {}
    started = False
    children = dict(model.named_children())
    for name, shape in _shapes(model, example).items():
        child = children[name]
        started = started or any(isinstance(m, nn.modules.conv._ConvNd)
                                 for m in child.modules())
        if started and len(shape) == rank:
            out[shape[1:]] = name
    return out


def auto_pairs(student: nn.Module, teacher: nn.Module, example: Batch) -> list[LayerPair]:
    """The default pairing for CNNs, 1-D ([N, C, T]) or 2-D ([N, C, H, W]), sequential or
    not (residual): at every resolution that both models compute, the *last* top-level layer
    (in forward's call order) with a feature map at that resolution (the most processed
    features before the next downsampling), student with teacher. Raises ``ValueError``
    saying why when there is no such pair."""
    s = _feature_maps(student, example, "student")
    t = _feature_maps(teacher, example, "teacher")
    pairs = [LayerPair(s[res], t[res]) for res in s if res in t]
    if not pairs:
        raise ValueError(f"the student's feature maps (sizes {sorted(s)}) and the teacher's "
                         f"({sorted(t)}) share no resolution; " + _HOW)
    return pairs


def _check_rank(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> None:
    """Refuse a pair whose features cannot be compared, saying what was found."""
    ranks = {len(student_shape), len(teacher_shape)}
    if len(ranks) > 1 or not ranks <= {1, 2, 3}:
        raise ValueError(
            f"cannot pair a feature of shape {student_shape} (rank {len(student_shape) + 1} "
            f"with the batch axis) with one of shape {teacher_shape} (rank "
            f"{len(teacher_shape) + 1}): both layers must give the same kind of feature, "
            "1-D [N, C, T] or 2-D [N, C, H, W] maps (flat [N, C] for the feature term only); "
            "set distill.pairs to such layers")


def _projection(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """FitNets' regressor: a 1x1 conv (1-D or 2-D, as the features are; a linear map for flat
    features) from the student's width to the teacher's; lengths or spatial sizes are matched
    by resizing before it."""
    _check_rank(student_shape, teacher_shape)
    if len(student_shape) == 3:
        return nn.Conv2d(student_shape[0], teacher_shape[0], 1)
    if len(student_shape) == 2:
        return nn.Conv1d(student_shape[0], teacher_shape[0], 1)
    return nn.Linear(student_shape[0], teacher_shape[0])


def attention_map(feature: torch.Tensor) -> torch.Tensor:
    """Zagoruyko & Komodakis' attention: mean over channels of the squared activation,
    flattened and L2-normalised per sample; over time for [N, C, T], over space for
    [N, C, H, W]."""
    return F.normalize(feature.pow(2).mean(1).flatten(1), dim=1)


def _resize(feature: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """A student feature map resized to the teacher's length (1-D: linear interpolation) or
    spatial size (2-D: adaptive average pooling)."""
    if feature.shape[2:] == size or feature.dim() not in (3, 4):
        return feature
    if feature.dim() == 3:
        return F.interpolate(feature, size=size[0], mode="linear", align_corners=False)
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
                 pairs: Sequence[LayerPair], example: Batch, *, temperature: float,
                 alpha: float, feature_weight: float = 0.0, attention_weight: float = 0.0) -> None:
        self.teacher = teacher
        self.temperature, self.alpha = temperature, alpha
        self.feature_weight, self.attention_weight = feature_weight, attention_weight
        self.pairs = list(pairs) if (feature_weight or attention_weight) else []
        self._tap = tap(student, [p.student for p in self.pairs])
        self._seen = self._tap.__enter__()
        self.projections = nn.ModuleDict()
        if self.pairs:
            with torch.no_grad():  # one forward pass to learn the student's feature shapes
                training = student.training
                call(student.eval(), example)
                student.train(training)
            for i, p in enumerate(self.pairs):
                shapes = (tuple(self._seen[p.student].shape[1:]),
                          tuple(self.teacher.features[p.teacher].shape[1:]))
                _check_rank(*shapes)
                if feature_weight:
                    self.projections[str(i)] = _projection(*shapes)

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor | None) -> torch.Tensor:
        loss = kd_loss(logits, self.teacher.logits_for(index).to(logits.device), labels,
                       temperature=self.temperature, alpha=self.alpha)
        if not self.pairs:
            return loss
        feature_terms, attention_terms = [], []
        for i, p in enumerate(self.pairs):
            f_s = self._seen[p.student]
            f_t = self.teacher.feature_for(p.teacher, index).to(f_s.device)
            f_s_sized = _resize(f_s, tuple(f_t.shape[2:]))
            if self.feature_weight:
                feature_terms.append(F.mse_loss(self.projections[str(i)](f_s_sized), f_t))
            if self.attention_weight and f_s.dim() in (3, 4):  # maps only, not flat features
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


def configured_pairs(d: DistillConfig, student: nn.Module, teacher: nn.Module,
           example: Batch) -> list[LayerPair]:
    """The configured layer pairs, else the automatic default; none when neither the feature
    nor the attention term is on."""
    if not (d.feature_weight or d.attention_weight):
        return []
    if d.pairs:
        for label, module, names in (("student", student, [s for s, _ in d.pairs]),
                                     ("teacher", teacher, [t for _, t in d.pairs])):
            known = dict(module.named_modules())
            for name in names:
                if name not in known:
                    raise UsageError(f"distill.pairs: the {label} has no layer {name!r}; its "
                                     f"layers: {', '.join(n for n in known if n)}")
        return [LayerPair(s, t) for s, t in d.pairs]
    try:
        return auto_pairs(student, teacher, example)
    except ValueError as exc:  # no shared 1-D/2-D feature maps: logits only, the log says why
        logging.getLogger("edgekd.pipeline.training").warning(  # the build's log, as before
            "distill: no automatic layer pairs (%s); distilling logits only", exc)
        return []
