"""Transformer distillation (TinyBERT, Jiao et al. 2020; MiniLM, Wang et al. 2020) for a
teacher and a student ``transformers`` encoder of different depth and width.

- **Layer map** from the models' configs (``num_hidden_layers``): uniform by default,
  student layer ``i`` <- teacher layer ``round((i + 1) * Lt / Ls) - 1`` (halves rounded up;
  4 -> 2 layers: ``[(0, 1), (1, 3)]``, the last layer of each block of teacher layers),
  or an explicit list of ``[student_layer, teacher_layer]`` pairs (0-based). The embedding
  outputs are always paired too (TinyBERT's embedding-layer loss).
- **Hidden states**: per mapped pair (and the embeddings), the MSE between the student's
  states through a learned ``Linear`` (student width -> teacher width; the identity at the
  start when the widths are equal) and the teacher's, over the tokens the attention mask
  keeps.
- **Attention** (``attention_loss``): ``"kl"`` is TinyBERT's term as a distribution match,
  ``KL(A_t || A_s)`` per query token of each mapped layer, per head when the head counts
  are equal, else between the head-averaged distributions; ``"value_relation"`` is MiniLM's
  ``KL(softmax(V_t V_t^T / sqrt(d_t)) || softmax(V_s V_s^T / sqrt(d_s)))`` over
  ``relation_heads`` relation heads, which works for any head counts (both widths must
  divide by it). Both are computed from the query/key/value projections captured by
  forward hooks (``softmax(Q K^T / sqrt(d) + mask)``), so they do not depend on the
  attention implementation (eager, SDPA) and see no attention dropout.
- **Outputs**: for ``task = "classification"`` Hinton's logit loss (:func:`~edgekd.train.
  distill.kd_loss`; soft targets only when the batch has no labels); for any other task the
  model output is an embedding (e.g. a mean-pooled sentence vector) matched to the
  teacher's by ``embedding_loss`` (``"cosine"``: ``1 - cos``, or ``"mse"``), through a
  learned projection when the widths differ or ``embedding_projection`` is set. It needs
  no labels: an encoder distils on unlabeled text.

States are captured with forward hooks on the first submodule of each model that is a
``transformers`` ``PreTrainedModel`` with an ``encoder.layer`` list (users wrap HF models in
their own module whose forward returns logits only). The mask is the ``attention_mask`` that
module is called with. The teacher runs online, in eval mode and without gradients, on the
same batch, built from the training split's arrays at the batch's ``index``.

``transformers`` is imported inside functions only: ``import edgekd`` stays fast.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.inputs.dataset import InputSpec, Split
from edgekd.settings.recipe import ATTENTION_LOSSES, EMBEDDING_LOSSES  # noqa: F401
from edgekd.train.distill import kd_loss
from edgekd.train.inference import Batch, call, model_input, rows, to_device
from edgekd.train.kd_losses import (
    attention_kl,
    embedding_loss,
    masked_mse,
    value_relation,
)


class TransformerKDSettings(Protocol):
    """The ``[distill]`` keys this module reads (:class:`edgekd.settings.recipe.DistillConfig`
    has them)."""

    @property
    def temperature(self) -> float: ...

    @property
    def alpha(self) -> float: ...

    @property
    def layer_map(self) -> tuple[tuple[int, ...], ...]: ...

    @property
    def hidden_weight(self) -> float: ...

    @property
    def attention_loss(self) -> str: ...

    @property
    def transformer_attention_weight(self) -> float: ...

    @property
    def relation_heads(self) -> int: ...

    @property
    def embedding_loss(self) -> str: ...

    @property
    def embedding_projection(self) -> bool: ...


@dataclass(frozen=True)
class Encoder:
    """The ``transformers`` encoder inside a user's model: the module, its embeddings, its
    layers and the numbers of its config that distillation needs."""

    module: nn.Module
    embeddings: nn.Module
    layers: tuple[nn.Module, ...]
    hidden_size: int
    heads: int
    # Where each layer's query/key/value projections are, from the layer: BERT's
    # attention.self.{query,key,value}, DistilBERT's attention.{q_lin,k_lin,v_lin}.
    qkv: tuple[str, str, str] = ("attention.self.query", "attention.self.key",
                                 "attention.self.value")

    @property
    def depth(self) -> int:
        return len(self.layers)


def find_encoder(model: nn.Module) -> Encoder | None:
    """The first submodule of ``model`` (itself included) that is a ``transformers``
    ``PreTrainedModel`` with ``embeddings`` and an ``encoder.layer`` list (BERT, RoBERTa,
    ELECTRA, MiniLM...) or a ``transformer.layer`` list (DistilBERT); None when there is
    none or ``transformers`` is not installed."""
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return None
    for m in model.modules():
        if not isinstance(m, PreTrainedModel):
            continue
        embeddings = getattr(m, "embeddings", None)
        cfg = m.config
        layers = getattr(getattr(m, "encoder", None), "layer", None)  # BERT family
        if isinstance(layers, nn.ModuleList) and len(layers) and isinstance(embeddings,
                                                                             nn.Module):
            return Encoder(m, embeddings, tuple(layers), int(cfg.hidden_size),
                           int(cfg.num_attention_heads))
        layers = getattr(getattr(m, "transformer", None), "layer", None)  # DistilBERT
        if (isinstance(layers, nn.ModuleList) and len(layers)
                and isinstance(embeddings, nn.Module) and hasattr(cfg, "n_heads")):
            return Encoder(m, embeddings, tuple(layers), int(cfg.dim), int(cfg.n_heads),
                           ("attention.q_lin", "attention.k_lin", "attention.v_lin"))
    return None


def uniform_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer ``i`` <- teacher layer ``round((i + 1) * Lt / Ls) - 1``, halves rounded
    up: each student layer learns from the last layer of its block of teacher layers."""
    return [(i, ((i + 1) * teacher_layers * 2 + student_layers) // (2 * student_layers) - 1)
            for i in range(student_layers)]


def layer_map(student_layers: int, teacher_layers: int,
              explicit: Sequence[Sequence[int]] = ()) -> list[tuple[int, int]]:
    """The (student layer, teacher layer) pairs: ``explicit`` when given (checked against
    the layer counts; ``ValueError`` names the bad pair and the ranges), else
    :func:`uniform_map`."""
    if not explicit:
        return uniform_map(student_layers, teacher_layers)
    pairs = [tuple(p) for p in explicit]
    for p in pairs:
        if not (len(p) == 2 and 0 <= p[0] < student_layers and 0 <= p[1] < teacher_layers):
            raise ValueError(
                f"distill.layer_map pair {list(p)} is out of range: the student has "
                f"{student_layers} layers (0..{student_layers - 1}) and the teacher "
                f"{teacher_layers} (0..{teacher_layers - 1}); write [[student_layer, "
                "teacher_layer], ...] with 0-based layer numbers")
    return [(int(p[0]), int(p[1])) for p in pairs]


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


class _Capture:
    """Forward hooks on one encoder: the embeddings' output, each watched layer's output
    and query/key/value projections, and the attention mask the encoder was called with.
    Each forward overwrites the last one's tensors."""

    def __init__(self, enc: Encoder, layers: Iterable[int], qkv: bool) -> None:
        self.states: dict[str, torch.Tensor | None] = {}
        self.handles: list[Any] = []
        signature = inspect.signature(enc.module.forward)

        def grab_mask(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
            except TypeError:
                bound = kwargs
            self.states["mask"] = bound.get("attention_mask")

        self.handles.append(enc.module.register_forward_pre_hook(grab_mask, with_kwargs=True))
        self._watch(enc.embeddings, "emb")
        for i in sorted(set(layers)):
            layer = enc.layers[i]
            self._watch(layer, f"h{i}")
            if qkv:
                for part, path in zip("qkv", enc.qkv, strict=True):
                    self._watch(layer.get_submodule(path), f"{part}{i}")

    def _watch(self, module: nn.Module, key: str) -> None:
        def hook(_m: nn.Module, _args: Any, output: Any) -> None:
            self.states[key] = _first(output)
        self.handles.append(module.register_forward_hook(hook))

    def __getitem__(self, key: str) -> torch.Tensor:
        value = self.states.get(key)
        assert value is not None, f"no {key} captured: the model's forward did not run"
        return value

    def mask(self, like: torch.Tensor) -> torch.Tensor:
        """[N, T] boolean: the tokens attended to (all of them when no mask was given)."""
        m = self.states.get("mask")
        if m is None or m.dim() != 2:  # none, or already extended to [N, 1, T, T]: all kept
            return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
        return m.to(like.device) != 0

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()
        self.states.clear()


def relation_head_count(requested: int, student: Encoder, teacher: Encoder) -> int:
    """``requested`` relation heads (checked), or 0 = the teacher's head count when both
    widths divide by it, else the student's, else their widths' greatest common divisor."""
    widths = (student.hidden_size, teacher.hidden_size)
    if requested:
        if any(w % requested for w in widths):
            raise ValueError(f"distill.relation_heads = {requested} must divide both hidden "
                             f"sizes (student {widths[0]}, teacher {widths[1]}); 0 picks one")
        return requested
    for h in (teacher.heads, student.heads):
        if all(w % h == 0 for w in widths):
            return h
    return math.gcd(*widths)


def _identity_linear(n_in: int, n_out: int) -> nn.Linear:
    """A learned projection; the identity at the start when the widths are equal."""
    layer = nn.Linear(n_in, n_out)
    if n_in == n_out:
        with torch.no_grad():
            layer.weight.copy_(torch.eye(n_in))
            layer.bias.zero_()
    return layer


def batch_inputs(split: Split, index: torch.Tensor, specs: Sequence[InputSpec] = ()) -> Batch:
    """The samples of ``split`` at ``index`` as one call's inputs, fed as the training loop
    feeds them (:func:`edgekd.train.inference.rows`): by name with ``specs``; without them,
    every input by name when the split has several, else its ``x``."""
    idx = index.cpu().numpy()
    if specs or not split.extra:
        return rows(model_input(split, specs), idx)
    return {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in split.extra.items()}


def _output_width(model: nn.Module, split: Split, specs: Sequence[InputSpec]) -> int:
    """The width of ``model``'s (first) output per sample, from one sample of ``split``."""
    training = model.training
    with torch.no_grad():
        width = call(model.eval(), batch_inputs(split, torch.arange(1), specs)).flatten(1).shape[1]
    model.train(training)
    return int(width)


class TransformerDistillation:
    """The :class:`~edgekd.train.loop.Objective` of a transformer student::

        L = L_out + hidden_weight * mean_pairs masked_MSE(W h_s, h_t)
                  + transformer_attention_weight * mean_pairs attention term

    ``L_out``: Hinton's logit loss (classification) or the embedding loss (any other task).
    The student's states come from hooks while the loop runs it; the teacher runs on the
    same batch (rebuilt from ``split`` at ``index``). :meth:`close` removes the hooks.
    """

    def __init__(self, student: nn.Module, teacher: nn.Module, split: Split,
                 config: TransformerKDSettings, *, task: str, student_encoder: Encoder,
                 teacher_encoder: Encoder, specs: Sequence[InputSpec] = ()) -> None:
        s, t = student_encoder, teacher_encoder
        self.teacher, self.split, self.task, self.specs = teacher, split, task, tuple(specs)
        self.config = config
        self.s_heads, self.t_heads = s.heads, t.heads
        self.pairs = layer_map(s.depth, t.depth, config.layer_map)
        self.hidden_weight = config.hidden_weight
        self.attention_weight = config.transformer_attention_weight
        self.relation_heads = relation_head_count(config.relation_heads, s, t)
        qkv = self.attention_weight > 0
        watched = bool(self.hidden_weight or qkv)
        self._s = _Capture(s, [p[0] for p in self.pairs] if watched else [], qkv)
        self._t = _Capture(t, [p[1] for p in self.pairs] if watched else [], qkv)
        self.projections = nn.ModuleDict()
        if self.hidden_weight:
            self.projections["emb"] = _identity_linear(s.hidden_size, t.hidden_size)
            for i, _ in enumerate(self.pairs):
                self.projections[str(i)] = _identity_linear(s.hidden_size, t.hidden_size)
        if task != "classification":
            widths = (_output_width(student, split, specs), _output_width(teacher, split, specs))
            if widths[0] != widths[1] or config.embedding_projection:
                self.projections["out"] = _identity_linear(*widths)

    def _teacher_forward(self, index: torch.Tensor, device: torch.device) -> torch.Tensor:
        batch = to_device(batch_inputs(self.split, index, self.specs), device)
        training = self.teacher.training
        self.teacher.to(device).eval()
        with torch.no_grad():
            out = call(self.teacher, batch)
        self.teacher.train(training)
        return out

    def _output_loss(self, out: torch.Tensor, teacher_out: torch.Tensor,
                     labels: torch.Tensor | None) -> torch.Tensor:
        c = self.config
        if self.task == "classification":
            if labels is None:
                return c.temperature**2 * F.kl_div(  # soft targets are all there is
                    F.log_softmax(out / c.temperature, dim=1),
                    F.log_softmax(teacher_out / c.temperature, dim=1),
                    reduction="batchmean", log_target=True)
            return kd_loss(out, teacher_out, labels, temperature=c.temperature, alpha=c.alpha)
        s, t = out.flatten(1), teacher_out.flatten(1)
        if "out" in self.projections:
            s = self.projections["out"](s)
        return embedding_loss(s, t, c.embedding_loss)

    def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                 labels: torch.Tensor | None) -> torch.Tensor:
        teacher_out = self._teacher_forward(index, logits.device)
        loss = self._output_loss(logits, teacher_out, labels)
        terms = self.terms()
        if "hidden" in terms:
            loss = loss + self.hidden_weight * terms["hidden"]
        if "attention" in terms:
            loss = loss + self.attention_weight * terms["attention"]
        return loss

    def terms(self) -> dict[str, torch.Tensor]:
        """The hidden-state and attention terms of the last student and teacher forward
        passes (unweighted), by name; only those whose weight is > 0."""
        out: dict[str, torch.Tensor] = {}
        if not (self.hidden_weight or self.attention_weight):
            return out
        mask = self._t.mask(self._t["emb"])
        if self.hidden_weight:
            hidden = [masked_mse(self.projections["emb"](self._s["emb"]), self._t["emb"], mask)]
            hidden += [masked_mse(self.projections[str(k)](self._s[f"h{i}"]), self._t[f"h{j}"],
                                  mask) for k, (i, j) in enumerate(self.pairs)]
            out["hidden"] = torch.stack(hidden).mean()
        if self.attention_weight:
            if self.config.attention_loss == "kl":
                att = [attention_kl(self._s[f"q{i}"], self._s[f"k{i}"], self.s_heads,
                                    self._t[f"q{j}"], self._t[f"k{j}"], self.t_heads, mask)
                       for i, j in self.pairs]
            else:
                att = [value_relation(self._s[f"v{i}"], self._t[f"v{j}"], self.relation_heads,
                                      mask) for i, j in self.pairs]
            out["attention"] = torch.stack(att).mean()
        return out

    def parameters(self) -> Iterable[nn.Parameter]:
        return self.projections.parameters()

    def close(self) -> None:
        self._s.close()
        self._t.close()


def transformer_objective(student: nn.Module, teacher: nn.Module, split: Split,
                          config: TransformerKDSettings, *, task: str,
                          specs: Sequence[InputSpec] = ()) -> TransformerDistillation | None:
    """The transformer distillation objective of ``student`` against ``teacher`` on the
    training ``split`` (fed by name as ``specs`` say, as :func:`edgekd.train.loop.train` is
    given them), or None when either model is not a ``transformers`` encoder (then
    :class:`~edgekd.train.distill.Distillation` applies). Raises ``ValueError`` (one line) for
    a ``layer_map`` or ``relation_heads`` that does not fit the two models."""
    s, t = find_encoder(student), find_encoder(teacher)
    if s is None or t is None:
        return None
    return TransformerDistillation(student, teacher, split, config, task=task,
                                   student_encoder=s, teacher_encoder=t, specs=specs)
