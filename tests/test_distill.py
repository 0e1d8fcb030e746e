from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.inputs.dataset import Dataset
from edgekd.train.distill import Distillation, LayerPair, attention_map, auto_pairs, kd_loss
from edgekd.train.models import student_cnn, teacher_cnn
from edgekd.train.teacher_cache import OnlineTeacher, cache_key, tap, teacher_outputs


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    torch.manual_seed(0)
    return teacher_cnn().eval()


def test_auto_pairs_take_the_last_layer_at_each_shared_resolution(teacher: nn.Module) -> None:
    example = torch.zeros(1, 1, 8, 8)
    # student: conv-BN-ReLU at 8x8 ("0".."2"), then flat; teacher: 8x8 up to "5", 4x4 to "9"
    assert auto_pairs(student_cnn(), teacher, example) == [LayerPair("2", "5")]
    wider = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(128, 10))
    assert auto_pairs(wider, teacher, example) == [LayerPair("1", "5"), LayerPair("4", "9")]


def test_auto_pairs_need_a_sequential_model(teacher: nn.Module) -> None:
    class Net(nn.Module):
        def forward(self, x):  # type: ignore[no-untyped-def]
            return x

    with pytest.raises(ValueError, match="name the pairs"):
        auto_pairs(Net(), teacher, torch.zeros(1, 1, 8, 8))


def test_unknown_layer_name_lists_the_layers(teacher: nn.Module) -> None:
    with pytest.raises(ValueError, match="no layer named 'fc9'.*0, 1, 2"), tap(teacher, ["fc9"]):
        pass


def test_attention_maps_are_unit_norm_spatial_maps() -> None:
    f = torch.randn(3, 16, 4, 4)
    a = attention_map(f)
    assert a.shape == (3, 16)
    assert torch.allclose(a.norm(dim=1), torch.ones(3))
    assert torch.allclose(attention_map(5 * f), a, atol=1e-6)  # scale-free


def test_teacher_outputs_are_cached_memory_mapped_and_exact(teacher: nn.Module, digits: Dataset,
                                                            tmp_path: Path) -> None:
    x = digits.train.x[:300]
    outputs, cached = teacher_outputs(teacher, x, ["5"], tmp_path)
    assert not cached
    again, cached = teacher_outputs(teacher, x, ["5"], tmp_path)
    assert cached
    assert isinstance(again.logits, np.memmap) and isinstance(again.features["5"], np.memmap)
    assert again.features["5"].shape == (300, 128, 8, 8)
    idx = torch.tensor([7, 3, 250])
    with torch.no_grad(), tap(teacher, ["5"]) as seen:
        logits = teacher(torch.from_numpy(x[idx.numpy()]))
    assert torch.allclose(again.logits_for(idx), logits, atol=1e-5)
    assert torch.allclose(again.feature_for("5", idx), seen["5"], atol=1e-5)
    # other data or other layers: another cache entry
    assert not teacher_outputs(teacher, x[:10], ["5"], tmp_path)[1]
    assert len(list(tmp_path.iterdir())) == 2


def test_teacher_outputs_recompute_when_fresh_or_damaged(teacher: nn.Module, digits: Dataset,
                                                         tmp_path: Path) -> None:
    x = digits.train.x[:40]
    first, _ = teacher_outputs(teacher, x, ["5"], tmp_path)
    expected = np.array(first.logits)
    again, cached = teacher_outputs(teacher, x, ["5"], tmp_path, fresh=True)
    assert not cached and np.array_equal(again.logits, expected)
    [entry] = tmp_path.iterdir()  # replaced, not duplicated, and no temporary folder left
    assert entry.name == f"teacher-outputs-{cache_key(teacher, x, ['5'])}"
    del first, again  # let go of the memory maps before damaging the files
    (entry / "0.npy").write_bytes((entry / "0.npy").read_bytes()[:100])  # truncated
    repaired, cached = teacher_outputs(teacher, x, ["5"], tmp_path)
    assert not cached and np.array_equal(repaired.logits, expected)
    assert teacher_outputs(teacher, x, ["5"], tmp_path)[1]


def test_teacher_cache_key_follows_weights_inputs_and_layers(teacher: nn.Module,
                                                            digits: Dataset) -> None:
    x = digits.train.x[:8]
    key = cache_key(teacher, x, ["5"])
    assert key == cache_key(teacher, x.copy(), ["5"]) and len(key) == 16
    assert cache_key(teacher, x[:7], ["5"]) != key
    assert cache_key(teacher, x, ["5", "9"]) != key
    other = teacher_cnn()
    other.load_state_dict(teacher.state_dict())
    assert cache_key(other, x, ["5"]) == key
    with torch.no_grad():
        next(other.parameters()).view(-1)[0] += 1e-3
    assert cache_key(other, x, ["5"]) != key
    assert cache_key(copy.deepcopy(teacher).to(torch.bfloat16), x, ["5"]) != key  # not numpy


def test_distillation_terms(teacher: nn.Module, digits: Dataset, tmp_path: Path) -> None:
    assert digits.train.y is not None
    x, y = digits.train.x[:64], torch.from_numpy(digits.train.y[:64])
    outputs, _ = teacher_outputs(teacher, x, ["5"], tmp_path)
    example = torch.from_numpy(x[:1])
    idx = torch.arange(16)
    torch.manual_seed(0)
    student = student_cnn().train()
    pairs = [LayerPair("2", "5")]

    plain = Distillation(student, outputs, pairs, example, temperature=4.0, alpha=0.5)
    logits = student(torch.from_numpy(x[:16]))
    expected = kd_loss(logits, outputs.logits_for(idx), y[:16], temperature=4.0, alpha=0.5)
    assert math.isclose(float(plain(logits, idx, y[:16]).detach()), float(expected.detach()),
                        rel_tol=1e-6)
    assert list(plain.parameters()) == []
    plain.close()

    both = Distillation(student, outputs, pairs, example, temperature=4.0, alpha=0.5,
                        feature_weight=1.0, attention_weight=100.0)
    proj = both.projections["0"]
    assert isinstance(proj, nn.Conv2d) and (proj.in_channels, proj.out_channels) == (4, 128)
    logits = student(torch.from_numpy(x[:16]))
    loss = both(logits, idx, y[:16])
    assert float(loss.detach()) > float(expected.detach())  # the feature and attention terms add
    loss.backward()
    assert proj.weight.grad is not None and float(proj.weight.grad.abs().sum()) > 0
    assert student[0].weight.grad is not None  # features reach the student's conv
    both.close()

    # without the cache: the teacher runs on every batch, same loss
    online = OnlineTeacher(teacher, x, ["5"])
    torch.manual_seed(1)
    a = Distillation(student, outputs, pairs, example, temperature=4.0, alpha=0.5,
                     feature_weight=1.0, attention_weight=100.0)
    torch.manual_seed(1)
    b = Distillation(student, online, pairs, example, temperature=4.0, alpha=0.5,
                     feature_weight=1.0, attention_weight=100.0)
    logits = student(torch.from_numpy(x[:16]))
    assert torch.allclose(a(logits, idx, y[:16]), b(logits, idx, y[:16]), rtol=1e-5)
    a.close()
    b.close()


def test_pairs_must_be_comparable(teacher: nn.Module, digits: Dataset, tmp_path: Path) -> None:
    outputs, _ = teacher_outputs(teacher, digits.train.x[:8], ["5"], tmp_path)
    with pytest.raises(ValueError, match="cannot pair"):
        Distillation(student_cnn(), outputs, [LayerPair("5", "5")],
                     torch.from_numpy(digits.train.x[:1]), temperature=4.0, alpha=0.5,
                     feature_weight=1.0)
