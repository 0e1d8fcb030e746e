from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from edgekd import Dataset
from edgekd.train.augment import SoftTargets, random_shift, training_views


def test_shift_moves_pixels_and_fills_with_background() -> None:
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4) + 1
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = random_shift(x, rng)
        moved = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                 if np.array_equal(np.roll(np.roll(x, dy, 2), dx, 3)[0, 0, 1:3, 1:3],
                                   out[0, 0, 1:3, 1:3])]
        assert moved, out  # the centre is the image moved by at most one pixel
        assert set(np.unique(out)) <= set(np.unique(x))  # no new values: fill is x.min()


def test_views_keep_originals_first_and_labels_consistent(digits: Dataset) -> None:
    train = digits.train
    split, soft = training_views(train, 3, mixup=1.0, num_classes=10, seed=0)
    n = len(train)
    assert len(split) == 4 * n and soft.shape == (4 * n, 10)
    np.testing.assert_array_equal(split.x[:n], train.x)
    np.testing.assert_array_equal(split.y[:n], train.y)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    # the sample's own image weighs >= 0.5, so its label stays the dominant one
    np.testing.assert_array_equal(split.y, np.tile(train.y, 4))
    assert not np.allclose(split.x[n:2 * n], train.x)  # the views do differ
    again, _ = training_views(train, 3, mixup=1.0, num_classes=10, seed=0)
    np.testing.assert_array_equal(again.x, split.x)  # seeded
    _, hard = training_views(train, 1, mixup=0.0, num_classes=10, seed=0)
    assert set(np.unique(hard)) == {0.0, 1.0}


def test_soft_targets_is_cross_entropy_with_probabilities() -> None:
    soft = np.array([[0.0, 1.0], [0.3, 0.7]], dtype=np.float32)
    logits = torch.tensor([[0.2, 1.0], [1.0, -1.0]])
    idx = torch.tensor([0, 1])
    got = SoftTargets(soft)(logits, idx, torch.tensor([1, 1]))
    want = -(torch.from_numpy(soft) * F.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(got, want)
