from __future__ import annotations

import math

import torch

from edgekd import count_params, student_cnn, teacher_cnn
from edgekd.compress import prune
from edgekd.train.distill import kd_loss


def test_student_is_over_20x_smaller_than_teacher() -> None:
    assert count_params(teacher_cnn())[0] >= 20 * count_params(student_cnn())[0]


def test_kd_loss_is_hinton() -> None:
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.2, 3.0, 1.0]])
    y = torch.tensor([1])
    T, a = 4.0, 0.3
    ps, pt = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    kl = float((pt * (pt.log() - ps.log())).sum())
    ce = float(-torch.log_softmax(s, 1)[0, 1])
    got = float(kd_loss(s, t, y, temperature=T, alpha=a))
    assert math.isclose(got, a * T * T * kl + (1 - a) * ce, rel_tol=1e-5)
    # identical logits and alpha=1: nothing to learn
    assert float(kd_loss(s, s, y, temperature=T, alpha=1.0)) < 1e-6


def test_global_pruning_hits_the_sparsity_and_bakes_it_in() -> None:
    torch.manual_seed(0)
    model = prune.apply_masks(student_cnn(), 0.6)
    assert abs(prune.weight_sparsity(model) - 0.6) < 0.01
    model = prune.bake(model)
    names = [n for n, _ in model.named_parameters()]
    assert not any(n.endswith("_orig") for n in names)
    assert abs(prune.weight_sparsity(model) - 0.6) < 0.01
