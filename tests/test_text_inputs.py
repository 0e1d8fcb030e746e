"""Token-id models as users bring them (issue 16): a declared sequence length that the data
does not have fails in one line; a 0/1 integer attention mask is a mask, not token ids; a
forward with optional inputs between the ids and the mask, such as Hugging Face's
``(input_ids, token_type_ids=None, attention_mask=None)``, gets every input by name in
PyTorch and in the exported ONNX graph. Tiny random-weight ``transformers`` models are
made in the test."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from edgekd.inputs.calls import by_name, call_model
from edgekd.inputs.dataset import InputSpec
from edgekd.inputs.io import data_kind
from tests.projects import QUICK

ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
LENGTH = 16

MODELS = '''
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification


class Encoder(nn.Module):
    """Hugging Face's argument order: the mask is the third parameter, not the second."""

    def __init__(self):
        super().__init__()
        cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64, type_vocab_size=2, num_labels=3,
                         attn_implementation="eager")
        self.bert = BertForSequenceClassification(cfg)

    def forward(self, input_ids, token_type_ids=None, attention_mask=None):
        return self.bert(input_ids=input_ids, token_type_ids=token_type_ids,
                         attention_mask=attention_mask).logits


def student():
    torch.manual_seed(0)
    return Encoder()
'''


def _tokens(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded sentences of 4..16 tokens: ids 1..99 then 0, the mask 1 on the tokens."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, LENGTH + 1, n)
    mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, 100, (n, LENGTH)).astype(np.int64) * mask
    return ids, mask, (ids[:, 0] % 3).astype(np.int64)


def _load(root: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"text_{abs(hash(root))}", root / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _project(root: Path, extra: str = "", quick: str = QUICK) -> Path:
    """A finished (deploy-only) tiny BERT with input_ids + attention_mask data."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "models.py").write_text(MODELS)
    save_file(_load(root).student().state_dict(), str(root / "student.safetensors"))
    for name, n, seed in (("train", 64, 0), ("test", 100, 1)):
        ids, mask, y = _tokens(n, seed)
        np.savez(root / f"{name}.npz", input_ids=ids, attention_mask=mask, y=y)
    (root / "edgekd.toml").write_text(
        '[model]\nstudent = "models.py:student"\nstudent_weights = "student.safetensors"\n'
        f'[data]\ntrain = "train.npz"\ntest = "test.npz"\n{extra}\n{quick}')
    return root


def _build(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekd", "build", *args], cwd=root,
                          capture_output=True, text=True, env=ENV, timeout=900)


def _errors(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


# -- 1. a declared sequence length the data does not have --------------------------------


def test_a_declared_shape_the_data_does_not_have_is_one_line(tmp_path: Path) -> None:
    root = _project(tmp_path / "p", "[inputs.input_ids]\nshape = [128]\n")
    done = _build(root, "--target", "x86-cpu")
    assert done.returncode == 2, done.stderr[-2000:]
    assert _errors(done) == [
        "error: inputs.input_ids.shape = [128] but the data's input_ids has [16] per sample: "
        "pad or truncate the data to [128] (the sequence length deployed), or leave shape out"]
    assert "Traceback" not in done.stderr
    assert not (root / "build" / "x86-cpu").exists()  # nothing half-written


# -- 2. what an integer input is ---------------------------------------------------------


def test_a_0_1_integer_mask_is_a_mask_and_ids_stay_tokens() -> None:
    ids, mask, _ = _tokens(50, 0)
    both = {"input_ids": ids, "attention_mask": mask}
    assert data_kind("attention_mask", [mask], both, images=False) == "mask"
    assert data_kind("input_ids", [ids], both, images=False) == "tokens"
    # Named otherwise, a 0/1 array beside token ids of its shape is still their mask.
    assert data_kind("m", [mask], {"ids": ids, "m": mask}, images=False) == "mask"
    # ... unless its name says segment ids, which are 0/1 beside the ids too.
    assert data_kind("token_type_ids", [mask], {**both, "token_type_ids": mask},
                     images=False) == "tokens"
    # Ids called "masked_*" take values past 1: token ids whatever the name.
    assert data_kind("masked_ids", [ids], {"masked_ids": ids, "attention_mask": mask},
                     images=False) == "tokens"
    # Every split counts: a "mask" whose train split holds a 2 is not a mask.
    assert data_kind("attention_mask", [mask, mask + 1], both, images=False) == "tokens"
    # A lone 0/1 integer input without a mask name or a companion: no evidence, ids.
    assert data_kind("flags", [mask], {"flags": mask}, images=False) == "tokens"
    # Bool is a mask; floats keep their shape rules.
    assert data_kind("keep", [mask.astype(bool)], both, images=False) == "mask"
    assert data_kind("x", [np.zeros((2, 1, 8, 8), np.float32)], {}, images=True) == "image"


# -- 3. inputs by name: PyTorch calls and the ONNX graph ---------------------------------


class _HfOrder(torch.nn.Module):
    def forward(self, input_ids, token_type_ids=None, attention_mask=None):  # type: ignore[no-untyped-def]
        return input_ids + (0 if token_type_ids is None else 100 * token_type_ids) \
            + (0 if attention_mask is None else 10 * attention_mask)


class _Positional(torch.nn.Module):
    def forward(self, *args):  # type: ignore[no-untyped-def]
        return args[0] + 10 * args[1]


def test_named_inputs_are_passed_by_name_and_one_input_or_varargs_positionally() -> None:
    specs = (InputSpec("input_ids", "int64", (3,)), InputSpec("attention_mask", "int64", (3,)))
    feed = {"input_ids": np.array([[1, 2, 3]]), "attention_mask": np.array([[1, 1, 0]])}
    got = call_model(_HfOrder(), feed, specs).numpy()
    np.testing.assert_array_equal(got, [[11, 12, 3]])  # the mask reached attention_mask
    assert call_model(_Positional(), feed, specs).numpy().tolist() == [[11, 12, 3]]
    assert not by_name(_HfOrder(), ["input_ids"])  # one input: whatever forward calls it
    assert not by_name(_Positional(), ["input_ids", "attention_mask"])


def test_hf_argument_order_builds_and_the_mask_reaches_attention_mask(tmp_path: Path) -> None:
    import onnxruntime as ort
    from safetensors.torch import load_file

    root = _project(tmp_path / "p", quick=QUICK.replace("token_dropout = []",
                                                        "token_dropout = [0.25]"))
    done = _build(root, "--target", "raspberrypi")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((root / "build" / "raspberrypi" / "report.json").read_text())
    kinds = {i["name"]: (i["kind"], i["dtype"], i["shape"]) for i in report["inputs"]}
    assert kinds == {"input_ids": ("tokens", "int64", [1, LENGTH]),
                     "attention_mask": ("mask", "int64", [1, LENGTH])}
    verified = {a["path"]: a for a in report["artifacts"]}
    # Every runtime of the Pi: LiteRT's signature names the inputs alphabetically, and they
    # are fed by name, so both .tflite files verify against the model too.
    assert {Path(p).name for p in verified} >= {"student_fp32.onnx", "student_int8.onnx",
                                                "student_fp32.tflite", "student_int8.tflite"}
    # Robustness corrupts the ids only; the mask is fed as it is.
    robustness = report["robustness"]
    corrupted = {(c["name"], c["input"]) for c in robustness["conditions"] if "input" in c}
    assert corrupted == {("token_dropout_0.25", "input_ids")}
    assert "attention_mask is a mask input (no corruption is defined for it)" in \
        robustness["not_corrupted"]

    # The artifact, fed by name, is the model called with attention_mask=mask (and not
    # with the mask in token_type_ids, which changes the outputs of this model).
    model = _load(root).student().eval()
    model.load_state_dict(load_file(str(root / "student.safetensors")))
    ids, mask, _ = _tokens(100, 1)
    session = ort.InferenceSession(str(root / "build" / "raspberrypi" / "student_fp32.onnx"))
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        by_keyword = model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        as_segments = model(torch.from_numpy(ids), torch.from_numpy(mask))
    np.testing.assert_allclose(got, by_keyword.numpy(), atol=1e-4)
    assert np.abs(got - as_segments.numpy()).max() > 1e-3


def test_a_declared_shape_that_matches_is_accepted(tmp_path: Path) -> None:
    """The check refuses only a mismatch: the same project with shape = [16] resolves."""
    from edgekd.inputs.resolve import resolve
    from edgekd.settings.project import load_project

    root = _project(tmp_path / "p", f"[inputs.input_ids]\nshape = [{LENGTH}]\n")
    inputs = resolve(load_project(root / "edgekd.toml"))
    assert [(s.name, s.shape, s.kind) for s in inputs.data.input_specs] == [
        ("input_ids", (LENGTH,), "tokens"), ("attention_mask", (LENGTH,), "mask")]
