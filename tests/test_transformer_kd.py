"""Transformer distillation (edgekd.train.transformer_kd) on tiny ``transformers`` BERT
encoders made here with random weights: the layer map from the configs, each loss (zero for
a student equal to its teacher, positive otherwise), gradients, and short trainings that
must measurably move the student towards the teacher (hidden states and attention; sentence
embeddings learnt from unlabeled text)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.inputs.dataset import Split
from edgekd.settings.recipe import DistillConfig
from edgekd.train.transformer_kd import (
    TransformerDistillation,
    find_encoder,
    layer_map,
    transformer_objective,
    uniform_map,
)

transformers = pytest.importorskip("transformers")

SEQ, VOCAB = 16, 100


def bert(layers: int, hidden: int = 32, heads: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=2 * hidden,
                                  max_position_embeddings=64, attn_implementation="eager",
                                  initializer_range=0.2,  # trained-like, peaked attention
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertModel(cfg, add_pooling_layer=False)


class Classifier(nn.Module):
    """A user's wrapper: forward returns logits only."""

    def __init__(self, layers: int, hidden: int = 32, heads: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.encoder = bert(layers, hidden, heads, seed)
        self.head = nn.Linear(hidden, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(states.last_hidden_state[:, 0])


class Embedder(nn.Module):
    """A sentence encoder: the mean of the kept tokens' last hidden states."""

    def __init__(self, layers: int, hidden: int = 32, heads: int = 2, seed: int = 0) -> None:
        super().__init__()
        self.encoder = bert(layers, hidden, heads, seed)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.encoder(input_ids, attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(1) / m.sum(1)


def tokens(n: int, seed: int, labels: bool = True) -> Split:
    """Synthetic token data: ids 1..99, the last tokens of some samples padded (mask 0)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, size=(n, SEQ)).astype(np.int64)
    mask = np.ones((n, SEQ), np.int64)
    mask[:, SEQ - 6:] = rng.integers(0, 2, size=(n, 6)).cumprod(1)
    y = (ids[:, 1] % 3).astype(np.int64) if labels else None
    return Split(ids, y, np.arange(n), {"input_ids": ids, "attention_mask": mask})


def run(model: nn.Module, data: Split, idx: torch.Tensor) -> torch.Tensor:
    return model(torch.from_numpy(data.extra["input_ids"][idx.numpy()]),
                 torch.from_numpy(data.extra["attention_mask"][idx.numpy()]))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- layer map --------------------------------------------------------------------------

def test_uniform_map_from_the_configs():
    assert uniform_map(2, 4) == [(0, 1), (1, 3)]
    assert uniform_map(3, 12) == [(0, 3), (1, 7), (2, 11)]
    assert uniform_map(1, 2) == [(0, 1)]
    assert uniform_map(2, 3) == [(0, 1), (1, 2)]  # 1.5 rounds up
    assert uniform_map(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    student, teacher = Classifier(2), Classifier(4, hidden=48, heads=4)
    s, t = find_encoder(student), find_encoder(teacher)
    assert s is not None and t is not None
    assert (s.depth, s.hidden_size, s.heads) == (2, 32, 2)
    assert (t.depth, t.hidden_size, t.heads) == (4, 48, 4)
    objective = transformer_objective(student, teacher, tokens(8, 0), DistillConfig(),
                                      task="classification")
    assert objective is not None and objective.pairs == [(0, 1), (1, 3)]
    objective.close()
    # A wrapped HF task model: its inner BertModel is the encoder.
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3,
                                  num_attention_heads=2, intermediate_size=64)
    wrapped = nn.ModuleDict({"m": transformers.BertForSequenceClassification(cfg)})
    found = find_encoder(wrapped)
    assert found is not None and found.module is wrapped["m"].bert and found.depth == 3


def test_explicit_layer_map_is_checked_against_the_layer_counts():
    assert layer_map(2, 4, [[0, 0], [1, 2]]) == [(0, 0), (1, 2)]
    with pytest.raises(ValueError, match=r"pair \[1, 4\] is out of range: the student has 2 "
                       r"layers \(0..1\) and the teacher 4 \(0..3\)"):
        layer_map(2, 4, [[0, 1], [1, 4]])
    config = DistillConfig(layer_map=[[2, 0]])  # lists, as TOML gives them
    assert config.layer_map == ((2, 0),)
    with pytest.raises(ValueError, match="student has 2 layers"):
        transformer_objective(Classifier(2), Classifier(4), tokens(8, 0), config,
                              task="classification")
    with pytest.raises(ValueError, match="layer_map must be"):
        DistillConfig(layer_map=[[0, -1]])
    with pytest.raises(ValueError, match="allowed: kl, value_relation"):
        DistillConfig(attention_loss="mse")
    with pytest.raises(ValueError, match="allowed: cosine, mse"):
        DistillConfig(embedding_loss="l1")


def test_not_a_transformer_is_left_to_the_other_objectives():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    assert find_encoder(cnn) is None
    assert transformer_objective(cnn, Classifier(2), tokens(8, 0), DistillConfig(),
                                 task="classification") is None


# --- each loss: zero for a copy, positive otherwise, gradients ---------------------------

CONFIGS = {
    "hidden": DistillConfig(transformer_attention_weight=0.0),
    "kl": DistillConfig(hidden_weight=0.0, attention_loss="kl"),
    "value_relation": DistillConfig(hidden_weight=0.0, attention_loss="value_relation"),
}


def _terms(student: nn.Module, teacher: nn.Module, config: DistillConfig, task: str,
           data: Split) -> tuple[TransformerDistillation, torch.Tensor, dict[str, torch.Tensor]]:
    objective = transformer_objective(student, teacher, data, config, task=task)
    assert objective is not None
    idx = torch.arange(len(data))
    out = run(student, data, idx)
    loss = objective(out, idx, None)
    return objective, loss, {k: v.detach() for k, v in objective.terms().items()}


@pytest.mark.parametrize("term", sorted(CONFIGS))
def test_each_loss_is_zero_for_a_copy_of_the_teacher(term):
    teacher = Embedder(2).eval()
    student = copy.deepcopy(teacher)
    objective, loss, terms = _terms(student, teacher, CONFIGS[term], "embedding", tokens(8, 1))
    name = "hidden" if term == "hidden" else "attention"
    assert set(terms) == {name}
    assert float(terms[name]) == pytest.approx(0.0, abs=1e-6)
    assert loss.item() == pytest.approx(0.0, abs=1e-5)  # the cosine term too
    objective.close()


@pytest.mark.parametrize("term", sorted(CONFIGS))
@pytest.mark.parametrize("shape", [(1, 32, 2), (1, 16, 4)])  # shallower; narrower, other heads
def test_each_loss_is_positive_and_trains_student_and_projection(term, shape):
    teacher = Classifier(2, seed=0).eval()
    student = Classifier(*shape, seed=1).train()
    objective, loss, terms = _terms(student, teacher, CONFIGS[term], "classification",
                                    tokens(8, 2))
    assert all(float(v) > 1e-3 for v in terms.values()), terms
    loss.backward()
    grads = [p.grad for p in student.encoder.parameters() if p.requires_grad]
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    if term == "hidden":
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0
                   for p in objective.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    objective.close()
    assert not student.encoder._forward_hooks and not teacher.encoder._forward_pre_hooks


def test_the_mask_keeps_padding_out_of_the_hidden_term():
    """Padded tokens of a copy with different padding-token embeddings change nothing."""
    teacher = Embedder(1).eval()
    student = copy.deepcopy(teacher)
    data = tokens(8, 3)
    # Put a distinct id on every padded position: the padded states differ from anything
    # the copy would compute for kept tokens, yet only kept tokens count.
    ids = data.extra["input_ids"].copy()
    ids[data.extra["attention_mask"] == 0] = 0
    data = Split(ids, None, data.index, {"input_ids": ids,
                                         "attention_mask": data.extra["attention_mask"]})
    with torch.no_grad():
        student.encoder.embeddings.word_embeddings.weight[0] += 5.0  # only padding uses id 0
    objective, _, terms = _terms(student, teacher, CONFIGS["hidden"], "embedding", data)
    assert float(terms["hidden"]) == pytest.approx(0.0, abs=1e-6)
    objective.close()


# --- short trainings --------------------------------------------------------------------

def _train(student: nn.Module, objective: TransformerDistillation, data: Split, steps: int,
           *, labels: bool, lr: float = 3e-3, batch: int = 32) -> None:
    params = list(student.parameters()) + list(objective.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    gen = torch.Generator().manual_seed(0)
    y = None if data.y is None else torch.from_numpy(data.y)
    student.train()
    for _ in range(steps):
        idx = torch.randperm(len(data), generator=gen)[:batch]
        loss = objective(run(student, data, idx), idx, y[idx] if labels and y is not None
                         else None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    student.eval()


def _held_out_terms(student: nn.Module, objective: TransformerDistillation,
                    held_out: Split) -> dict[str, float]:
    """The objective's terms on held-out data (the objective reads its split's arrays)."""
    objective.split = held_out
    idx = torch.arange(len(held_out))
    with torch.no_grad():
        objective(run(student, held_out, idx), idx, None)
        return {k: float(v) for k, v in objective.terms().items()}


def test_hidden_and_attention_distillation_moves_a_shallower_student_to_its_teacher():
    teacher = Classifier(2, seed=0).eval()
    student = Classifier(1, seed=1)
    train, held_out = tokens(512, 4), tokens(128, 5)
    objective = transformer_objective(student, teacher, train, DistillConfig(),
                                      task="classification")
    assert objective is not None
    before = _held_out_terms(student, objective, held_out)
    objective.split = train
    _train(student, objective, train, 300, labels=True)
    after = _held_out_terms(student, objective, held_out)
    objective.close()
    assert after["hidden"] < 0.3 * before["hidden"], (before, after)
    assert after["attention"] < 0.5 * before["attention"], (before, after)


def _cosines(student: nn.Module, teacher: nn.Module, data: Split) -> tuple[float, float]:
    """Mean cosine of student and teacher embeddings on ``data``, and the same after taking
    the teacher embeddings' mean from both: a random BERT's mean-pooled vectors share a
    large common part (any constant near it scores a cosine of 0.98), so the centred cosine
    is what says the student learnt each sentence's own embedding."""
    idx = torch.arange(len(data))
    with torch.no_grad():
        s, t = run(student, data, idx), run(teacher, data, idx)
    mean = t.mean(0, keepdim=True)
    cos = torch.nn.functional.cosine_similarity
    return float(cos(s, t).mean()), float(cos(s - mean, t - mean).mean())


def test_embedding_distillation_learns_from_unlabeled_text():
    teacher = Embedder(2, seed=0).eval()
    student = Embedder(1, seed=1)
    train, held_out = tokens(512, 6, labels=False), tokens(128, 7, labels=False)
    objective = transformer_objective(student, teacher, train,
                                      DistillConfig(attention_loss="value_relation"),
                                      task="embedding")
    assert objective is not None
    before = _cosines(student, teacher, held_out)
    _train(student, objective, train, 300, labels=False, lr=1e-2)
    objective.close()
    after = _cosines(student, teacher, held_out)
    # Measured: cosine 0.24 -> 0.99, centred -0.02 -> 0.59.
    assert after[0] > 0.9, (before, after)
    assert after[1] > 0.4 and after[1] > before[1] + 0.3, (before, after)


def test_through_the_training_loop_on_unlabeled_token_data():
    """edgekd.train.loop.train feeds the student by name; the objective feeds the teacher the
    same way from the split it was given."""
    from edgekd.inputs.dataset import InputSpec
    from edgekd.train.loop import Schedule, train

    specs = (InputSpec("input_ids", "int64", (SEQ,), kind="tokens"),
             InputSpec("attention_mask", "int64", (SEQ,), kind="mask"))
    teacher = Embedder(2, seed=0).eval()
    student = Embedder(1, seed=1)
    data, held_out = tokens(256, 8, labels=False), tokens(64, 9, labels=False)
    objective = transformer_objective(student, teacher, data, DistillConfig(), task="embedding",
                                      specs=specs)
    assert objective is not None
    before = _held_out_terms(student, objective, held_out)
    objective.split = data
    train(student, data, Schedule(epochs=8, lr=1e-2, batch_size=32), seed=0,
          objective=objective, specs=specs)
    after = _held_out_terms(student, objective, held_out)
    objective.close()
    assert after["hidden"] < 0.5 * before["hidden"], (before, after)
    assert _cosines(student, teacher, held_out)[0] > 0.9


class DistilClassifier(nn.Module):
    """A DistilBERT encoder (``transformer.layer``, ``attention.q_lin``...) in a wrapper."""

    def __init__(self, layers: int, dim: int = 32, heads: int = 2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        cfg = transformers.DistilBertConfig(vocab_size=VOCAB, dim=dim, n_layers=layers,
                                            n_heads=heads, hidden_dim=2 * dim,
                                            max_position_embeddings=64, dropout=0.0,
                                            attention_dropout=0.0, initializer_range=0.2,
                                            attn_implementation="eager")
        self.encoder = transformers.DistilBertModel(cfg)
        self.head = nn.Linear(dim, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self.head(states.last_hidden_state[:, 0])


@pytest.mark.parametrize("term", sorted(CONFIGS))
def test_distilbert_is_distilled_layer_by_layer_too(term):
    """DistilBERT keeps its layers in ``transformer.layer`` and its projections in
    ``attention.q_lin/k_lin/v_lin``: found, paired from its config, every term trains
    (a user's DistilBERT build had fallen back to logits only)."""
    teacher = DistilClassifier(4, seed=0).eval()
    student = DistilClassifier(2, seed=1).train()
    found = find_encoder(student)
    assert found is not None and found.depth == 2 and found.heads == 2
    objective, loss, terms = _terms(student, teacher, CONFIGS[term], "classification",
                                    tokens(8, 2))
    assert objective.pairs == [(0, 1), (1, 3)]
    assert all(float(v) > 1e-3 for v in terms.values()), terms
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0
               for p in student.encoder.parameters())
    objective.close()
