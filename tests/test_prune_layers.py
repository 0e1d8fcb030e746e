"""Pruning and distillation for every layer kind: 1-D convs, depthwise and grouped convs,
transposed convs and residual models; sparsity counted in the weights, never the setting;
automatic layer pairs, FitNets and attention transfer on 1-D feature maps."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.compress import prune
from edgekd.compress.structured import kept_whole, prune_channels
from edgekd.inputs.dataset import Split
from edgekd.settings.config import PruneConfig
from edgekd.train.distill import Distillation, LayerPair, attention_map, auto_pairs
from edgekd.train.loop import CrossEntropy
from edgekd.train.teacher_cache import OnlineTeacher
from tests.projects import QUICK


def cnn_1d(width: int = 16, classes: int = 4) -> nn.Sequential:
    """Conv1d -> depthwise Conv1d -> pointwise Conv1d -> Linear, on [N, 2, 32] signals."""
    return nn.Sequential(
        nn.Conv1d(2, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Conv1d(width, width, 5, padding=2, groups=width), nn.ReLU(),  # depthwise
        nn.Conv1d(width, 2 * width, 1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(2 * width, 2 * width, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool1d(4), nn.Flatten(), nn.Linear(8 * width, 32), nn.ReLU(),
        nn.Linear(32, classes))


def signals(n: int = 96, classes: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[N, 2, 32] noisy sines whose frequency is the class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    t = np.linspace(0, 2 * np.pi, 32, dtype=np.float32)
    x = np.stack([np.stack([np.sin((1 + c) * t + rng.uniform(0, 6)),
                            np.cos((1 + c) * t)]) for c in y])
    x = x + 0.1 * rng.standard_normal(x.shape)
    return x.astype(np.float32), y.astype(np.int64)


def _split(n: int = 96) -> Split:
    x, y = signals(n)
    return Split(x, y, np.arange(n))


def _unstructured(model: nn.Module, x: np.ndarray, sparsity: float = 0.5,
                  schedule: str = "oneshot") -> tuple[nn.Module, dict]:
    cfg = PruneConfig(method="unstructured", schedule=schedule, sparsity=sparsity,
                      finetune_epochs=1, frequency=1)
    split = Split(x, np.zeros(len(x), np.int64), np.arange(len(x)))
    return prune.prune_model(model, cfg, split, objective_for=lambda _m: CrossEntropy(),
                             example=torch.from_numpy(x[:1]), seed=0, batch_size=32)


@pytest.mark.parametrize("schedule", ["oneshot", "gradual"])
def test_1d_cnn_pruned_to_half_measured_in_the_weights(schedule: str) -> None:
    torch.manual_seed(0)
    dense = cnn_1d()
    x, y = signals(64)
    cfg = PruneConfig(method="unstructured", schedule=schedule, sparsity=0.5,
                      finetune_epochs=1, frequency=1)
    pruned, info = prune.prune_model(dense, cfg, Split(x, y, np.arange(64)),
                                     objective_for=lambda _m: CrossEntropy(),
                                     example=torch.from_numpy(x[:1]), seed=0, batch_size=16)
    convs = [(n, m) for n, m in pruned.named_modules() if isinstance(m, nn.Conv1d)]
    assert len(convs) == 4
    for name, conv in convs:  # every Conv1d, the depthwise one included, has zeros
        assert int((conv.weight == 0).sum()) > 0, name
    # counted by hand from the weights: the conv and linear weights, then every parameter
    weights = [m.weight for m in pruned.modules() if isinstance(m, nn.Conv1d | nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    assert info["weight_sparsity"] == pytest.approx(zeros / total, abs=1e-4)
    assert info["weight_sparsity"] == pytest.approx(0.5, abs=0.005)
    everything = list(pruned.parameters())
    all_zeros = sum(int((p == 0).sum()) for p in everything)
    assert info["param_sparsity"] == pytest.approx(
        all_zeros / sum(p.numel() for p in everything), abs=1e-4)
    assert info["param_sparsity"] < info["weight_sparsity"]  # biases and the BN stay dense
    rows = {r["layer"]: r for r in info["layers"]}
    assert rows["3"]["type"] == "Conv1d" and rows["3"]["pruned"] and rows["3"]["zeros"] > 0
    assert rows["3"]["params"] == 16 * 1 * 5
    assert rows["1"]["type"] == "BatchNorm1d" and not rows["1"]["pruned"]
    assert sum(r["zeros"] for r in rows.values() if r["pruned"]) == zeros
    skipped = {r["layer"]: r for r in info["skipped"]}
    assert skipped["1"]["type"] == "BatchNorm1d" and "per-channel" in skipped["1"]["reason"]
    assert skipped["1"]["params"] == 32
    assert prune.weight_sparsity(pruned) == pytest.approx(info["weight_sparsity"], abs=1e-4)
    assert prune.shortfall(info) is None  # within a point of the setting


def test_transposed_and_grouped_convs_are_pruned_and_the_rest_says_why() -> None:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(1000, 8)  # large, left dense: the sparsity falls short
            self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4)
            self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.norm = nn.GroupNorm(2, 8)
            self.head = nn.Linear(8, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.norm(self.up(torch.relu(self.grouped(torch.relu(self.down(x))))))
            return self.head(f.mean((2, 3))) + self.emb.weight[:5, :1].T

    x = np.random.default_rng(0).standard_normal((32, 3, 8, 8)).astype(np.float32)
    pruned, info = _unstructured(Net(), x, 0.6)
    for layer in (pruned.down, pruned.grouped, pruned.up, pruned.head):
        assert 0.2 < float((layer.weight == 0).float().mean()) < 1.0
    assert info["weight_sparsity"] == pytest.approx(0.6, abs=0.005)
    assert not bool((pruned.emb.weight == 0).any())
    skipped = {r["layer"]: r for r in info["skipped"]}
    assert set(skipped) == {"emb", "norm"}
    assert "lookup table" in skipped["emb"]["reason"] and skipped["emb"]["params"] == 8000
    warning = prune.shortfall(info)  # measured over all parameters: far below 60 %
    assert warning is not None and "'emb' (Embedding, 8,000 params)" in warning
    assert "biases" in warning
    assert f"{info['param_sparsity']:.1%}" in warning


def test_attention_tied_and_lazy_layers_are_left_dense_with_the_reason() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.emb = nn.Embedding(10, 8)
            self.tied = nn.Linear(8, 10)
            self.tied.weight = self.emb.weight
            self.lazy = nn.LazyLinear(3)
            self.fc = nn.Linear(8, 8)

    skipped = {r["layer"]: r["reason"] for r in prune.skipped_layers(Net())}
    assert "never be applied" in skipped["attn"] and "never be applied" in skipped["attn.out_proj"]
    assert "shared with 'emb'" in skipped["tied"]
    assert "never ran" in skipped["lazy"]
    net = Net()
    assert [m for m, _ in prune.prunable(net)] == [net.fc]


class Residual(nn.Module):
    """A residual (non-Sequential) 3-channel image model with a depthwise block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)
        f = torch.relu(f + self.block(f))
        return self.head(f.mean((2, 3)))


def test_residual_rgb_model_pruned_structurally() -> None:
    torch.manual_seed(0)
    model = Residual().eval()
    example = torch.randn(1, 3, 16, 16)
    x = torch.randn(4, 3, 16, 16)
    pruned = prune_channels(model, example, 0.5)
    assert pruned.stem[0].weight.shape == (8, 3, 3, 3)
    depthwise = pruned.block[0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 8
    assert pruned.block[3].out_channels == 8  # both sides of the add shrink together
    assert pruned.head.weight.shape == (6, 8)
    assert pruned.eval()(x).shape == (4, 6)
    kept = {r["layer"]: r["reason"] for r in kept_whole(model, pruned, example)}
    assert set(kept) == {"head"} and "output" in kept["head"]
    # and through prune_model: the report rows and the measured shrink
    cfg = PruneConfig(method="structured", schedule="oneshot", sparsity=0.5, finetune_epochs=0)
    split = Split(x.numpy(), np.zeros(4, np.int64), np.arange(4))
    pruned2, info = prune.prune_model(model, cfg, split, objective_for=lambda _m: CrossEntropy(),
                                      example=example, seed=0, batch_size=4)
    assert info["params_before"] == sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in pruned2.parameters()) < 0.5 * info["params_before"]
    rows = {r["layer"]: r for r in info["layers"]}
    assert rows["stem.0"]["before"] == [16, 3, 3, 3] and rows["stem.0"]["after"] == [8, 3, 3, 3]
    assert [r["layer"] for r in info["kept_whole"]] == ["head"]


def test_1d_cnn_pruned_structurally_keeps_its_output() -> None:
    torch.manual_seed(0)
    model = cnn_1d().eval()
    example = torch.randn(1, 2, 32)
    pruned = prune_channels(model, example, 0.5)
    assert pruned[0].out_channels == 8 and pruned[3].groups == 8
    assert pruned[-1].out_features == 4
    assert pruned(torch.randn(3, 2, 32)).shape == (3, 4)


def test_fully_convolutional_head_keeps_its_channels() -> None:
    """No Linear at all: the last conv that runs gives the outputs and must stay whole."""
    model = nn.Sequential(nn.Conv1d(2, 16, 3, padding=1), nn.ReLU(), nn.Conv1d(16, 5, 1),
                          nn.AdaptiveAvgPool1d(1), nn.Flatten()).eval()
    example = torch.randn(1, 2, 32)
    pruned = prune_channels(model, example, 0.5)
    assert pruned[0].out_channels == 8 and pruned(example).shape == (1, 5)


def test_structured_pruning_says_what_it_leaves_whole_around_attention() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(2, 16, 3, padding=1)
            self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
            self.head = nn.Linear(16, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.conv(x).transpose(1, 2)
            f, _ = self.attn(f, f, f)
            return self.head(f.mean(1))

    torch.manual_seed(0)
    model, example = Net().eval(), torch.randn(1, 2, 8)
    pruned = prune_channels(model, example, 0.5)
    assert pruned(torch.randn(2, 2, 8)).shape == (2, 3)
    kept = {r["layer"]: r["reason"] for r in kept_whole(model, pruned, example)}
    assert set(kept) == {"conv", "attn", "attn.out_proj", "head"}
    assert "head count" in kept["attn"] and "head count" in kept["attn.out_proj"]
    assert "no channel could be removed" in kept["conv"]  # tied to the attention's width


def _pair_models() -> tuple[nn.Sequential, nn.Sequential]:
    teacher = nn.Sequential(
        nn.Conv1d(2, 32, 5, padding=2), nn.ReLU(), nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool1d(2), nn.Conv1d(32, 48, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
        nn.Flatten(), nn.Linear(48, 4))
    student = nn.Sequential(
        nn.Conv1d(2, 8, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),  # length 8: the teacher has none
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(8, 4))
    return teacher, student


def test_auto_pairs_fitnets_and_attention_on_1d_feature_maps() -> None:
    torch.manual_seed(0)
    teacher, student = _pair_models()
    x, y = signals(16)
    example = torch.from_numpy(x[:1])
    pairs = auto_pairs(student, teacher, example)
    # the last layer at each length both compute: 32 ("1", "3"), 16 ("4", "6") and the
    # global pool's 1 ("6", "7"); the student's length 8 has no partner
    assert pairs == [LayerPair("1", "3"), LayerPair("4", "6"), LayerPair("6", "7")]
    online = OnlineTeacher(teacher.eval(), x, [p.teacher for p in pairs])
    kd = Distillation(student, online, pairs, example, temperature=4.0, alpha=0.5,
                      feature_weight=1.0, attention_weight=100.0)
    assert [type(m) for m in kd.projections.values()] == [nn.Conv1d] * 3
    assert kd.projections["0"].in_channels == 8 and kd.projections["0"].out_channels == 32
    student.train()
    index = torch.arange(16)
    logits = student(torch.from_numpy(x))
    loss = kd(logits, index, torch.from_numpy(y))
    logits_only = Distillation(student, online, [], example, temperature=4.0, alpha=0.5)
    plain = logits_only(logits, index, torch.from_numpy(y))
    assert torch.isfinite(loss) and loss.item() > plain.item()  # the feature terms add
    loss.backward()
    assert student[0].weight.grad is not None and float(student[0].weight.grad.abs().sum()) > 0
    assert kd.projections["1"].weight.grad is not None
    kd.close()
    logits_only.close()


def test_1d_attention_maps_and_resizing() -> None:
    f = torch.randn(3, 8, 20)
    a = attention_map(f)
    assert a.shape == (3, 20)
    assert torch.allclose(a, torch.nn.functional.normalize(f.pow(2).mean(1), dim=1))
    assert torch.allclose(a.norm(dim=1), torch.ones(3))
    # a student map of length 16 against a teacher's of length 32: linear interpolation
    teacher, _ = _pair_models()
    student = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
                            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 4))
    x, y = signals(8)
    online = OnlineTeacher(teacher.eval(), x, ["3"])
    kd = Distillation(student, online, [LayerPair("2", "3")], torch.from_numpy(x[:1]),
                      temperature=2.0, alpha=0.5, feature_weight=1.0, attention_weight=10.0)
    loss = kd(student(torch.from_numpy(x)), torch.arange(8), torch.from_numpy(y))
    loss.backward()
    assert torch.isfinite(loss) and student[0].weight.grad is not None
    kd.close()


def test_other_ranks_are_refused_with_the_rank_and_the_fix() -> None:
    video = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.LazyLinear(3))
    example = torch.zeros(1, 1, 4, 8, 8)
    video(example)
    with pytest.raises(ValueError, match=r"rank-5 features.*distill\.pairs"):
        auto_pairs(video, video, example)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    with pytest.raises(ValueError, match=r"has no(ne| conv).*distill\.pairs"):
        auto_pairs(flat, flat, torch.zeros(1, 1, 64))
    # a 1-D student map against a 2-D teacher map: the message gives both ranks
    teacher = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 3))
    student = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 3))
    online = OnlineTeacher(teacher.eval(), np.zeros((2, 1, 8, 8), np.float32), ["0"])
    with pytest.raises(ValueError, match=r"rank 3 with the batch axis.*rank 4.*distill\.pairs"):
        Distillation(student, online, [LayerPair("0", "0")], torch.zeros(1, 1, 64),
                     temperature=2.0, alpha=0.5, feature_weight=1.0)


MODELS_1D = '''
"""A user's 1-D CNNs (sensor signals [N, 2, 32] -> 4 classes): plain PyTorch."""
from torch import nn


def teacher():
    return nn.Sequential(
        nn.Conv1d(2, 32, 5, padding=2), nn.BatchNorm1d(32), nn.ReLU(),
        nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
        nn.Linear(32, 4))


def student():
    return nn.Sequential(
        nn.Conv1d(2, 16, 5, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
        nn.Conv1d(16, 16, 5, padding=2, groups=16), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(16, 24, 1), nn.ReLU(), nn.AdaptiveAvgPool1d(4), nn.Flatten(),
        nn.Linear(96, 4))
'''


def _quick_but_learning() -> str:
    """QUICK, with enough teacher and distillation epochs (seconds for these tiny models) that
    the models learn: the INT8 check of a near-chance model would measure noise."""
    quick = QUICK.replace("[teacher]\nepochs = 2", "[teacher]\nepochs = 15\nlr = 3e-3")
    # distillation: the attention term (default weight) holds the student on a plateau for
    # the first ~20 epochs on these signals, then it learns (measured: 100 % after 40)
    return quick.replace("[distill]\nepochs = 2", "[distill]\nepochs = 40\nfeature_weight = 1.0")


@pytest.mark.slow
def test_build_of_a_1d_cnn_project_reports_measured_sparsity(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    root = tmp_path / "p"
    (root / "data").mkdir(parents=True)
    (root / "models.py").write_text(MODELS_1D)
    x, y = signals(400)
    np.savez(root / "data" / "signals.npz", x=x, y=y)
    (root / "edgekd.toml").write_text(textwrap.dedent("""
        target = "x86-cpu"
        runtimes = ["onnxruntime"]
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "data/signals.npz"
        """).strip() + "\n" + _quick_but_learning())
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        result = CliRunner().invoke(app, ["build", "--config", str(root / "edgekd.toml"),
                                          "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "x86-cpu" / "report.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    distilled, pruned = stages["student_distilled"], stages["student_pruned"]
    assert distilled["pairs"] == [["4", "4"], ["7", "7"]]  # lengths 32 and 16, automatic
    assert "note" not in distilled  # feature and attention terms ran: not logits only
    assert distilled["feature_weight"] == 1.0 and distilled["accuracy"] > 0.6
    layers = {r["layer"]: r for r in pruned["layers"]}
    convs = [r for r in layers.values() if r["type"] == "Conv1d"]
    assert len(convs) == 3 and all(r["zeros"] > 0 for r in convs)
    ranked = [r for r in layers.values() if r["pruned"]]
    assert pruned["weight_sparsity"] == pytest.approx(
        sum(r["zeros"] for r in ranked) / sum(r["params"] for r in ranked), abs=1e-4)
    assert pruned["weight_sparsity"] == pytest.approx(0.5, abs=0.01)  # the default setting
    assert pruned["param_sparsity"] == pytest.approx(
        1 - pruned["nonzero_params"] / pruned["params"], abs=1e-4)
    shown = " ".join(result.output.split())  # the CLI wraps long lines
    assert f"{pruned['weight_sparsity']:.1%} of conv/linear weights zero" in shown
    assert f"{pruned['param_sparsity']:.1%} of all parameters" in shown
    md = (out / "x86-cpu" / "report.md").read_text()
    assert "Measured in the final weights" in md and "BatchNorm1d" in md
    assert "Pruning: layers" in (out / "x86-cpu" / "report.html").read_text()
    assert not [r for r in caplog.records if "automatic layer pairs" in r.getMessage()]
