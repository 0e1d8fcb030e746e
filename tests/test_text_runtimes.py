"""Token-id encoders through every runtime: a tiny BERT classifier (``transformers``, random
init, trained here for a few hundred steps so top-1 agreement means something) built
deploy-only with ``input_ids`` + ``attention_mask`` and with ``input_ids`` alone, to
LiteRT (LiteRT-Torch, PT2E INT8 with the integer inputs kept out of the observers), ONNX
Runtime and OpenVINO INT8; every artifact verified in its real runtime, the sequence length
fixed by the data and recorded in ``report.json``."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.errors import BuildError
from tests.projects import QUICK

pytest.importorskip("transformers")
pytest.importorskip("litert_torch")
pytest.importorskip("openvino")

SEQ = 16
VOCAB = 100

MODELS = '''
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification


class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64, num_labels=3,
                            attn_implementation="eager")
        self.bert = BertForSequenceClassification(config)


class WithMask(Encoder):
    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


class IdsOnly(Encoder):
    def forward(self, input_ids):
        return self.bert(input_ids=input_ids).logits


def with_mask():
    torch.manual_seed(0)
    return WithMask()


def ids_only():
    torch.manual_seed(0)
    return IdsOnly()
'''

runner = CliRunner()


def _data(rng: np.random.Generator, n: int, mask: bool) -> dict[str, np.ndarray]:
    """The class is the first token's id mod 3; the mask hides up to the last 4 tokens."""
    ids = rng.integers(1, VOCAB, size=(n, SEQ)).astype(np.int64)
    out = {"input_ids": ids, "y": (ids[:, 0] % 3).astype(np.int64)}
    if mask:
        m = np.ones((n, SEQ), np.int64)
        m[:, SEQ - 4:] = rng.integers(0, 2, size=(n, 4))
        out["attention_mask"] = m
    return out


def _project(folder: Path, factory: str) -> Path:
    """A finished, trained tiny BERT: weights, train/test .npz, edgekd.toml (deploy-only)."""
    import sys

    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "models.py").write_text(MODELS)
    mask = factory == "with_mask"
    rng = np.random.default_rng(0)
    train, test = _data(rng, 300, mask), _data(rng, 100, mask)
    np.savez(folder / "train.npz", **train)
    np.savez(folder / "test.npz", **test)
    sys.path.insert(0, str(folder))
    try:
        sys.modules.pop("models", None)  # another test's models.py
        import models  # the user's file, as edgekd will load it

        model = getattr(models, factory)()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("models", None)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.AdamW(model.parameters(), 2e-3)
        feeds = [torch.from_numpy(train[k]) for k in ("input_ids", "attention_mask")
                 if k in train]
        y = torch.from_numpy(train["y"])
        model.train()
        generator = torch.Generator().manual_seed(0)
        for _ in range(300):
            i = torch.randint(0, len(y), (32,), generator=generator)
            loss = torch.nn.functional.cross_entropy(model(*(f[i] for f in feeds)), y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    save_file(model.eval().state_dict(), str(folder / "student.safetensors"))
    (folder / "edgekd.toml").write_text(textwrap.dedent(f"""
        [model]
        student = "models.py:{factory}"
        student_weights = "student.safetensors"
        [data]
        train = "train.npz"
        test = "test.npz"
        """) + QUICK)
    return folder / "edgekd.toml"


def _build(config: Path, target: str, out: Path, *extra: str) -> dict:
    result = runner.invoke(app, ["build", "--config", str(config), "--target", target,
                                 "--out", str(out), *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / target / "report.json").read_text())


def _check(report: dict, runtimes: set[str], names: list[str]) -> None:
    """Every runtime's FP32 and INT8 verified (the build exits 0 only then), with the
    figures the report gives; token inputs recorded at the data's sequence length."""
    got = {(a["runtime"], a["precision"]): a for a in report["artifacts"]}
    assert {r for r, _ in got} == runtimes
    for (runtime, precision), a in got.items():
        assert precision in ("fp32", "int8"), (runtime, precision)
        assert a["accuracy"] >= 0.8, (runtime, precision, a["accuracy"])
        assert a["top1_agreement"] >= 0.98, (runtime, precision, a["top1_agreement"])
    assert {(r, "int8") for r in runtimes} <= set(got)
    ins = {i["name"]: i for i in report["inputs"]}
    assert list(ins) == names
    for i in ins.values():
        assert i["shape"] == [1, SEQ], i
        assert i["dtype"] == "int64", i


@pytest.fixture(scope="module")
def with_mask(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("text") / "mask", "with_mask")


@pytest.fixture(scope="module")
def ids_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _project(tmp_path_factory.mktemp("text") / "ids", "ids_only")


def test_ids_and_mask_on_raspberrypi(with_mask: Path, tmp_path: Path) -> None:
    import onnx

    from edgekd.backends.tflite import load

    out = tmp_path / "out"
    report = _build(with_mask, "raspberrypi", out)
    _check(report, {"tflite", "onnxruntime"}, ["input_ids", "attention_mask"])
    folder = out / "raspberrypi"
    # ONNX: a dynamic batch, the sequence length fixed at the data's.
    graph = onnx.load(str(folder / "student_int8.onnx")).graph
    for i in graph.input:
        dims = i.type.tensor_type.shape.dim
        assert not dims[0].HasField("dim_value") and dims[1].dim_value == SEQ, i
    # LiteRT: integer inputs (int32 or int64), never quantized; int64 ids fed as they are.
    data = np.load(with_mask.parent / "test.npz")
    for precision in ("fp32", "int8"):
        tflite = load(folder / f"student_{precision}.tflite", 1)
        for d in tflite._inputs:
            assert np.dtype(d["dtype"]) in (np.int32, np.int64), d
            assert list(d["shape"]) == [1, SEQ], d
            assert not d["quantization"][0], d  # no scale: not quantized
        y = tflite.run_all({"input_ids": data["input_ids"][:4],
                            "attention_mask": data["attention_mask"][:4]})[0]
        assert y.shape == (4, 3) and np.isfinite(y).all()
        if np.dtype(tflite._inputs[0]["dtype"]) == np.int32:  # an id int32 cannot hold
            with pytest.raises(BuildError, match="keep token ids within"):
                tflite.run_all({"input_ids": np.full((1, SEQ), 1 << 40, np.int64),
                                "attention_mask": data["attention_mask"][:1]})


def test_ids_and_mask_on_intel_cpu(with_mask: Path, tmp_path: Path) -> None:
    report = _build(with_mask, "intel-cpu", tmp_path / "out")
    _check(report, {"openvino"}, ["input_ids", "attention_mask"])


def test_ids_only_in_every_runtime(ids_only: Path, tmp_path: Path) -> None:
    """No mask: BERT makes its own inside the graph (ones, then the additive mask), which
    must stay out of the observers like the ids."""
    out = tmp_path / "out"  # one output root: the second build reuses the cached INT8 ONNX
    _check(_build(ids_only, "raspberrypi", out), {"tflite", "onnxruntime"}, ["input_ids"])
    _check(_build(ids_only, "intel-cpu", out), {"openvino"}, ["input_ids"])
