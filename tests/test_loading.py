"""edgekd.inputs.model_files with real files: factories from modules and .py files, weights from
safetensors and torch.save checkpoints, ONNX models; every bad input is one line naming the
setting and the file."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file
from torch import nn

from edgekd import UsageError
from edgekd.inputs.model_files import (
    inspect_onnx,
    load_factory,
    load_weights,
    make_model,
    resolve_path,
)

W = "model.student_weights"


def _err(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """The one-line message ``fn`` refuses its input with."""
    with pytest.raises(UsageError) as info:
        fn(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text and info.value.exit_code == 2
    return text


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _same(model: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


# --- paths ---------------------------------------------------------------------------------

def test_relative_and_absolute_paths(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "a.pt").write_bytes(b"x")
    assert resolve_path("w/a.pt", tmp_path, W) == tmp_path.resolve() / "w" / "a.pt"
    assert resolve_path("w/../w/a.pt", tmp_path, W) == tmp_path.resolve() / "w" / "a.pt"
    assert resolve_path("new.pt", tmp_path, W, must_exist=False) == tmp_path.resolve() / "new.pt"
    msg = _err(resolve_path, "w/b.pt", tmp_path, W)
    assert msg == (f"{W}: {tmp_path.resolve()}/w/b.pt does not exist: check the path "
                   "(relative paths start at the project folder)")
    assert "is empty: give a path" in _err(resolve_path, " ", tmp_path, W)


def test_paths_that_leave_the_project_are_refused(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    (tmp_path / "secret.pt").write_bytes(b"x")
    (project / "link.pt").symlink_to(tmp_path / "secret.pt")
    (project / "outside").symlink_to(tmp_path)
    for value in ("../secret.pt", "link.pt", "outside/secret.pt", "../p/../secret.pt"):
        assert _err(resolve_path, value, project, W) == (
            f"{W}: {value} leaves the project folder {project.resolve()}; give an absolute "
            "path if you mean it")
    (project / "loop").symlink_to(project / "loop")
    assert _err(resolve_path, "loop", project, W).startswith(f"{W}: loop cannot be resolved (")
    # Written absolute, the user means it.
    assert resolve_path(str(tmp_path / "secret.pt"), project, W) == tmp_path / "secret.pt"


# --- factories -----------------------------------------------------------------------------

def test_factory_from_a_file_with_kwargs_and_a_neighbour_import(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "blocks_ldf.py").write_text("from torch import nn\nACT = nn.ReLU\n")
    (tmp_path / "models" / "net.py").write_text(
        "from torch import nn\nfrom blocks_ldf import ACT\n"
        "def mlp(width=4, classes=2):\n"
        "    return nn.Sequential(nn.Linear(8, width), ACT(), nn.Linear(width, classes))\n")
    model = make_model("models/net.py:mlp", tmp_path, "model.student", {"width": 16})
    assert isinstance(model, nn.Sequential) and model[0].out_features == 16
    assert model(torch.zeros(1, 8)).shape == (1, 2)
    assert make_model("models/net.py:mlp", tmp_path, "model.student")[0].out_features == 4


def test_factory_from_a_package(tmp_path: Path) -> None:
    pkg = tmp_path / "ldf_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "nets.py").write_text("from torch import nn\n"
                                         "def conv(channels=3):\n"
                                         "    return nn.Conv2d(channels, 5, 3)\n")
    model = make_model("ldf_pkg.sub.nets:conv", tmp_path, "model.teacher", {"channels": 2})
    assert model.in_channels == 2 and model.out_channels == 5
    assert str(tmp_path) not in sys.path  # the project folder was on sys.path only to import
    fn = load_factory("ldf_pkg.sub.nets:conv", tmp_path, "model.teacher")
    assert fn.__name__ == "conv"


def test_bad_factory_specs(tmp_path: Path) -> None:
    what = "model.student"
    (tmp_path / "nets.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def mlp():\n    return nn.Linear(2, 2)\n"
        "def tiny():\n    return nn.Linear(1, 1)\n"
        "def broken(width):\n    raise ValueError(f'width {width} is odd\\nsecond line')\n"
        "def not_a_model():\n    return {'w': torch.zeros(1)}\n"
        "def quits():\n    raise SystemExit(3)\n"
        "class Net(nn.Module):\n    pass\n"
        "SIZE = 3\n")
    (tmp_path / "bad_syntax.py").write_text("from torch import nn\n\ndef mlp(:\n    pass\n")
    (tmp_path / "needs_dep.py").write_text("import ldf_not_installed_dep\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('no GPU here')\n")
    (tmp_path / "folder.py").mkdir()

    assert _err(load_factory, "nets.py", tmp_path, what) == (
        f"{what}: 'nets.py' names no function: write it as path/to/file.py:function or "
        "package.module:function")
    assert "names no function" in _err(load_factory, "nets.py:", tmp_path, what)
    assert _err(load_factory, "ldf_nopkg.nets:mlp", tmp_path, what).startswith(
        f"{what}: no module named 'ldf_nopkg' in the project folder or the installed packages: "
        "check the spelling")
    assert f"{tmp_path.resolve()}/missing.py does not exist" in _err(
        load_factory, "missing.py:mlp", tmp_path, what)
    assert f"{tmp_path.resolve()}/folder.py is a folder, not a file" in _err(
        load_factory, "folder.py:mlp", tmp_path, what)
    msg = _err(load_factory, "bad_syntax.py:mlp", tmp_path, what)
    assert f"syntax error in {tmp_path.resolve()}/bad_syntax.py:3:" in msg
    assert msg.endswith("fix the file")
    assert _err(load_factory, "needs_dep.py:mlp", tmp_path, what).endswith(
        "needs the module 'ldf_not_installed_dep', which is not installed: install it "
        "(pip install ldf_not_installed_dep)")
    assert "raised RuntimeError: no GPU here: fix the module" in _err(
        load_factory, "raises.py:f", tmp_path, what)
    msg = _err(load_factory, "nets.py:mpl", tmp_path, what)
    assert msg == (f"{what}: {tmp_path.resolve()}/nets.py has no function 'mpl'; it has: mlp, "
                   "tiny, broken, not_a_model, quits: fix the name after the ':'")
    assert "has no function 'SIZE'" in _err(load_factory, "nets.py:SIZE", tmp_path, what)

    assert _err(make_model, "nets.py:broken", tmp_path, what, {"width": 3}) == (
        f"{what}: the factory nets.py:broken raised ValueError: width 3 is odd: fix the "
        "factory or its arguments")
    assert "raised TypeError" in _err(make_model, "nets.py:mlp", tmp_path, what, {"depth": 2})
    assert "raised SystemExit: 3" in _err(make_model, "nets.py:quits", tmp_path, what)
    assert _err(make_model, "nets.py:not_a_model", tmp_path, what) == (
        f"{what}: the factory nets.py:not_a_model returned a dict, not a torch.nn.Module: "
        "make it return the model")


# --- weights -------------------------------------------------------------------------------

def test_checkpoint_layouts_load(tmp_path: Path) -> None:
    state = _net().state_dict()
    save_file(state, tmp_path / "w.safetensors")
    torch.save(state, tmp_path / "plain.pt")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "nested.ckpt")
    torch.save({"model_state_dict": state, "optimizer_state_dict": {}}, tmp_path / "trainer.pt")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.bin")
    torch.save({"state_dict": {"model." + k: v for k, v in state.items()}, "epoch": 1},
               tmp_path / "lightning.ckpt")
    for name in ("w.safetensors", "plain.pt", "legacy.pth", "nested.ckpt", "trainer.pt",
                 "ddp.bin", "lightning.ckpt"):
        model = _net()
        load_weights(model, tmp_path / name, W)
        assert _same(model, state), name


def test_a_model_whose_own_names_start_with_the_prefix(tmp_path: Path) -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = nn.Linear(2, 2)

    state = Wrapper().state_dict()  # keys "model.weight", "model.bias": no prefix to strip
    torch.save(state, tmp_path / "w.pt")
    model = Wrapper()
    load_weights(model, tmp_path / "w.pt", W)
    assert _same(model, state)


def test_a_whole_pickled_model_needs_trust(tmp_path: Path) -> None:
    source = _net()
    torch.save(source, tmp_path / "whole.pt")
    msg = _err(load_weights, _net(), tmp_path / "whole.pt", W)
    assert msg == (
        f"{W}: {tmp_path}/whole.pt is a full pickle, not plain weights (it names "
        "torch.nn.modules.activation.ReLU, torch.nn.modules.container.Sequential, "
        "torch.nn.modules.linear.Linear; loading it could run code from the file): save it "
        "with torch.save(model.state_dict(), ...) or as .safetensors, or pass --trust-pickle "
        "if you trust where it came from")
    model = _net()
    load_weights(model, tmp_path / "whole.pt", W, trust_pickle=True)
    assert _same(model, source.state_dict())
    # Any object beyond tensors and plain containers makes it a full pickle, too.
    torch.save({"state_dict": source.state_dict(), "args": argparse.Namespace(lr=0.1)},
               tmp_path / "with_args.pt")
    assert "is a full pickle, not plain weights (it names argparse.Namespace;" in _err(
        load_weights, _net(), tmp_path / "with_args.pt", W)
    load_weights(model, tmp_path / "with_args.pt", W, trust_pickle=True)


class _Evil:
    """Unpickling this runs a shell command: what a malicious checkpoint would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_a_malicious_pickle_is_never_run_without_trust(tmp_path: Path, zipped: bool) -> None:
    marker = tmp_path / "pwned"
    state = {"0.weight": torch.zeros(3, 4), "payload": _Evil(f"touch {shlex.quote(str(marker))}")}
    torch.save({"state_dict": state}, tmp_path / "evil.pt",
               _use_new_zipfile_serialization=zipped)
    msg = _err(load_weights, _net(), tmp_path / "evil.pt", W)
    assert "is a full pickle" in msg and "posix.system" in msg and "--trust-pickle" in msg
    assert not marker.exists()
    # With --trust-pickle the user vouches for the file, and its code does run (harmlessly,
    # here); what it leaves behind is still not a state dict.
    msg = _err(load_weights, _net(), tmp_path / "evil.pt", W, trust_pickle=True)
    assert "'payload' is a int" in msg
    assert marker.exists()


def test_files_that_are_not_checkpoints(tmp_path: Path) -> None:
    state = _net().state_dict()
    save_file(state, tmp_path / "good.safetensors")
    data = (tmp_path / "good.safetensors").read_bytes()
    (tmp_path / "half.safetensors").write_bytes(data[: len(data) // 2])
    torch.save(state, tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "folder.pt").mkdir()
    (tmp_path / "st.pt").write_bytes((tmp_path / "good.safetensors").read_bytes())
    (tmp_path / "pt.safetensors").write_bytes((tmp_path / "good.pt").read_bytes())

    def err(name: str) -> str:
        return _err(load_weights, _net(), tmp_path / name, W)

    assert err("half.safetensors").startswith(
        f"{W}: {tmp_path}/half.safetensors is not a readable safetensors file (")
    assert err("half.safetensors").endswith("it may be truncated; save it again")
    for name in ("half.pt", "random.pt"):
        assert f"{tmp_path}/{name} is not a readable PyTorch checkpoint" in err(name)
        assert err(name).endswith("it may be truncated or corrupt, or not written by "
                                  "torch.save; save it again")
    assert err("empty.pt") == f"{W}: {tmp_path}/empty.pt is empty: save the weights again"
    assert err("folder.pt") == (f"{W}: {tmp_path}/folder.pt is a folder, not a file: name the "
                                "weights file in it")
    assert err("missing.pt") == (f"{W}: {tmp_path}/missing.pt does not exist: check the path "
                                 "(relative paths start at the project folder)")
    assert err("st.pt").endswith("it looks like a safetensors file (name it .safetensors)")
    assert err("pt.safetensors").endswith("it looks like a torch.save checkpoint (name it .pt)")


def test_checkpoints_that_hold_no_state_dict(tmp_path: Path) -> None:
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    torch.save({}, tmp_path / "empty_dict.pt")
    torch.save({"0.weight": torch.zeros(3, 4), "step": 5}, tmp_path / "mixed.pt")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "no_weights.pt")
    assert _err(load_weights, _net(), tmp_path / "list.pt", W) == (
        f"{W}: {tmp_path}/list.pt holds a list, not a state dict of tensors: save it with "
        "torch.save(model.state_dict(), ...) or as .safetensors")
    assert "holds an empty dict" in _err(load_weights, _net(), tmp_path / "empty_dict.pt", W)
    assert f"{tmp_path}/mixed.pt is not a state dict of tensors (its entry 'step' is a int)" \
        in _err(load_weights, _net(), tmp_path / "mixed.pt", W)
    assert "(its entry 'epoch' is a int)" in _err(load_weights, _net(),
                                                  tmp_path / "no_weights.pt", W)


def test_weights_that_do_not_fit_the_architecture(tmp_path: Path) -> None:
    save_file(nn.Sequential(nn.Linear(4, 5)).state_dict(), tmp_path / "a.safetensors")
    bigger = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2))
    assert _err(load_weights, bigger, tmp_path / "a.safetensors", W) == (
        f"{W}: {tmp_path}/a.safetensors does not fit the model: 2 missing (first: 2.weight): "
        "load the weights saved from this architecture (and its *_args)")
    save_file(bigger.state_dict(), tmp_path / "b.safetensors")
    assert "does not fit the model: 2 unexpected (first: 2.bias):" in _err(
        load_weights, nn.Sequential(nn.Linear(4, 5)), tmp_path / "b.safetensors", W)
    assert "2 missing (first: 1.weight), 2 unexpected (first: 0.bias)" in _err(
        load_weights, nn.Sequential(nn.ReLU(), nn.Linear(4, 5)), tmp_path / "a.safetensors", W)
    assert _err(load_weights, nn.Sequential(nn.Linear(4, 3)), tmp_path / "a.safetensors", W) == (
        f"{W}: {tmp_path}/a.safetensors does not fit the model: 0.weight has shape [5, 4] in "
        "the file but [3, 4] in the model: check the factory's arguments (*_args)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode; "
                    "test_unreadable_files_for_another_user covers this as user nobody")
def test_unreadable_weights(tmp_path: Path) -> None:
    torch.save(_net().state_dict(), tmp_path / "w.pt")
    (tmp_path / "w.pt").chmod(0)
    assert _err(load_weights, _net(), tmp_path / "w.pt", W) == (
        f"{W}: cannot read {tmp_path}/w.pt (permission denied): fix its permissions "
        "(chmod a+r) or run as a user who can read it")


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")
def test_unreadable_files_for_another_user() -> None:
    # Root ignores file modes, so the loaders run with the effective user nobody, for whom
    # mode 000 holds (a child process cannot: this venv's python lives under /root).
    with tempfile.TemporaryDirectory() as folder:
        os.chmod(folder, 0o755)
        path = Path(folder) / "w.pt"
        torch.save(_net().state_dict(), path)
        path.chmod(0)
        try:
            os.seteuid(65534)
        except PermissionError:
            pytest.skip("this root cannot switch users (no CAP_SETUID)")
        try:
            messages = [_err(load_weights, _net(), path, W), _err(inspect_onnx, path, "o")]
        finally:
            os.seteuid(0)
    assert messages == [
        f"{W}: cannot read {path} (permission denied): fix its permissions (chmod a+r) or "
        "run as a user who can read it",
        f"o: cannot read {path} (permission denied): fix its permissions (chmod a+r) or run "
        "as a user who can read it"]


# --- ONNX ----------------------------------------------------------------------------------

def _graph_model(inputs: list[Any], outputs: list[Any], nodes: list[Any],
                 inits: list[Any] | None = None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=inits or [])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name: str, elem: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor_value_info(name, elem, ["n", 4])


def test_onnx_info_of_an_exported_model_with_a_dynamic_batch(tmp_path: Path) -> None:
    torch.onnx.export(nn.Conv1d(3, 4, 5), (torch.zeros(1, 3, 50),), str(tmp_path / "m.onnx"),
                      input_names=["signal"], output_names=["features"],
                      dynamic_axes={"signal": {0: "batch"}, "features": {0: "batch"}},
                      opset_version=17, dynamo=False)
    info = inspect_onnx(tmp_path / "m.onnx", "model.onnx")
    assert (info.path, info.input_name, info.input_shape, info.input_dtype) == (
        tmp_path / "m.onnx", "signal", ("batch", 3, 50), "float32")
    assert info.output_names == ("features",) and info.output_shapes == (("batch", 4, 46),)
    assert info.opset == 17


def test_onnx_with_external_data(tmp_path: Path) -> None:
    weight = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    model = _graph_model([_vi("x")], [_vi("y")], [helper.make_node("MatMul", ["x", "w"], ["y"])],
                         [weight])
    onnx.save(model, tmp_path / "m.onnx", save_as_external_data=True, location="m.data",
              size_threshold=0)
    info = inspect_onnx(tmp_path / "m.onnx", "model.onnx")
    assert info.input_shape == ("n", 4) and info.output_names == ("y",)
    (tmp_path / "m.data").unlink()
    assert _err(inspect_onnx, tmp_path / "m.onnx", "model.onnx") == (
        f"model.onnx: {tmp_path}/m.onnx keeps its weights in m.data, which is missing from "
        f"{tmp_path}: keep the .onnx file and its data file together")


def test_onnx_files_edgekd_cannot_use(tmp_path: Path) -> None:
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    onnx.save(_graph_model([_vi("x")], [_vi("y")], relu), tmp_path / "good.onnx")
    data = (tmp_path / "good.onnx").read_bytes()
    (tmp_path / "half.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.onnx").write_text("this is not a model\n")
    torch.save(_net().state_dict(), tmp_path / "weights.onnx")
    (tmp_path / "empty.onnx").write_bytes(b"")
    (tmp_path / "dir.onnx").mkdir()
    onnx.save(helper.make_model(helper.make_graph(relu, "g", [_vi("x")], [_vi("y")])),
              tmp_path / "no_ir.onnx")
    model = _graph_model([_vi("x")], [_vi("y")], relu)
    model.ir_version = 0
    onnx.save(model, tmp_path / "invalid.onnx")
    add = [helper.make_node("Add", ["a", "b"], ["y"])]
    onnx.save(_graph_model([_vi("a"), _vi("b")], [_vi("y")], add), tmp_path / "two.onnx")
    cast = [helper.make_node("Cast", ["ids"], ["y"], to=TensorProto.FLOAT)]
    onnx.save(_graph_model([_vi("ids", TensorProto.INT64)], [_vi("y")], cast),
              tmp_path / "ids.onnx")
    onnx.save(_graph_model([_vi("x")], [], relu), tmp_path / "no_out.onnx")
    length = [helper.make_node("Shape", ["s"], ["y"])]
    onnx.save(_graph_model([_vi("s", TensorProto.STRING)], [_vi("y", TensorProto.INT64)],
                           length), tmp_path / "text_in.onnx")

    def err(name: str) -> str:
        return _err(inspect_onnx, tmp_path / name, "model.onnx")

    assert inspect_onnx(tmp_path / "no_ir.onnx", "model.onnx").input_name == "x"
    for name in ("half.onnx", "text.onnx"):
        assert err(name).startswith(f"model.onnx: {tmp_path}/{name} is not a valid ONNX model (")
        assert err(name).endswith("it may be truncated; export it again (torch.onnx.export)")
    assert "it looks like a torch.save checkpoint (name it .pt), not ONNX" in err("weights.onnx")
    assert err("invalid.onnx").startswith(
        f"model.onnx: {tmp_path}/invalid.onnx is not a valid ONNX model (")
    assert err("empty.onnx") == (f"model.onnx: {tmp_path}/empty.onnx is empty, not a valid ONNX "
                                 "model: export it again")
    assert "dir.onnx is a folder, not a file: name the .onnx file in it" in err("dir.onnx")
    assert f"{tmp_path}/missing.onnx does not exist" in err("missing.onnx")
    # Several inputs and integer inputs are fed (tests/test_model_io.py); strings are not.
    assert inspect_onnx(tmp_path / "two.onnx", "model.onnx").input_name == "a"
    assert inspect_onnx(tmp_path / "ids.onnx", "model.onnx").input_dtype == "int64"
    assert err("text_in.onnx") == (f"model.onnx: {tmp_path}/text_in.onnx's input 's' is object;"
                                   " edgekd feeds float32, float16, float64, int64, int32, int16,"
                                   " int8, uint8, bool: export the model with such inputs")
    assert err("no_out.onnx") == (f"model.onnx: {tmp_path}/no_out.onnx has no outputs: export "
                                  "it again with its outputs")


def test_integer_weights_into_float_parameters_are_refused(tmp_path: Path) -> None:
    """load_state_dict would cast int8 weights into float parameters silently (a model at
    chance); float16 / bfloat16 into float32 is a lossless widening and loads."""
    net = nn.Sequential(nn.Linear(4, 5))
    save_file({k: (v * 100).to(torch.int8) for k, v in net.state_dict().items()},
              tmp_path / "q.safetensors")
    assert _err(load_weights, nn.Sequential(nn.Linear(4, 5)), tmp_path / "q.safetensors",
                W) == (
        f"{W}: {tmp_path}/q.safetensors holds 0.weight as int8 but the model's parameter is "
        "float32: save the float weights (not quantized or integer ones) of this model")
    for dtype in (torch.float16, torch.bfloat16):
        save_file({k: v.to(dtype) for k, v in net.state_dict().items()},
                  tmp_path / "h.safetensors")
        other = nn.Sequential(nn.Linear(4, 5))
        load_weights(other, tmp_path / "h.safetensors", W)
        assert torch.allclose(other[0].weight, net[0].weight, atol=1e-2)


def test_standard_library_and_builtin_factories_are_refused(tmp_path: Path) -> None:
    """`student = "os:system"` with student_args would run a shell command."""
    what = "model.student"
    (tmp_path / "nets.py").write_text("from os import system\nfrom shutil import rmtree\n"
                                      "run = print\nclass Net:\n    pass\n")
    for spec, says in (
            ("os:system", "names the standard-library module 'os'"),
            ("subprocess:run", "names the standard-library module 'subprocess'"),
            ("builtins:eval", "names the standard-library module 'builtins'"),
            ("os.path:join", "names the standard-library module 'os'"),
            ("nets.py:system", "is the standard-library posix.system, not a function or class"),
            ("nets.py:rmtree", "is the standard-library shutil.rmtree"),
            ("nets.py:run", "is the standard-library builtins.print")):
        msg = _err(load_factory, spec, tmp_path, what)
        assert msg.startswith(f"{what}: {spec!r} ") and says in msg, msg
    assert load_factory("nets.py:Net", tmp_path, what).__name__ == "Net"  # the user's class
