"""The loss terms of transformer distillation (:mod:`edgekd.train.transformer_kd`), as
functions of tensors: hidden states (masked, relative MSE), attention distributions (KL,
TinyBERT), value relations (MiniLM) and the output embedding (cosine or MSE)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the [N, T, H] states of the tokens ``mask`` [N, T] keeps,
    relative to the teacher's mean square there (0: equal, 1: as far as a zero state).

    Relative, because a pretrained encoder's hidden states are large (outlier dimensions
    reach tens), so an absolute MSE's size, and its weight against the logit loss, would
    depend on the teacher; relative, the term is O(1) whatever the teacher's scale, as the
    KL terms are. (On a short schedule the hidden term still slows the task down: a user's
    6-epoch BERT student reached 57.5 % with it, 82.5 % with logits only; the build warns
    when distillation ends well below the scratch student.)"""
    keep = mask.unsqueeze(-1).to(student.dtype)
    count = (keep.sum() * student.shape[-1]).clamp_min(1)
    error = ((student - teacher).pow(2) * keep).sum() / count
    scale = (teacher.pow(2) * keep).sum().detach() / count
    return error / scale.clamp_min(torch.finfo(scale.dtype).tiny)


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[N, T, H] -> [N, heads, T, H / heads]."""
    n, t, h = x.shape
    return x.view(n, t, heads, h // heads).transpose(1, 2)


def _log_relation(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log softmax(a b^T / sqrt(d) over the keys ``mask`` keeps): [N, h, T, T]."""
    scores = a @ b.transpose(-1, -2) / math.sqrt(a.shape[-1])
    scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.log_softmax(-1)


def relation_kl(log_s: torch.Tensor, log_t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``KL(t || s)`` of each query row's distribution over the keys (summed over the kept
    keys), averaged over the kept query rows and the heads. Inputs: [N, h, T, T] logs."""
    keys = mask[:, None, None, :]
    terms = torch.where(keys, log_t.exp() * (log_t - log_s), torch.zeros_like(log_s)).sum(-1)
    rows = mask[:, None, :].to(terms.dtype).expand_as(terms)
    return (terms * rows).sum() / rows.sum().clamp_min(1)


def attention_kl(q_s: torch.Tensor, k_s: torch.Tensor, heads_s: int, q_t: torch.Tensor,
                 k_t: torch.Tensor, heads_t: int, mask: torch.Tensor) -> torch.Tensor:
    """TinyBERT's attention term as ``KL(A_t || A_s)``; per head when the counts are equal,
    else between the head-averaged distributions."""
    log_s = _log_relation(_heads(q_s, heads_s), _heads(k_s, heads_s), mask)
    log_t = _log_relation(_heads(q_t, heads_t), _heads(k_t, heads_t), mask)
    if heads_s != heads_t:
        log_s = log_s.exp().mean(1, keepdim=True).clamp_min(1e-12).log()
        log_t = log_t.exp().mean(1, keepdim=True).clamp_min(1e-12).log()
    return relation_kl(log_s, log_t, mask)


def value_relation(v_s: torch.Tensor, v_t: torch.Tensor, heads: int,
                   mask: torch.Tensor) -> torch.Tensor:
    """MiniLM's value-relation term over ``heads`` relation heads."""
    vs, vt = _heads(v_s, heads), _heads(v_t, heads)
    return relation_kl(_log_relation(vs, vs, mask), _log_relation(vt, vt, mask), mask)


def embedding_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """``1 - cos`` (mean over samples) or the MSE between [N, D] embeddings."""
    if kind == "mse":
        return F.mse_loss(student, teacher)
    return (1.0 - F.cosine_similarity(student, teacher, dim=1)).mean()
