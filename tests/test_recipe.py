"""The training recipe (edgekd.train.loop): warm-up + cosine, BatchNorm-aware weight decay,
label smoothing, image augmentation; the ``[train] threads`` setting; the near-chance
warning and the per-epoch progress of every training stage (edgekd.pipeline.training)."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.inputs.dataset import Dataset, Preprocessing, Split
from edgekd.inputs.digits import load_digits
from edgekd.pipeline.stage_notes import CHANCE_MARGIN, near_chance
from edgekd.pipeline.training import run_training
from edgekd.settings.config import (
    BuildConfig,
    DistillConfig,
    PruneConfig,
    TrainConfig,
    TrainRunConfig,
)
from edgekd.settings.resources import default_calibration_file
from edgekd.train.augment import augment_batch
from edgekd.train.loop import (
    CrossEntropy,
    EpochReport,
    Schedule,
    auto_threads,
    lr_factor,
    param_groups,
    train,
    training_threads,
)
from edgekd.train.models import student_tiny
from tests.rgb_data import CLASSES, shapes, write_folders, write_npz


def test_warmup_rises_linearly_then_cosine_decays_to_zero() -> None:
    total, warmup = 100, 0.1
    f = [lr_factor(i, total, warmup) for i in range(total)]
    assert f[:10] == pytest.approx([(i + 1) / 10 for i in range(10)])  # 10 warm-up steps
    assert f[10] == pytest.approx(1.0)  # the peak, then cosine
    assert f[55] == pytest.approx(0.5)  # half-way through the decay
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] < 0.001
    assert lr_factor(0, total, 0.0) == 1.0  # no warm-up: cosine from the start
    assert lr_factor(0, 3, 0.01) == pytest.approx(1.0)  # at least one warm-up step


def _conv_bn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def test_weight_decay_shrinks_conv_and_linear_weights_only() -> None:
    torch.manual_seed(0)
    model = _conv_bn()
    with torch.no_grad():  # BatchNorm's scale and shift away from their 1 / 0 start
        model[1].weight.fill_(2.0)
        model[1].bias.fill_(0.5)
    groups = param_groups(model, 0.5)
    assert [len(g["params"]) for g in groups] == [2, 4]  # conv + linear weights | the rest
    before = {n: p.detach().clone() for n, p in model.named_parameters()}

    class NoGradient:  # a loss with zero gradient: only weight decay moves the weights
        def __call__(self, logits: torch.Tensor, index: torch.Tensor,
                     labels: torch.Tensor) -> torch.Tensor:
            return logits.sum() * 0.0

        def parameters(self) -> list[nn.Parameter]:
            return []

    data = Split(np.ones((8, 1, 8, 8), np.float32), np.zeros(8, np.int64), np.arange(8))
    train(model, data, Schedule(3, 0.1, 8, weight_decay=0.5, warmup=0.0), seed=0,
          objective=NoGradient())
    after = dict(model.named_parameters())
    for name in ("0.weight", "4.weight"):
        assert after[name].abs().sum() < 0.95 * before[name].abs().sum(), name
    for name in ("0.bias", "1.weight", "1.bias", "4.bias"):
        assert torch.equal(after[name], before[name]), name


def test_label_smoothing_is_applied_to_hard_labels() -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    label = torch.tensor([0])
    logp = torch.log_softmax(logits, 1)[0]
    expected = 0.9 * -logp[0] + 0.1 * -logp.mean()
    assert float(CrossEntropy(0.1)(logits, label, label)) == pytest.approx(float(expected))
    # Trained to the end on separable data, a smoothed model stops short of certainty.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, 0, 0] > 0).astype(np.int64)
    x[:, 0, 0, 0] += np.where(y == 1, 3.0, -3.0)
    confidence = {}
    for smoothing in (0.0, 0.2):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
        train(model, Split(x, y, np.arange(64)),
              Schedule(60, 0.05, 16, label_smoothing=smoothing), seed=0)
        with torch.no_grad():
            confidence[smoothing] = float(torch.softmax(model(torch.from_numpy(x)), 1).max(1)
                                          .values.mean())
    assert confidence[0.0] > 0.97
    assert 0.8 < confidence[0.2] < 0.93  # 1 - 0.2 + 0.2 / 2 = 0.9 is the smoothed target


def test_augment_batch_shifts_images_and_leaves_other_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).reshape(4, 3, 8, 8)
    out = augment_batch(x, gen, shift=0.25, flip=False)
    assert out.shape == x.shape and not torch.equal(out, x)
    def moved(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:  # edges repeated
        rows = (torch.arange(8) + dy).clamp(0, 7)
        cols = (torch.arange(8) + dx).clamp(0, 7)
        return img[:, rows][:, :, cols]

    for i in range(4):  # each image a translation by up to 2 pixels (0.25 of 8)
        assert any(torch.equal(out[i], moved(x[i], dy, dx))
                   for dy in range(-2, 3) for dx in range(-2, 3))
    flipped = augment_batch(x, torch.Generator().manual_seed(1), shift=0.0, flip=True)
    assert any(torch.equal(flipped[i], x[i].flip(2)) for i in range(4))
    signal = torch.ones(4, 3, 16)
    assert augment_batch(signal, gen, shift=0.25, flip=True) is signal  # not an image


def test_recipe_settings_are_validated_with_the_allowed_values() -> None:
    with pytest.raises(ValueError, match="allowed: adamw, sgd"):
        TrainConfig(optimizer="adam")
    with pytest.raises(ValueError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)
    with pytest.raises(ValueError, match="warmup"):
        DistillConfig(warmup=-0.1)
    with pytest.raises(ValueError, match="shift"):
        DistillConfig(shift=0.5)
    with pytest.raises(ValueError, match=r"train.threads must be >= 0 \(0 = automatic\)"):
        TrainRunConfig(threads=-1)
    config = BuildConfig.from_dict({"student": {"flip": True}, "train": {"threads": 1}})
    assert config.student.flip and config.student.epochs == 30  # the student's own default
    assert BuildConfig.from_dict(config.to_dict()) == config


def test_threads_flag_refuses_a_negative_count_in_one_line() -> None:
    result = CliRunner().invoke(app, ["build", "--threads", "-1"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "train.threads must be >= 0" in lines[0], result.output
    assert lines[0].startswith("error:")


def test_training_threads_sets_and_restores_the_count() -> None:
    before = torch.get_num_threads()
    with training_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with training_threads(0) as n:
        assert n == auto_threads() >= 1 and torch.get_num_threads() == n


# -- the training stages ----------------------------------------------------------------


def _teacher() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


@pytest.fixture(scope="module")
def digits_small() -> Dataset:
    data = load_digits(default_calibration_file(), seed=0)
    return replace(data, train=Split(data.train.x[:400], data.train.y[:400],
                                     data.train.index[:400]))


QUICK = BuildConfig(teacher=TrainConfig(epochs=3, lr=3e-3), student=TrainConfig(epochs=2),
                    distill=DistillConfig(epochs=2), prune=PruneConfig(finetune_epochs=1),
                    train=TrainRunConfig(threads=1))


def _stages(data: Dataset, config: BuildConfig, tmp: Path
            ) -> tuple[Any, list[tuple[str, EpochReport, int]], list[str]]:
    heard: list[tuple[str, EpochReport, int]] = []
    steps: list[str] = []

    @contextlib.contextmanager
    def step(name: str) -> Iterator[dict[str, str]]:
        yield {"detail": ""}
        steps.append(name)

    trained = run_training(
        teacher=_teacher, student=lambda: student_tiny(10), teacher_trains=True,
        teacher_key="tests.test_recipe:_teacher", data=data, config=config,
        cache=__import__("edgekd.train.stage_cache", fromlist=["StageCache"]).StageCache(
            tmp / "stages"), cache_dir=tmp, step=step,
        on_epoch=lambda stage, r: heard.append((stage, r, torch.get_num_threads())))
    return trained, heard, steps


def test_every_stage_reports_each_epoch_and_trains_with_the_threads_set(
        digits_small: Dataset, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    trained, heard, _ = _stages(digits_small, QUICK, tmp_path)
    epochs = {"teacher": 3, "student_scratch": 2, "student_distilled": 2, "student_pruned": 1}
    for stage, n in epochs.items():
        reports = [r for s, r, _ in heard if s == stage]
        assert [r.epoch for r in reports] == list(range(1, n + 1)), stage
        assert all(r.epochs == n and math.isfinite(r.loss) and r.loss > 0 for r in reports)
        assert all(r.accuracy is not None and 0 <= r.accuracy <= 1 for r in reports)
    teacher = [r for s, r, _ in heard if s == "teacher"]
    assert teacher[-1].loss < teacher[0].loss  # it learns
    assert teacher[-1].accuracy > teacher[0].accuracy + 0.1  # training accuracy, rising
    assert {threads for *_, threads in heard} == {1}  # inside training: the setting
    assert torch.get_num_threads() == before  # and the caller's count back after
    assert all(s["threads"] == 1 for s in trained.stages)
    assert "warning" not in trained.stages[0]  # the teacher learned
    # A second build takes every stage from the cache: no epochs, no threads recorded.
    again, heard_again, _ = _stages(digits_small, QUICK, tmp_path)
    assert heard_again == [] and all("threads" not in s for s in again.stages)


def test_a_stage_near_chance_warns_with_what_to_try(digits_small: Dataset, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    train_split = digits_small.train
    shuffled = replace(digits_small, train=Split(train_split.x, rng.permutation(train_split.y),
                                                 train_split.index))
    config = replace(QUICK, teacher=TrainConfig(epochs=1), baseline=False)
    with caplog.at_level(logging.WARNING, logger="edgekd.pipeline.training"):
        trained, _, _ = _stages(shuffled, config, tmp_path)
    warned = {s["name"]: s["warning"] for s in trained.stages if "warning" in s}
    assert "teacher" in warned and "student_distilled" in warned, trained.stages
    message = warned["teacher"]
    assert "chance (10.0% for 10 classes)" in message and "more epochs" in message
    assert "labels" in message and "teacher: test accuracy" in message
    assert any(r.getMessage() == message for r in caplog.records)


def test_near_chance_threshold() -> None:
    assert near_chance("s", 0.5, 2) is not None  # 50 % of 2 classes: chance
    assert near_chance("s", 0.5 + CHANCE_MARGIN, 2) is None
    assert near_chance("s", 0.2, 6) is not None and near_chance("s", 0.25, 6) is None
    assert near_chance("s", None, 6) is None and near_chance("s", 0.1, None) is None


def test_rgb_data_set_as_folders_and_arrays(tmp_path: Path) -> None:
    from PIL import Image

    x, y = shapes(3, seed=1)
    assert x.shape == (18, 3, 32, 32) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [3] * len(CLASSES)
    root = write_folders(tmp_path / "train", x, y)
    assert sorted(p.name for p in root.iterdir()) == list(CLASSES)
    first = next((root / CLASSES[y[0]]).glob("*.png"))
    assert np.asarray(Image.open(first)).shape == (32, 32, 3)
    with np.load(write_npz(tmp_path / "rgb.npz", x, y)) as f:
        assert np.array_equal(f["x"], x) and np.array_equal(f["y"], y)
    assert Preprocessing(1 / 255, 0.5, 0.25).apply(x).shape == x.shape


def test_a_distilled_student_well_below_scratch_is_warned_about() -> None:
    """Distillation that hurt (a user's BERT student: 57.5 % distilled, 99.2 % from
    scratch, shipped silently) is a warning naming both figures and what to try."""
    from edgekd.pipeline.stage_notes import WORSE_THAN_SCRATCH, worse_than_scratch

    def stages(scratch: float, kd: float) -> list[dict]:
        return [{"name": "student_scratch", "accuracy": scratch},
                {"name": "student_distilled", "accuracy": kd}]

    hurt = stages(0.9917, 0.575)
    worse_than_scratch(hurt, transformer=True)
    warning = hurt[1]["warning"]
    assert "41.7 points below" in warning and "57.50%" in warning and "99.17%" in warning
    assert "distill.hidden_weight = 0" in warning
    close = stages(0.90, 0.90 - (WORSE_THAN_SCRATCH - 1) / 100)
    worse_than_scratch(close, transformer=False)
    assert "warning" not in close[1]
    unlabeled = [{"name": "student_distilled", "accuracy": None}]
    worse_than_scratch(unlabeled, transformer=True)  # no scratch stage: nothing to compare
    assert "warning" not in unlabeled[0]
