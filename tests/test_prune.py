"""Pruning: the gradual schedule, masks during the fine-tune, channel removal that keeps the
model consistent (BN, Flatten->Linear, residual adds, depthwise convs), and ONNX parity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

from edgekd import Dataset, Split, to_onnx
from edgekd.compress import prune
from edgekd.compress.structured import macs, prune_channels
from edgekd.settings.config import STUDENT_MODELS, BuildConfig, PruneConfig
from edgekd.train.loop import CrossEntropy, Schedule, train
from edgekd.train.models import (
    STUDENTS,
    InvertedResidual,
    mobilenet_v2,
    student_cnn,
    student_convnet,
)


def _small(data: Split, n: int = 256) -> Split:
    return Split(data.x[:n], data.y[:n], data.index[:n])


def _shape(layer: nn.Module) -> tuple[int, ...]:
    return tuple(layer.get_parameter("weight").shape)


def _warm_bn(model: nn.Module, x: np.ndarray) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that parity checks see the BN folding."""
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    return model.eval()


def test_cubic_ramp_follows_zhu_and_gupta() -> None:
    ramp: dict[str, Any] = {"final": 0.8, "ramp_steps": 100}
    assert prune.cubic_sparsity(0, **ramp) == 0.0
    assert prune.cubic_sparsity(50, **ramp) == pytest.approx(0.8 - 0.8 * 0.5**3)  # 0.7
    assert prune.cubic_sparsity(100, **ramp) == pytest.approx(0.8)
    assert prune.cubic_sparsity(150, **ramp) == pytest.approx(0.8)
    # s_i = 0.1 from t0 = 10: a quarter into the ramp, s_f + (s_i - s_f) * 0.75^3
    shifted: dict[str, Any] = {"final": 0.8, "ramp_steps": 100, "initial": 0.1, "begin": 10}
    assert prune.cubic_sparsity(5, **shifted) == pytest.approx(0.1)
    assert prune.cubic_sparsity(35, **shifted) == pytest.approx(0.8 - 0.7 * 0.75**3)
    values = [prune.cubic_sparsity(t, **ramp) for t in range(0, 101, 10)]
    steps = np.diff(values)
    assert (steps > 0).all() and (np.diff(steps) < 0).all()  # fast first, slow at the end


def test_gradual_pruning_reaches_target_and_masks_only_grow(digits: Dataset) -> None:
    torch.manual_seed(0)
    model = student_cnn()
    hook = prune.GradualPruning(model, final=0.7, frequency=2)
    zeros: list[torch.Tensor] = []

    def on_step(done: int, total: int) -> None:
        hook(done, total)
        if tprune.is_pruned(model):
            weights = [m.get_parameter("weight_orig") * m.get_buffer("weight_mask")
                       for m, _ in prune.prunable(model)]
            zeros.append(torch.cat([(w == 0).flatten() for w in weights]))

    train(model, _small(digits.train), Schedule(3, 3e-3, 64), seed=0, on_step=on_step)
    # 4 steps per epoch, 12 in all: the ramp ends at step 8, updates at 2, 4, 6, 8
    assert [t for t, _ in hook.history] == [2, 4, 6, 8]
    targets = [s for _, s in hook.history]
    assert targets == pytest.approx([0.7 - 0.7 * (1 - t / 8) ** 3 for t in (2, 4, 6, 8)])
    assert prune.weight_sparsity(model) == pytest.approx(0.7, abs=1e-3)
    for before, after in zip(zeros, zeros[1:], strict=False):  # a pruned weight stays pruned
        assert bool((after | ~before).all())
    prune.bake(model)
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())
    assert prune.weight_sparsity(model) == pytest.approx(0.7, abs=1e-3)


def test_prune_model_gradual_end_to_end(digits: Dataset) -> None:
    torch.manual_seed(0)
    dense = student_cnn()
    cfg = PruneConfig(schedule="gradual", sparsity=0.6, frequency=3, finetune_epochs=2)
    pruned, info = prune.prune_model(dense, cfg, _small(digits.train),
                                     objective_for=lambda _m: CrossEntropy(),
                                     example=torch.from_numpy(digits.test.x[:1]), seed=0,
                                     batch_size=64)
    assert prune.weight_sparsity(dense) == 0.0  # the input model is untouched
    assert info["weight_sparsity"] == pytest.approx(0.6, abs=1e-3)
    assert info["mask_updates"] >= 2
    rows = {r["layer"]: r for r in info["layers"]}
    assert rows["1"]["type"] == "BatchNorm2d"  # reported, and unstructured leaves its shape
    assert all(r["before"] == r["after"] for r in rows.values())
    assert max(r["zero_fraction"] for r in rows.values()) > 0.6  # global: uneven per layer


def test_structured_pruning_removes_channels_through_bn_and_flatten() -> None:
    torch.manual_seed(0)
    model = student_convnet(width=8)
    example = torch.randn(1, 1, 8, 8)
    pruned = prune_channels(model, example, 0.5)
    assert _shape(pruned[0]) == (4, 1, 3, 3)
    assert _shape(pruned[1]) == (4,) and tuple(pruned[1].get_buffer("running_var").shape) == (4,)
    assert _shape(pruned[3]) == (8, 4, 3, 3)
    assert _shape(pruned[-1]) == (10, 16 * 2 * 2)  # Flatten: 2x2 columns per channel
    assert _shape(model[-1]) == (10, 32 * 2 * 2)  # the input model is copied, not changed
    assert pruned(example).shape == (1, 10)
    assert macs(pruned, example) < 0.3 * macs(model, example)
    # the default student: conv 4 -> 2 channels, its Linear 256 -> 128 inputs, 96 -> 48 units
    small = prune_channels(student_cnn(), example, 0.5)
    assert _shape(small[0]) == (2, 1, 3, 3)
    assert _shape(small[4]) == (48, 128)
    assert small[-1].out_features == 10


def test_structured_pruning_keeps_mobilenet_residuals_and_depthwise_consistent() -> None:
    torch.manual_seed(0)
    model = mobilenet_v2(10, width=0.5, in_channels=1)
    example = torch.randn(1, 1, 32, 32)
    pruned = prune_channels(model, example, 0.5)
    blocks = [m for m in pruned.modules() if isinstance(m, InvertedResidual)]
    assert any(b.residual for b in blocks)
    widths_before = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    widths_after = [m.out_channels for m in pruned.modules() if isinstance(m, nn.Conv2d)]
    assert all(a < b for a, b in zip(widths_after, widths_before, strict=True))
    for block in blocks:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        for depthwise in (c for c in convs if c.groups > 1):
            assert depthwise.groups == depthwise.in_channels == depthwise.out_channels
        if block.residual:  # the add needs the projection to give back the input's width
            assert convs[-1].out_channels == convs[0].in_channels
        bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
        assert [b.num_features for b in bns] == [c.out_channels for c in convs]
    shapes: list[tuple[torch.Size, torch.Size]] = []
    hooks = [b.register_forward_hook(lambda _m, i, o: shapes.append((i[0].shape, o.shape)))
             for b in blocks if b.residual]
    assert pruned.eval()(torch.randn(2, 1, 32, 32)).shape == (2, 10)
    for hook in hooks:
        hook.remove()
    assert shapes and all(i == o for i, o in shapes)  # every residual add saw equal shapes


def test_structured_pruned_model_is_smaller_in_onnx_and_matches_in_ort(
        tmp_path: Path, digits: Dataset) -> None:
    torch.manual_seed(0)
    x = digits.test.x[:64]
    model = _warm_bn(student_convnet(width=8), digits.train.x[:128])
    pruned = _warm_bn(prune_channels(model, torch.from_numpy(x[:1]), 0.5), digits.train.x[:128])

    def initializers(path: Path) -> dict[str, tuple[int, ...]]:
        return {t.name: tuple(t.dims) for t in onnx.load(str(path)).graph.initializer}

    dense_init = initializers(to_onnx(model, x[:1], tmp_path / "dense.onnx"))
    path = to_onnx(pruned, x[:1], tmp_path / "pruned.onnx")
    pruned_init = initializers(path)
    conv_shapes = sorted(s for s in pruned_init.values() if len(s) == 4)
    assert conv_shapes == [(4, 1, 3, 3), (8, 4, 3, 3), (16, 8, 3, 3)]
    # conv weights shrink ~4x (both sides halved), the classifier 2x (its inputs only)
    assert sum(map(np.prod, pruned_init.values())) < 0.35 * sum(map(np.prod, dense_init.values()))

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        expected = pruned(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert (got.argmax(1) == expected.argmax(1)).all()


def test_prune_model_structured_builds_the_objective_for_the_pruned_student(
        digits: Dataset) -> None:
    torch.manual_seed(0)
    dense = student_convnet(width=8)
    seen: list[nn.Module] = []

    def objective_for(student: nn.Module) -> CrossEntropy:
        seen.append(student)
        return CrossEntropy()

    cfg = PruneConfig(method="structured", schedule="oneshot", sparsity=0.5, finetune_epochs=1)
    pruned, info = prune.prune_model(dense, cfg, _small(digits.train), objective_for=objective_for,
                                     example=torch.from_numpy(digits.test.x[:1]), seed=0,
                                     batch_size=64)
    assert seen == [pruned]
    assert info["macs_after"] < 0.3 * info["macs_before"]
    rows = {r["layer"]: r for r in info["layers"]}
    assert rows["0"]["before"] == [8, 1, 3, 3] and rows["0"]["after"] == [4, 1, 3, 3]
    assert rows["1"]["before"] == [8] and rows["1"]["after"] == [4]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "channels"}, "allowed: unstructured, structured"),
    ({"schedule": "cubic"}, "allowed: auto, oneshot, gradual"),
    ({"frequency": 0}, "frequency must be >= 1"),
    ({"method": "structured", "schedule": "gradual"}, "structured pruning is one-shot"),
    ({"schedule": "gradual", "finetune_epochs": 0}, "gradual pruning happens during"),
])
def test_prune_config_rejects(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PruneConfig(**kwargs)  # type: ignore[arg-type]


def test_prune_schedule_auto_fits_the_method() -> None:
    assert PruneConfig().schedule == "gradual"
    assert PruneConfig(method="structured").schedule == "oneshot"


def test_prune_config_and_student_model_round_trip_through_json() -> None:
    cfg = BuildConfig(prune=PruneConfig(method="structured", schedule="oneshot", sparsity=0.5,
                                        frequency=7), student_model="student_convnet")
    assert BuildConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert set(STUDENT_MODELS) == set(STUDENTS)
    with pytest.raises(ValueError, match="allowed: student_cnn, student_convnet"):
        BuildConfig(student_model="resnet")
