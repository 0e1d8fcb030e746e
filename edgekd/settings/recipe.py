"""The training sections of the build settings: ``[teacher]`` / ``[student]``
(:class:`TrainConfig`), ``[distill]`` (:class:`DistillConfig`) and ``[train]``
(:class:`TrainRunConfig`: threads), with the recipe they share (optimizer, warm-up, weight
decay, label smoothing, image augmentation). Part of :mod:`edgekd.settings.config`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from edgekd.settings.typed import OneOf


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


# The same names as edgekd.train.loop.OPTIMIZERS (settings may not import torch).
OPTIMIZERS = ("adamw", "sgd")
Optimizer = Annotated[str, OneOf(OPTIMIZERS, "optimizer")]
# The same names as edgekd.train.transformer_kd.ATTENTION_LOSSES / EMBEDDING_LOSSES.
ATTENTION_LOSSES = ("kl", "value_relation")
AttentionLoss = Annotated[str, OneOf(ATTENTION_LOSSES, "attention loss")]
EMBEDDING_LOSSES = ("cosine", "mse")
EmbeddingLoss = Annotated[str, OneOf(EMBEDDING_LOSSES, "embedding loss")]


def _check_recipe(c: TrainConfig | DistillConfig) -> None:
    """The training-recipe fields TrainConfig and DistillConfig share."""
    _check(c.optimizer in OPTIMIZERS,
           f"unknown optimizer {c.optimizer!r}; allowed: {', '.join(OPTIMIZERS)}")
    _check(c.weight_decay >= 0, f"weight_decay must be >= 0, got {c.weight_decay}")
    _check(0.0 <= c.warmup < 1.0,
           f"warmup must be in [0, 1) (a fraction of the steps), got {c.warmup}")
    _check(0.0 <= c.shift < 0.5,
           f"shift must be in [0, 0.5) (a fraction of the image size), got {c.shift}")
    _check(isinstance(c.flip, bool), f"flip must be true or false, got {c.flip!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Supervised training (teacher, and the student trained from scratch).

    The recipe (see :mod:`edgekd.train.loop`; measured with benchmarks/rgb_recipe.py):
    ``optimizer`` adamw (or sgd, Nesterov momentum 0.9) with decoupled ``weight_decay`` on
    conv/linear weights only (never biases or BatchNorm), a linear ``warmup`` over that
    fraction of the steps then cosine decay, ``label_smoothing`` of the hard labels, and for
    image data random shifts of up to ``shift`` of the image size (rounded down to whole
    pixels) and, with ``flip``,
    horizontal flips (off: a mirrored digit or arrow is another class)."""

    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 64
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.05
    warmup: float = 0.05
    label_smoothing: float = 0.1
    # Up to 10 % of the size, rounded down: 3 px on 32x32, none on 8x8 digits, where a
    # 1-pixel shift cost student_tiny 5 points (AdamW, warm-up and smoothing alone: +0.8).
    shift: float = 0.1
    flip: bool = False

    def __post_init__(self) -> None:
        _check(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        _check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(0.0 <= self.label_smoothing < 1.0,
               f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        _check_recipe(self)


@dataclass(frozen=True)
class TrainRunConfig:
    """``[train]``: how training uses this machine. ``threads``: PyTorch's intra-op threads
    while the stages train; 0 = automatic, half the cores this process may use (affinity and
    cgroup quota), at least one: see :func:`edgekd.train.loop.auto_threads` for the
    measurement behind it."""

    threads: int = 0

    def __post_init__(self) -> None:
        _check(self.threads >= 0, f"train.threads must be >= 0 (0 = automatic), got "
                                  f"{self.threads}")


@dataclass(frozen=True)
class DistillConfig:
    """Distillation (see :mod:`edgekd.train.distill`): Hinton's logit loss
    ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``, plus FitNets feature
    (``feature_weight``) and attention-transfer (``attention_weight``) terms over layer
    ``pairs`` (``[[student_layer, teacher_layer], ...]``; empty = automatic for sequential
    CNNs: the last layer at each spatial resolution both models share).

    ``views`` > 0 trains the scratch and the distilled student on the training split plus
    that many augmented copies (1-pixel shifts, then mixup with Beta(``mixup``, ``mixup``)),
    see :mod:`edgekd.train.augment`."""

    temperature: float = 4.0
    alpha: float = 0.5
    epochs: int = 30
    lr: float = 3e-3
    batch_size: int = 64
    # Measured (benchmarks/distill_vs_scratch.py, 3 seeds, built-in student): logits alone
    # +0.52 points over scratch, + FitNets +0.62, + attention transfer +0.83, both +0.83.
    feature_weight: float = 0.0
    attention_weight: float = 100.0
    # Each pair's shape is checked in __post_init__, whose message names the two roles.
    pairs: tuple[tuple[str, ...], ...] = ()
    views: int = 0
    mixup: float = 1.0
    # Transformer encoders (edgekd.train.transformer_kd): [[student_layer, teacher_layer]]
    # 0-based (empty: uniform), hidden-state MSE and attention ("kl" | "value_relation")
    # weights, relation heads (0: automatic), and the output loss of non-classifiers.
    layer_map: tuple[tuple[int, ...], ...] = ()
    hidden_weight: float = 1.0
    attention_loss: AttentionLoss = "kl"
    transformer_attention_weight: float = 1.0
    relation_heads: int = 0
    embedding_loss: EmbeddingLoss = "cosine"
    embedding_projection: bool = False
    # The training recipe, as in TrainConfig (no label smoothing: the soft targets are the
    # teacher's). The shifts move the student's input away from the one the teacher's
    # cached outputs are for; small shifts keep the class and still help (rgb_recipe.py).
    optimizer: Optimizer = "adamw"
    weight_decay: float = 0.05
    warmup: float = 0.05
    shift: float = 0.1
    flip: bool = False

    def __post_init__(self) -> None:
        _check(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        _check(0.0 <= self.alpha <= 1.0, f"alpha must be in [0, 1], got {self.alpha}")
        _check(self.epochs >= 1, f"distill epochs must be >= 1, got {self.epochs}")
        _check(self.lr > 0, f"distill lr must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.feature_weight >= 0,
               f"feature_weight must be >= 0, got {self.feature_weight}")
        _check(self.attention_weight >= 0,
               f"attention_weight must be >= 0, got {self.attention_weight}")
        pairs = tuple(tuple(p) for p in self.pairs)  # TOML/JSON give lists
        _check(all(len(p) == 2 and all(isinstance(n, str) and n for n in p) for p in pairs),
               f"pairs must be [[student_layer, teacher_layer], ...], got {self.pairs!r}")
        object.__setattr__(self, "pairs", pairs)
        _check(self.views >= 0, f"views must be >= 0, got {self.views}")
        _check(self.mixup >= 0, f"mixup must be >= 0 (0 = shifts only), got {self.mixup}")
        layer_map = tuple(tuple(p) for p in self.layer_map)
        _check(all(len(p) == 2 and all(isinstance(n, int) and not isinstance(n, bool)
                                       and n >= 0 for n in p) for p in layer_map),
               "layer_map must be [[student_layer, teacher_layer], ...] with 0-based layer "
               f"numbers, got {self.layer_map!r}")
        object.__setattr__(self, "layer_map", layer_map)
        _check(self.hidden_weight >= 0, f"hidden_weight must be >= 0, got {self.hidden_weight}")
        _check(self.attention_loss in ATTENTION_LOSSES,
               f"unknown attention_loss {self.attention_loss!r}; allowed: "
               f"{', '.join(ATTENTION_LOSSES)}")
        _check(self.transformer_attention_weight >= 0, "transformer_attention_weight must be "
               f">= 0, got {self.transformer_attention_weight}")
        _check(self.relation_heads >= 0,
               f"relation_heads must be >= 0 (0 = automatic), got {self.relation_heads}")
        _check(self.embedding_loss in EMBEDDING_LOSSES,
               f"unknown embedding_loss {self.embedding_loss!r}; allowed: "
               f"{', '.join(EMBEDDING_LOSSES)}")
        _check_recipe(self)
