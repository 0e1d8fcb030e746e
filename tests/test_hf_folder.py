"""A local Hugging Face checkpoint folder named as model.student: a tiny BERT classifier made
here (random weights, no download), saved with save_pretrained, loaded through edgekd's
factory path and compared with transformers' own model; the known harmless mismatch
(position_ids saved by older versions) loads; every other problem is one line."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from edgekd import UsageError
from edgekd.inputs.model_files import load_factory, make_model

transformers = pytest.importorskip("transformers")

WHAT = "model.student"


def _bert(folder: Path, *, seed: int = 0) -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    torch.manual_seed(seed)
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(folder)
    return model


def _err(spec: str, root: Path) -> str:
    with pytest.raises(UsageError) as info:
        make_model(spec, root, WHAT)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{WHAT}: "), text
    return text


def test_folder_loads_with_the_same_logits(tmp_path: Path) -> None:
    ref = _bert(tmp_path / "bert")
    model = make_model("bert", tmp_path, WHAT)
    assert not model.training
    assert list(inspect.signature(model.forward).parameters) == [
        "input_ids", "attention_mask", "token_type_ids"]
    ids = torch.randint(0, 100, (4, 9))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    with torch.no_grad():
        got = model(ids, mask)
        want = ref(input_ids=ids, attention_mask=mask).logits
        alone = model(ids)
    assert isinstance(got, torch.Tensor) and got.shape == (4, 3)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(alone, ref(input_ids=ids).logits.detach(), rtol=0, atol=1e-6)
    # The same key names as the checkpoint: a *_weights file saved from it loads too.
    assert set(model.state_dict()) == set(load_file(tmp_path / "bert" / "model.safetensors"))


def test_folder_digest_follows_the_weights(tmp_path: Path) -> None:
    _bert(tmp_path / "bert")
    first = load_factory("bert", tmp_path, WHAT).__qualname__
    assert len(first) == 64 and first == load_factory("bert", tmp_path, WHAT).__qualname__
    _bert(tmp_path / "bert", seed=1)
    assert load_factory("bert", tmp_path, WHAT).__qualname__ != first


def test_position_ids_saved_by_older_versions_load(tmp_path: Path) -> None:
    ref = _bert(tmp_path / "bert")
    path = tmp_path / "bert" / "model.safetensors"
    state = load_file(path)
    assert "bert.embeddings.position_ids" not in state
    state["bert.embeddings.position_ids"] = torch.arange(64)[None]
    save_file(state, path, metadata={"format": "pt"})
    model = make_model("bert", tmp_path, WHAT)
    ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), ref(input_ids=ids).logits, rtol=0, atol=1e-6)


def test_mismatches_are_one_line(tmp_path: Path) -> None:
    _bert(tmp_path / "bert")
    path = tmp_path / "bert" / "model.safetensors"
    state = load_file(path)
    good = dict(state)
    state["classifier.weight"] = torch.zeros(5, 32)
    save_file(state, path)
    assert _err("bert", tmp_path) == (
        f"{WHAT}: {path} does not fit the model: classifier.weight has shape [5, 32] in the "
        "file but [3, 32] in the model: config.json and the weights must come from one "
        "model.save_pretrained(folder)")
    state = dict(good)
    del state["classifier.bias"]
    state["pooler.extra"] = torch.zeros(1)
    save_file(state, path)
    assert ("1 missing (first: classifier.bias), 1 unexpected (first: pooler.extra)"
            in _err("bert", tmp_path))


def test_broken_folders_are_one_line(tmp_path: Path) -> None:
    _bert(tmp_path / "bert")
    config = tmp_path / "bert" / "config.json"
    raw = json.loads(config.read_text())
    (tmp_path / "empty").mkdir()
    assert _err("empty", tmp_path) == (
        f"{WHAT}: {tmp_path / 'empty'} is a folder without config.json: name a Hugging Face "
        "checkpoint folder (model.save_pretrained writes config.json and model.safetensors) "
        "or a factory as path/to/file.py:function")
    config.write_text("{not json")
    assert "config.json is not valid JSON" in _err("bert", tmp_path)
    config.write_text(json.dumps({**raw, "model_type": "no-such-model"}))
    assert "its model_type 'no-such-model' is unknown to transformers" in _err("bert", tmp_path)
    config.write_text(json.dumps({**raw, "architectures": ["NoSuchForMagic"],
                                  "auto_map": {"AutoModel": "m.NoSuchForMagic"}}))
    assert ("names the architecture 'NoSuchForMagic', which transformers" in
            _err("bert", tmp_path))
    config.write_text(json.dumps(raw))
    (tmp_path / "bert" / "model.safetensors").unlink()
    assert "has config.json but no weights" in _err("bert", tmp_path)
    assert "is not a folder and names no function" in _err("nothing-here", tmp_path)
    _bert(tmp_path / "bert")
    with pytest.raises(UsageError, match="remove model.student_args"):
        make_model("bert", tmp_path, WHAT, {"num_labels": 2})


def test_without_transformers_one_line(tmp_path: Path) -> None:
    """A Python where transformers cannot be imported (a real child process)."""
    _bert(tmp_path / "bert")
    code = ("import sys; sys.modules['transformers'] = None\n"
            "from pathlib import Path\n"
            "from edgekd.inputs.model_files import load_factory\n"
            "from edgekd import UsageError\n"
            "try:\n"
            f"    load_factory('bert', Path({str(tmp_path)!r}), 'model.student')\n"
            "except UsageError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout.strip()
    assert out == (f"{WHAT}: {tmp_path / 'bert'} is a Hugging Face checkpoint, which needs "
                   "transformers: pip install transformers")


@pytest.mark.slow
def test_build_a_finished_hf_classifier(tmp_path: Path) -> None:
    """edgekd build with model.student = the folder, int64 token ids in an .npz."""
    from typer.testing import CliRunner

    from edgekd.cli.commands import app
    from tests.projects import QUICK

    ref = _bert(tmp_path / "bert")
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, size=(64, 12), dtype=np.int64)
    with torch.no_grad():
        y = ref(input_ids=torch.from_numpy(ids)).logits.argmax(1).numpy()
    np.savez(tmp_path / "tokens.npz", x=ids, y=y)
    # A folder holds its weights: no student_weights. INT8 of a random-weight BERT flips a
    # sample or two of 32 (transformer INT8 is its own issue): this tests the loading.
    (tmp_path / "edgekd.toml").write_text(
        'target = "x86-cpu"\nmin_agreement = 0.9\n[model]\nstudent = "bert"\n'
        '[data]\ntest = "tokens.npz"\n' + QUICK)
    result = CliRunner().invoke(app, ["build", "--config", str(tmp_path / "edgekd.toml"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "x86-cpu" / "report.json").read_text())
    assert [(i["name"], i["dtype"], i["kind"]) for i in report["inputs"]] == [
        ("input_ids", "int64", "tokens")]
    assert all(a["outputs"][0]["classifier"] for a in report["artifacts"])


def test_tied_weights_saved_once_load(tmp_path: Path) -> None:
    """safetensors' save_model (and save_pretrained) keep one of two tied parameters; the
    twin is the same tensor, so it is not 'missing'. Any other missing key still is."""
    from safetensors.torch import save_model

    from edgekd.inputs.weights import load_weights

    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(10, 4)
            self.out = torch.nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.out(self.emb(ids))

    torch.manual_seed(0)
    saved = Tied()
    save_model(saved, str(tmp_path / "tied.safetensors"))
    assert len(load_file(tmp_path / "tied.safetensors")) == 1
    model = Tied()
    load_weights(model, tmp_path / "tied.safetensors", "model.student_weights")
    assert torch.equal(model.out.weight, saved.emb.weight)
    assert model.out.weight is model.emb.weight
    untied = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 10, bias=False))
    save_file({"0.weight": saved.emb.weight.detach().clone()}, tmp_path / "one.safetensors")
    with pytest.raises(UsageError, match=r"1 missing \(first: 1.weight\)"):
        load_weights(untied, tmp_path / "one.safetensors", "model.student_weights")


def test_cli_missing_config_is_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgekd.cli.commands import app

    _bert(tmp_path / "bert")
    (tmp_path / "bert" / "config.json").unlink()
    np.savez(tmp_path / "tokens.npz", x=np.ones((8, 6), np.int64), y=np.zeros(8, np.int64))
    (tmp_path / "edgekd.toml").write_text(
        'target = "x86-cpu"\n[model]\nstudent = "bert"\n'
        'student_weights = "bert/model.safetensors"\n[data]\ntest = "tokens.npz"\n')
    result = CliRunner().invoke(app, ["build", "--config", str(tmp_path / "edgekd.toml"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {WHAT}: {tmp_path / 'bert'} is a folder without "
                                "config.json"), result.output
    assert "Traceback" not in result.output
    assert not list((tmp_path / "out").rglob("*.onnx")) and not list(
        (tmp_path / "out").rglob("report.json"))


def _sentence_folder(folder: Path, pooling: dict[str, object], *,
                     normalize: bool = False, extra: str | None = None) -> torch.nn.Module:
    """A tiny head-less BertModel laid out as sentence-transformers saves one."""
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.BertModel(config, add_pooling_layer=False).eval()
    model.save_pretrained(folder)
    st = "sentence_transformers.models."
    modules = [{"idx": 0, "name": "0", "path": "", "type": st + "Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": st + "Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": st + "Normalize"})
    if extra:
        modules.append({"idx": len(modules), "name": "x", "path": "x", "type": st + extra})
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, **pooling}))
    return model


def _tokens() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, 100, (4, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 2:] = 0
    return ids, mask


@pytest.mark.parametrize("normalize", [False, True])
def test_sentence_encoder_folder_returns_the_masked_mean(tmp_path: Path,
                                                         normalize: bool) -> None:
    ref = _sentence_folder(tmp_path / "enc", {"pooling_mode_mean_tokens": True,
                                              "pooling_mode_cls_token": False},
                           normalize=normalize)
    model = make_model("enc", tmp_path, WHAT)
    ids, mask = _tokens()
    with torch.no_grad():
        got = model(ids, mask)
        hidden = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    want = torch.stack([hidden[i, :int(mask[i].sum())].mean(0) for i in range(len(ids))])
    if normalize:
        want = want / want.norm(dim=1, keepdim=True)
    assert got.shape == (4, 32)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert torch.allclose(got.norm(dim=1), torch.ones(4)) == normalize
    # Padding beyond the mask does not move a sentence's embedding.
    padded = ids.clone()
    padded[1, 5:] = 7
    with torch.no_grad():
        torch.testing.assert_close(model(padded, mask), got, rtol=0, atol=1e-5)


def test_sentence_encoder_cls_and_max_concatenate(tmp_path: Path) -> None:
    ref = _sentence_folder(tmp_path / "enc", {"pooling_mode_cls_token": True,
                                              "pooling_mode_max_tokens": True})
    model = make_model("enc", tmp_path, WHAT)
    ids, mask = _tokens()
    with torch.no_grad():
        got = model(ids, mask)
        hidden = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    most = torch.stack([hidden[i, :int(mask[i].sum())].amax(0) for i in range(len(ids))])
    torch.testing.assert_close(got, torch.cat([hidden[:, 0], most], dim=1), rtol=0, atol=1e-6)


def test_sentence_encoder_exports_to_onnx_runtime(tmp_path: Path) -> None:
    """The pooling is plain ops: the ONNX file ONNX Runtime runs gives the same embedding."""
    from edgekd.backends import get_backend

    _sentence_folder(tmp_path / "enc", {"pooling_mode_mean_tokens": True}, normalize=True)
    model = make_model("enc", tmp_path, WHAT)
    ids, mask = _tokens()
    path = tmp_path / "enc.onnx"
    torch.onnx.export(model, (ids, mask), str(path), input_names=["input_ids",
                      "attention_mask"], output_names=["embedding"], dynamo=False)
    runner = get_backend("onnxruntime").load(path, 1)
    got = runner.run_all({"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(ids, mask).numpy(), rtol=0, atol=1e-5)


def test_bad_sentence_encoder_folders_are_one_line(tmp_path: Path) -> None:
    _sentence_folder(tmp_path / "enc", {"pooling_mode_weightedmean_tokens": True})
    config = tmp_path / "enc" / "1_Pooling" / "config.json"
    assert _err("enc", tmp_path) == (
        f"{WHAT}: {config} sets the pooling mode 'weightedmean_tokens': set one of "
        "pooling_mode_cls_token, pooling_mode_max_tokens, pooling_mode_mean_tokens, "
        "pooling_mode_mean_sqrt_len_tokens to true, or export the model to ONNX (model.onnx)")
    config.write_text(json.dumps({"pooling_mode_mean_tokens": False}))
    assert f"{config} sets no pooling mode: set one of" in _err("enc", tmp_path)
    config.write_text("[1, 2")
    assert f"{config} is not valid JSON" in _err("enc", tmp_path)
    config.unlink()
    assert str(config) in _err("enc", tmp_path)
    _sentence_folder(tmp_path / "dense", {"pooling_mode_mean_tokens": True}, extra="Dense")
    assert ("lists the modules Transformer, Pooling, Dense, which edgekd cannot compute as a "
            "whole" in _err("dense", tmp_path))
    modules = tmp_path / "dense" / "modules.json"
    raw = json.loads(modules.read_text())
    modules.write_text(json.dumps([raw[0], {**raw[1], "path": "../elsewhere"}]))
    assert "names the Pooling folder '../elsewhere', which is not a folder inside" in _err(
        "dense", tmp_path)
    # A Pooling module over a model with a head: one line, not a crash in forward.
    _bert(tmp_path / "head")
    (tmp_path / "head" / "modules.json").write_text(json.dumps(raw[:2]))
    (tmp_path / "head" / "1_Pooling").mkdir()
    (tmp_path / "head" / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True}))
    assert "architecture BertForSequenceClassification is not a head-less text encoder" in (
        _err("head", tmp_path))
