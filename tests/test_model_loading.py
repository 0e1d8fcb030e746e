"""edgekd.loading: factories, weights and ONNX files of the user, loaded safely, with real
torch, safetensors and onnx files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edgekd.errors import UsageError
from edgekd.loading import inspect_onnx, load_factory, load_weights, make_model, resolve_path


class Evil:
    """Unpickling this creates a file: what a malicious checkpoint would do instead."""

    marker = ""

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_malicious_pickle_is_never_executed_without_trust(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    Evil.marker = str(marker)
    torch.save({"state_dict": {"0.weight": torch.zeros(3, 4)}, "extra": Evil()},
               tmp_path / "evil.pt")
    with pytest.raises(UsageError, match="--trust-pickle"):
        load_weights(_net(), tmp_path / "evil.pt", "model.student_weights")
    assert not marker.exists()
    # With --trust-pickle the user vouches for the file, and the pickle does run.
    with pytest.raises(UsageError):
        load_weights(_net(), tmp_path / "evil.pt", "model.student_weights", trust_pickle=True)
    assert marker.exists()


def test_checkpoint_layouts(tmp_path: Path) -> None:
    state = _net().state_dict()
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "nested.pt")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.pth")
    save_file(state, tmp_path / "w.safetensors")
    for name in ("nested.pt", "ddp.pth", "w.safetensors"):
        model = _net()
        load_weights(model, tmp_path / name, "model.teacher_weights")
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    save_file(nn.Sequential(nn.Linear(4, 5)).state_dict(), tmp_path / "a.safetensors")
    with pytest.raises(UsageError, match=r"2 missing \(first: 2.weight\)"):
        load_weights(nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)),
                     tmp_path / "a.safetensors", "model.student_weights")
    with pytest.raises(UsageError, match=r"has shape \[5.*\] in the file but \[3"):
        load_weights(nn.Sequential(nn.Linear(4, 3)), tmp_path / "a.safetensors", "w")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(UsageError, match="not a state dict"):
        load_weights(_net(), tmp_path / "list.pt", "w")


def test_factories_by_file_and_by_module(tmp_path: Path) -> None:
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("from torch import nn\n"
                                 "def mlp(width=4):\n    return nn.Linear(2, width)\n")
    model = make_model("mypkg.nets:mlp", tmp_path, "model.student", {"width": 7})
    assert model.out_features == 7
    assert make_model("mypkg/nets.py:mlp", tmp_path, "model.student").out_features == 4
    with pytest.raises(UsageError, match="names no function"):
        load_factory("mypkg.nets", tmp_path, "model.student")
    with pytest.raises(UsageError, match="no module named 'nopkg'"):
        load_factory("nopkg.nets:mlp", tmp_path, "model.student")
    with pytest.raises(UsageError, match="has no function 'mpl'; it has: mlp"):
        load_factory("mypkg/nets.py:mpl", tmp_path, "model.student")


def test_paths_stay_in_the_project(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (tmp_path / "secret.pt").write_text("x")
    (project / "link.pt").symlink_to(tmp_path / "secret.pt")
    for value in ("../secret.pt", "link.pt"):
        with pytest.raises(UsageError, match="leaves the project folder"):
            resolve_path(value, project, "model.student_weights")
    assert resolve_path(str(tmp_path / "secret.pt"), project, "w") == tmp_path / "secret.pt"


def test_onnx_info_with_a_dynamic_batch(tmp_path: Path) -> None:
    torch.onnx.export(nn.Conv1d(3, 4, 5), (torch.zeros(1, 3, 50),), str(tmp_path / "m.onnx"),
                      input_names=["signal"], dynamic_axes={"signal": {0: "batch"}},
                      dynamo=False)
    info = inspect_onnx(tmp_path / "m.onnx", "model.onnx")
    assert info.input_name == "signal" and info.input_shape == ("batch", 3, 50)
    assert info.input_dtype == "float32" and info.output_shapes[0][1:] == (4, 46)
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(UsageError, match="not a valid ONNX model|no outputs|inputs"):
        inspect_onnx(tmp_path / "empty.onnx", "model.onnx")
