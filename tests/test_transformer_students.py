"""Students from teachers (edgekd.train.students) and head / FFN pruning of transformers
(edgekd.compress.transformer_prune) on tiny randomly initialised ``transformers`` models made
here: layers copied weight for weight, matrices that really shrink, and a pruned model that
exports to ONNX and gives the same outputs in ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertModel,
)

from edgekd.compress.transformer_prune import head_importance, prune_transformer  # noqa: E402
from edgekd.errors import UsageError  # noqa: E402
from edgekd.train.students import student_from_teacher  # noqa: E402

HIDDEN, HEADS, FFN, LAYERS, SEQ = 32, 4, 64, 4, 16


class Classifier(nn.Module):
    """A user's wrapper: forward(input_ids, attention_mask) -> logits."""

    def __init__(self) -> None:
        super().__init__()
        config = BertConfig(vocab_size=100, hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, intermediate_size=FFN,
                            max_position_embeddings=64, num_labels=3,
                            attn_implementation="eager")
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


def teacher() -> Classifier:
    torch.manual_seed(0)
    return Classifier().eval()


def batch(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(1, 100, size=(n, SEQ)).astype(np.int64))
    mask = torch.ones(n, SEQ, dtype=torch.long)
    mask[0, 12:] = 0  # one padded sample: the mask is used, not constant
    return ids, mask


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_second_layer_copies_layers_1_and_3() -> None:
    t = teacher()
    s = student_from_teacher(t, every=2).eval()
    assert s.bert.config.num_hidden_layers == 2
    assert t.bert.config.num_hidden_layers == LAYERS  # the teacher is left as it was
    t_layers, s_layers = t.bert.bert.encoder.layer, s.bert.bert.encoder.layer
    assert len(s_layers) == 2
    for s_index, t_index in ((0, 1), (1, 3)):
        t_state, s_state = t_layers[t_index].state_dict(), s_layers[s_index].state_dict()
        assert t_state.keys() == s_state.keys()
        assert all(torch.equal(t_state[k], s_state[k]) for k in t_state)
    for part in ("bert.bert.embeddings", "bert.classifier", "bert.bert.pooler"):
        t_state = t.get_submodule(part).state_dict()
        s_state = s.get_submodule(part).state_dict()
        assert all(torch.equal(t_state[k], s_state[k]) for k in t_state)
    out = s(*batch())
    assert out.shape == (3, 3) and torch.isfinite(out).all()
    assert n_params(s) < n_params(t)


def test_chosen_layers_and_distilbert() -> None:
    torch.manual_seed(0)
    d = DistilBertModel(DistilBertConfig(vocab_size=100, dim=HIDDEN, n_layers=3, n_heads=HEADS,
                                         hidden_dim=FFN, max_position_embeddings=64)).eval()
    s = student_from_teacher(d, layers=[0, 2]).eval()
    assert s.config.n_layers == 2
    assert torch.equal(s.transformer.layer[1].ffn.lin1.weight,
                       d.transformer.layer[2].ffn.lin1.weight)
    ids, mask = batch()
    assert s(input_ids=ids, attention_mask=mask).last_hidden_state.shape == (3, SEQ, HIDDEN)


def test_narrow_config_runs_and_is_seeded() -> None:
    t = teacher()
    s = student_from_teacher(t, hidden_size=16, num_attention_heads=2, intermediate_size=24)
    s.eval()
    cfg = s.bert.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size) == (16, 2, 24)
    assert s.bert.bert.encoder.layer[0].intermediate.dense.weight.shape == (24, 16)
    assert s(*batch()).shape == (3, 3)
    again = student_from_teacher(t, hidden_size=16, num_attention_heads=2, intermediate_size=24)
    assert all(torch.equal(a, b) for a, b in zip(s.state_dict().values(),
                                                 again.state_dict().values(), strict=True))
    assert t.bert.config.hidden_size == HIDDEN


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"every": 0}, "every=0"),
    ({"every": LAYERS + 1}, "every=5"),
    ({"layers": []}, "layers=[]"),
    ({"layers": [3, 1]}, "increasing"),
    ({"layers": [0, LAYERS]}, "from 0 to 3"),
    ({"every": 2, "layers": [1]}, "not both"),
    ({"hidden_size": 30}, "not divisible"),
    ({"num_attention_heads": 5}, "not divisible"),
    ({"hidden_sise": 16}, "hidden_sise"),
    ({"every": 2, "hidden_size": 16, "num_attention_heads": 2}, "hidden_size"),
    ({"intermediate_size": 0}, ">= 1"),
    ({}, "needs every"),
])
def test_bad_student_requests_are_one_clear_error(kwargs: dict, words: str) -> None:
    with pytest.raises(UsageError) as err:
        student_from_teacher(teacher(), **kwargs)
    message = str(err.value)
    assert words in message and "\n" not in message


def test_no_transformer_inside_is_one_clear_error() -> None:
    with pytest.raises(UsageError, match="holds no transformers model"):
        student_from_teacher(nn.Sequential(nn.Linear(4, 4)), every=2)
    with pytest.raises(UsageError, match="holds no transformers model"):
        prune_transformer(nn.Sequential(nn.Linear(4, 4)), heads=0.5)


def test_pruning_removes_heads_and_channels() -> None:
    t = teacher()
    p, info = prune_transformer(t, heads=0.5, ffn=0.25)
    p.eval()
    head = HIDDEN // HEADS
    for layer in p.bert.bert.encoder.layer:
        attention = layer.attention.self
        assert attention.num_attention_heads == 2 and attention.all_head_size == 2 * head
        for lin in (attention.query, attention.key, attention.value):
            assert lin.weight.shape == (2 * head, HIDDEN) and lin.bias.shape == (2 * head,)
        assert layer.attention.output.dense.weight.shape == (HIDDEN, 2 * head)
        assert layer.intermediate.dense.weight.shape == (48, HIDDEN)
        assert layer.output.dense.weight.shape == (HIDDEN, 48)
    # Per layer: Q, K, V lose 2 heads' rows (weights and biases), the output projection
    # their columns; the FFN loses 16 channels' rows + biases and columns.
    per_layer = 3 * (2 * head * HIDDEN + 2 * head) + HIDDEN * 2 * head \
        + (16 * HIDDEN + 16) + HIDDEN * 16
    assert info["params_before"] == n_params(t)
    assert n_params(t) - n_params(p) == LAYERS * per_layer == info["params_before"] - info[
        "params_after"]
    assert p.bert.config.intermediate_size == 48
    assert p.bert.config.num_attention_heads == HEADS  # derives the head size: left as it was
    assert set(p.bert.config.pruned_heads) == set(range(LAYERS)) == set(info["heads_removed"])
    out = p(*batch())
    assert out.shape == (3, 3) and torch.isfinite(out).all()
    assert n_params(t) == info["params_before"]  # the input model was left as it was


def test_the_least_important_heads_go() -> None:
    t = teacher()
    layer = t.bert.bert.encoder.layer[2]
    with torch.no_grad():  # heads 0 and 2 of layer 2 write almost nothing: they must go
        for h in (0, 2):
            layer.attention.self.value.weight[h * 8:(h + 1) * 8] *= 1e-3
            layer.attention.output.dense.weight[:, h * 8:(h + 1) * 8] *= 1e-3
    assert head_importance(layer).argsort()[:2].sort().values.tolist() == [0, 2]
    p, info = prune_transformer(t, heads=0.5)
    assert info["heads_removed"][2] == [0, 2]
    kept = p.bert.bert.encoder.layer[2].attention.self.query.weight
    assert torch.equal(kept, torch.cat([layer.attention.self.query.weight[8:16],
                                        layer.attention.self.query.weight[24:32]]))


def test_pruning_zero_changes_nothing() -> None:
    t = teacher()
    p, info = prune_transformer(t, heads=0, ffn=0.0)
    assert info["params_after"] == info["params_before"] and not info["heads_removed"]
    t_state, p_state = t.state_dict(), p.state_dict()
    assert t_state.keys() == p_state.keys()
    assert all(torch.equal(t_state[k], p_state[k]) for k in t_state)
    with torch.no_grad():
        assert torch.equal(p.eval()(*batch()), t(*batch()))


@pytest.mark.parametrize("kwargs", [{"heads": 1.0}, {"heads": -0.1}, {"ffn": 1.5},
                                    {"ffn": "half"}, {"heads": True}])
def test_bad_ratios_are_one_clear_error(kwargs: dict) -> None:
    with pytest.raises(UsageError) as err:
        prune_transformer(teacher(), **kwargs)
    assert "must be a fraction from 0" in str(err.value) and "\n" not in str(err.value)


def test_pruned_model_exports_and_matches_in_onnx_runtime(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from edgekd.backends.from_torch import to_onnx
    from edgekd.inputs.dataset import Feeds, InputSpec

    p, _ = prune_transformer(student_from_teacher(teacher(), every=2), heads=0.5, ffn=0.25)
    p.eval()
    ids, mask = batch(4)
    feeds = Feeds((InputSpec("input_ids", "int64", (SEQ,), kind="tokens"),
                   InputSpec("attention_mask", "int64", (SEQ,))),
                  {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
    path = to_onnx(p, feeds, tmp_path / "pruned.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        want = p(ids, mask).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # The graph really holds the smaller matrices: 2 of 4 heads (16 of 32 rows) in Q, K, V
    # and the output projection, 48 of 64 FFN channels, in both layers.
    import onnx

    shapes = [tuple(sorted(t.dims)) for t in onnx.load(str(path)).graph.initializer]
    assert shapes.count((16, HIDDEN)) == 2 * 4
    assert shapes.count((HIDDEN, 48)) == 2 * 2
    assert (HIDDEN, FFN) not in shapes
