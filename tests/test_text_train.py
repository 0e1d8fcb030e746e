"""Training models with several inputs (issue 16): a `transformers` BERT teacher and student
fed token ids and an attention mask, a model of two float inputs, token ids without a mask,
and the one-line errors of data that does not match forward. Tiny models made here, real
builds through the CLI, verified in ONNX Runtime; no mocks."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.inputs.dataset import Feeds, InputSpec, Split
from edgekd.train.distill import LogitDistillation
from edgekd.train.inference import accuracy, logits_of
from edgekd.train.loop import Schedule, train
from tests.projects import QUICK

runner = CliRunner()

BERT = '''
from torch import nn
from transformers import BertConfig, BertForSequenceClassification


class Encoder(nn.Module):
    def __init__(self, hidden=32, layers=2, classes=3):
        super().__init__()
        config = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=2 * hidden,
                            max_position_embeddings=32, num_labels=classes,
                            attn_implementation="eager")
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


def teacher(classes=3):
    return Encoder(32, 2, classes)


def student(classes=3):
    return Encoder(16, 1, classes)
'''

OTHERS = '''
import torch
from torch import nn


class Gained(nn.Module):
    """A 1-D signal and a float gain (one per sample) -> classes."""

    def __init__(self, width=8, classes=3):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(1, width, 5, padding=2), nn.ReLU(),
                                 nn.AdaptiveAvgPool1d(4), nn.Flatten(),
                                 nn.Linear(4 * width, classes))

    def forward(self, signal, gain):
        return self.net(signal * gain[:, :, None])


class Bag(nn.Module):
    """Token ids only (no mask): mean of the embeddings -> classes."""

    def __init__(self, width=16, classes=3):
        super().__init__()
        self.embed = nn.Embedding(100, width)
        self.head = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, classes))

    def forward(self, input_ids):
        return self.head(self.embed(input_ids).mean(1))


def gained_teacher():
    return Gained(16)


def gained_student():
    return Gained(4)


def bag_teacher():
    return Bag(32)


def bag_student():
    return Bag(8)
'''

FAST = 'ship = "int8"\n'  # no INT8 variants tried: the test checks training, not timing


def _tokens(n: int, seed: int, length: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The class is which of 3 token groups (ids 10-39, 40-69, 70-99) appears most; the
    sentences are 8..16 tokens long, padded with id 0 and mask 0."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    ids, mask = np.zeros((n, length), np.int64), np.zeros((n, length), np.int64)
    for i in range(n):
        k = int(rng.integers(8, length + 1))
        groups = rng.choice(3, size=k, p=[0.7 if g == y[i] else 0.15 for g in range(3)])
        ids[i, :k] = 10 + 30 * groups + rng.integers(0, 30, k)
        mask[i, :k] = 1
    return ids, mask, y


def _signals(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy sine of one of 3 frequencies, at a random amplitude that ``gain`` undoes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.arange(32, dtype=np.float32)
    amp = rng.uniform(0.2, 2.0, n).astype(np.float32)
    x = amp[:, None] * np.sin(2 * np.pi * (y[:, None] + 1) * t / 16) \
        + 0.1 * rng.standard_normal((n, 32))
    return x[:, None].astype(np.float32), (1 / amp)[:, None].astype(np.float32), y


def _build(folder: Path, toml: str, *extra: str) -> tuple[int, str]:
    (folder / "edgekd.toml").write_text(toml)
    result = runner.invoke(app, ["build", "--config", str(folder / "edgekd.toml"), "--target",
                                 "x86-cpu", "--out", str(folder / "out"), *extra])
    return result.exit_code, result.output


def _report(folder: Path) -> dict:
    return json.loads((folder / "out" / "x86-cpu" / "report.json").read_text())


def _stages(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["stages"]}


def _int8_verified(report: dict) -> None:
    int8 = [a for a in report["artifacts"] if a["runtime"] == "onnxruntime"
            and a["precision"] == "int8"]
    # In the report only when it passed verification (a failed one fails the build).
    assert int8 and all(a["top1_agreement"] >= 0.9 for a in int8), report["artifacts"]


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bert")
    (folder / "models.py").write_text(BERT)
    for name, n, seed in (("train", 400, 0), ("test", 150, 1)):
        ids, mask, y = _tokens(n, seed)
        np.savez(folder / f"{name}.npz", input_ids=ids, attention_mask=mask, y=y)
    return folder


def test_bert_teacher_trained_distilled_pruned_int8_verified(bert: Path) -> None:
    """A `transformers` teacher and a smaller student on token ids + mask: the teacher
    trains, the student is distilled layer by layer (TinyBERT: the layer map found from the
    two configs, recorded in the report) and pruned, and the INT8 artifact passes
    verification in ONNX Runtime."""
    code, out = _build(bert, FAST + textwrap.dedent('''
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "train.npz"
        test = "test.npz"
        ''') + QUICK.replace("[teacher]\nepochs = 2", "[teacher]\nepochs = 6\nlr = 3e-3")
        .replace("[distill]\nepochs = 2", "[distill]\nepochs = 3\nlr = 3e-3"))
    assert code == 0, out
    report = _report(bert)
    stages = _stages(report)
    assert list(stages) == ["teacher", "student_scratch", "student_distilled", "student_pruned"]
    assert stages["teacher"]["accuracy"] > 0.6, stages["teacher"]  # chance: 1/3
    kd = stages["student_distilled"]["transformer"]
    assert kd["layer_map"] == [[0, 1]] and (kd["student_layers"], kd["teacher_layers"]) == (1, 2)
    assert "note" not in stages["student_distilled"]
    assert stages["student_pruned"]["weight_sparsity"] > 0.3
    assert [s["name"] for s in report["inputs"]] == ["input_ids", "attention_mask"]
    _int8_verified(report)


def test_bert_structured_prunes_heads_and_feed_forward_channels(bert: Path) -> None:
    """Structured pruning of a BERT student (cached teacher and distilled stages reused):
    whole attention heads and feed-forward channels go (compress/transformer_prune.py), the
    matrices really shrink."""
    code, out = _build(bert, FAST + textwrap.dedent('''
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "train.npz"
        test = "test.npz"
        ''') + QUICK.replace("[teacher]\nepochs = 2", "[teacher]\nepochs = 6\nlr = 3e-3")
        .replace("[distill]\nepochs = 2", "[distill]\nepochs = 3\nlr = 3e-3"),
        "--set", "prune.method=structured", "--set", "prune.sparsity=0.25")
    assert code == 0, out
    report = _report(bert)
    pruned = _stages(report)["student_pruned"]
    assert pruned["macs_after"] < pruned["macs_before"]
    assert pruned["params"] < _stages(report)["student_distilled"]["params"]
    assert not any(k["type"].endswith("Attention") for k in pruned["kept_whole"])
    _int8_verified(report)


def test_two_float_inputs_trained_and_distilled(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(OTHERS)
    for name, n, seed in (("train", 300, 0), ("test", 100, 1)):
        signal, gain, y = _signals(n, seed)
        np.savez(tmp_path / f"{name}.npz", signal=signal, gain=gain, y=y)
    code, out = _build(tmp_path, FAST + textwrap.dedent('''
        [model]
        teacher = "models.py:gained_teacher"
        student = "models.py:gained_student"
        [data]
        train = "train.npz"
        test = "test.npz"
        ''') + QUICK.replace("[teacher]\nepochs = 2", "[teacher]\nepochs = 8\nlr = 1e-2"))
    assert code == 0, out
    report = _report(tmp_path)
    stages = _stages(report)
    assert stages["teacher"]["accuracy"] > 0.6, stages["teacher"]
    assert stages["student_distilled"]["accuracy"] > 0.34
    assert [s["name"] for s in report["inputs"]] == ["signal", "gain"]
    _int8_verified(report)


def test_token_ids_without_mask(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(OTHERS)
    for name, n, seed in (("train", 300, 0), ("test", 100, 1)):
        ids, _, y = _tokens(n, seed)
        np.savez(tmp_path / f"{name}.npz", input_ids=ids, y=y)
    code, out = _build(tmp_path, FAST + textwrap.dedent('''
        [model]
        teacher = "models.py:bag_teacher"
        student = "models.py:bag_student"
        [data]
        train = "train.npz"
        test = "test.npz"
        ''') + QUICK.replace("[teacher]\nepochs = 2", "[teacher]\nepochs = 8\nlr = 1e-2"))
    assert code == 0, out
    report = _report(tmp_path)
    stages = _stages(report)
    assert stages["teacher"]["accuracy"] > 0.6, stages["teacher"]
    assert [s["name"] for s in report["inputs"]] == ["input_ids"]
    _int8_verified(report)


def _one_error_line(code: int, out: str, expected: int, says: str) -> None:
    lines = [line for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert code == expected, out
    assert len(errors) == 1 and says in errors[0], out
    assert "Traceback" not in out


def test_data_without_the_mask_forward_requires_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "models.py").write_text(BERT)
    ids, _, y = _tokens(60, 0)
    np.savez(tmp_path / "train.npz", input_ids=ids, y=y)
    np.savez(tmp_path / "test.npz", input_ids=ids[:30], y=y[:30])
    code, out = _build(tmp_path, textwrap.dedent('''
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "train.npz"
        test = "test.npz"
        ''') + QUICK)
    _one_error_line(code, out, 2, "attention_mask")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("report.json"))


def test_views_on_token_ids_is_one_line(bert: Path, tmp_path: Path) -> None:
    """A mixup of token ids means nothing: distill.views on a text model is refused."""
    for f in ("models.py", "train.npz", "test.npz"):
        (tmp_path / f).write_bytes((bert / f).read_bytes())
    code, out = _build(tmp_path, textwrap.dedent('''
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "train.npz"
        test = "test.npz"
        ''') + QUICK, "--set", "distill.views=2")
    _one_error_line(code, out, 2, "distill.views")


# -- the loop itself, on several inputs and without labels -----------------------------


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(100, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask[..., None].float()
        return self.head((self.embed(input_ids) * m).sum(1) / m.sum(1).clamp(min=1))


def _text_split(n: int, seed: int, labeled: bool = True) -> tuple[Split, tuple[InputSpec, ...]]:
    ids, mask, y = _tokens(n, seed)
    specs = (InputSpec("input_ids", "int64", (16,), kind="tokens"),
             InputSpec("attention_mask", "int64", (16,), kind="mask"))
    return Split(ids, y if labeled else None, np.arange(n),
                 {"input_ids": ids, "attention_mask": mask}), specs


def test_loop_feeds_every_input_by_name() -> None:
    split, specs = _text_split(300, 0)
    test, _ = _text_split(100, 1)
    model = train(_TwoInputs(), split, Schedule(15, 1e-2, 32, shift=0.2, flip=True), seed=0,
                  specs=specs)
    assert accuracy(model, test, specs) > 0.8


def test_loop_trains_unlabeled_data_with_an_objective_that_needs_no_labels() -> None:
    split, specs = _text_split(300, 0)
    teacher = train(_TwoInputs(), split, Schedule(15, 1e-2, 32), seed=0, specs=specs)
    unlabeled, _ = _text_split(300, 0, labeled=False)
    soft = logits_of(teacher, Feeds(specs, unlabeled.arrays(specs)))
    student = train(_TwoInputs(), unlabeled, Schedule(15, 1e-2, 32), seed=1, specs=specs,
                    objective=LogitDistillation(soft, temperature=2.0, alpha=0.5))
    test, _ = _text_split(100, 1)
    assert accuracy(student, test, specs) > 0.7
    with pytest.raises(ValueError, match="needs labeled samples"):
        train(_TwoInputs(), unlabeled, Schedule(1, 1e-2, 32), seed=0, specs=specs)


EMBEDDER = '''
import torch
from torch import nn
from transformers import BertConfig, BertModel


class Encoder(nn.Module):
    """A sentence encoder: the masked mean of BERT's last hidden state."""
    def __init__(self, hidden=32, layers=2):
        super().__init__()
        config = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=2 * hidden,
                            max_position_embeddings=32, initializer_range=0.2,
                            attn_implementation="eager")
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids, attention_mask):
        h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)


def teacher():
    torch.manual_seed(0)
    return Encoder(32, 2)
'''


def test_sentence_encoder_distilled_on_unlabeled_text_from_teacher_layers(
        tmp_path: Path) -> None:
    """A sentence encoder without labels: the student is the teacher's every 2nd layer
    (DistilBERT's initialisation), learns the teacher's embeddings (cosine) with hidden-state
    and attention terms on unlabeled token data, loses half its heads and FFN channels, and
    its INT8 artifact holds the cosine limit in ONNX Runtime."""
    from safetensors.torch import save_file

    (tmp_path / "models.py").write_text(EMBEDDER)
    import sys
    sys.path.insert(0, str(tmp_path))
    try:
        sys.modules.pop("models", None)  # another test's models.py
        import models  # type: ignore[import-not-found]
        save_file(models.teacher().state_dict(), str(tmp_path / "teacher.safetensors"))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("models", None)
    for name, n, seed in (("train", 400, 0), ("test", 100, 1)):
        ids, mask, _ = _tokens(n, seed)
        np.savez(tmp_path / f"{name}.npz", input_ids=ids, attention_mask=mask)  # no y
    code, out = _build(tmp_path, FAST + textwrap.dedent('''
        [model]
        teacher = "models.py:teacher"
        teacher_weights = "teacher.safetensors"
        student_from_teacher = { every = 2 }
        task = "regression"
        [data]
        train = "train.npz"
        test = "test.npz"
        [distill]
        epochs = 4
        lr = 3e-3
        [prune]
        method = "structured"
        sparsity = 0.5
        finetune_epochs = 1
        [bench]
        warmup = 2
        runs = 10
        seconds = 0
        '''))
    assert code == 0, out
    report = _report(tmp_path)
    stages = _stages(report)
    assert list(stages) == ["teacher", "student_distilled", "student_pruned"]  # no scratch
    kd = stages["student_distilled"]
    assert kd["accuracy"] is None and kd["teacher_cosine"] > 0.8, kd
    assert kd["transformer"]["layer_map"] == [[0, 1]]
    assert kd["transformer"]["output_loss"] == "cosine"
    assert stages["student_pruned"]["params"] < kd["params"]
    int8 = [a for a in report["artifacts"] if a["precision"] == "int8"]
    assert int8 and all(o["cosine_min"] >= 0.99 for a in int8 for o in a["outputs"]), int8
    md = (tmp_path / "out" / "x86-cpu" / "report.md").read_text()
    assert "cosine with the teacher" in md and "distilled layer by layer" in md
    assert "fed as stored" in md  # token ids are not preprocessed


@pytest.mark.parametrize(("model", "message"), [
    ('teacher = "models.py:teacher"\nteacher_weights = "teacher.safetensors"\n'
     'student = "models.py:teacher"\nstudent_from_teacher = { every = 2 }',
     "remove model.student"),
    ('teacher = "models.py:teacher"\nteacher_weights = "teacher.safetensors"\n'
     'student_from_teacher = { every = 5 }', "every"),
    ('teacher = "models.py:teacher"\nstudent_from_teacher = { every = 2 }\n'
     'task = "regression"', "cannot be trained here"),
])
def test_students_from_teachers_bad_settings_are_one_line(tmp_path: Path, model: str,
                                                          message: str) -> None:
    from safetensors.torch import save_file

    (tmp_path / "models.py").write_text(EMBEDDER)
    save_file({"w": torch.zeros(1)}, str(tmp_path / "teacher.safetensors"))
    ids, mask, _ = _tokens(20, 0)
    np.savez(tmp_path / "train.npz", input_ids=ids, attention_mask=mask)
    code, out = _build(tmp_path, f"[model]\n{model}\n[data]\ntrain = \"train.npz\"\n"
                                 "test = \"train.npz\"\n")
    lines = out.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), out
    assert message in lines[0], out


@pytest.mark.parametrize(("ids", "message"), [
    (lambda ids: np.where(ids == ids.max(), 5000, ids), "input_ids 0..5000"),
    (lambda ids: ids.astype(np.float32), "store token ids as integers"),
])
def test_token_ids_the_embedding_cannot_look_up_are_one_line(bert: Path, tmp_path: Path,
                                                             ids, message: str) -> None:
    """Ids outside the vocabulary (or stored as floats) stop the teacher's training with
    one line naming the input and its range, not torch's IndexError trace; nothing is
    written."""
    for name in ("models.py", "test.npz"):
        (tmp_path / name).write_bytes((bert / name).read_bytes())
    data = np.load(bert / "train.npz")
    np.savez(tmp_path / "train.npz", input_ids=ids(data["input_ids"]),
             attention_mask=data["attention_mask"], y=data["y"])
    code, out = _build(tmp_path, textwrap.dedent('''
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "train.npz"
        test = "test.npz"
        ''') + QUICK)
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and message in errors[0], out
    assert "Traceback" not in out
    assert not (tmp_path / "out" / "x86-cpu").exists()
