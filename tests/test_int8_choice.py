"""What ships per runtime (edgekd.pipeline.choosing): ONNX Runtime's INT8 variants tried when
the build's INT8 is not faster than FP32, and the ``ship`` policy deciding between INT8 and
FP32, through the real CLI, real ONNX Runtime and real benchmark workers. A tiny 3-channel
residual CNN on 8x8 inputs is overhead-bound: its INT8 rarely beats FP32. No assertion is on
a timing: only on what the figures, whatever they were, imply."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.compress.variants import candidates, make_variants
from edgekd.settings.config import QuantConfig
from tests.projects import QUICK, digits

runner = CliRunner()

MODELS = '''
import torch
from torch import nn


class Residual(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return torch.relu(x + self.conv2(torch.relu(self.conv1(x))))


def student(num_classes=10, width=8):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), Residual(width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished, trained 3-channel residual classifier and its data (digits, 3 channels)."""
    root = tmp_path_factory.mktemp("int8_choice")
    (root / "models.py").write_text(MODELS)
    x, y = digits(600)
    x = np.repeat(x, 3, axis=1)
    np.savez(root / "data.npz", x=x, y=y)
    spec = importlib.util.spec_from_file_location("int8_choice_models", root / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    torch.manual_seed(0)
    net = mod.student()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)  # the build feeds the raw pixels
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    save_file(net.state_dict(), root / "student.safetensors")
    (root / "edgekd.toml").write_text(
        'target = "x86-cpu"\n[model]\nstudent = "models.py:student"\n'
        'student_weights = "student.safetensors"\n[data]\ntest = "data.npz"\n' + QUICK)
    return root


def _build(project: Path, out: Path, *items: str) -> dict:
    args = ["build", "--config", str(project / "edgekd.toml"), "--out", str(out)]
    for item in items:
        args += ["--set", item]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return json.loads((out / "x86-cpu" / "report.json").read_text())


def _ort(report: dict) -> dict[str, dict]:
    return {a["precision"]: a for a in report["artifacts"] if a["runtime"] == "onnxruntime"}


def test_fastest_tries_variants_and_ships_what_the_timing_says(project: Path,
                                                               tmp_path: Path) -> None:
    report = _build(project, tmp_path / "out", "ship=fastest")
    ort = _ort(report)
    choice = ort["int8"]["int8_choice"]
    assert choice["policy"] == "fastest" and choice["policy_from"] == "project"
    build, *variants = choice["tried"]
    assert build["name"] == "build" and build["verdict"] in (
        "faster", "slower", "no measurable change")
    if build["verdict"] != "faster":  # the alternatives were made and judged, each with a why
        names = [n for n, _ in candidates(QuantConfig())]
        assert [v["name"] for v in variants] == names[:len(variants)]
        if all(v["verdict"] != "faster" for v in variants):  # none paid off: all were tried
            assert len(variants) == len(names)
        for v in variants:
            assert v["why"]
            assert v["why"].startswith("rejected") == (v["speedup"] is None)
    else:
        assert not variants
    kept = next(t for t in choice["tried"] if t["kept"])
    assert choice["int8"] == kept["name"]
    timed = [t for t in choice["tried"] if t["speedup"] is not None]
    assert kept["speedup"] == max(t["speedup"] for t in timed)
    # The policy: FP32 only when the kept INT8 is measurably slower.
    expected = "fp32" if kept["verdict"] == "slower" else "int8"
    assert choice["shipped_precision"] == expected
    assert ort[expected]["shipped"] is True
    assert [a["precision"] for a in ort.values() if a["shipped"]] == [expected]
    assert choice["shipped"] == ort[expected]["path"] and choice["why"]
    # The shipped file is the one on disk, described as it is, and the package runs it.
    folder = tmp_path / "out" / "x86-cpu"
    import hashlib

    int8_file = folder / ort["int8"]["path"]
    assert hashlib.sha256(int8_file.read_bytes()).hexdigest() == ort["int8"]["sha256"]
    assert ort["int8"]["size_bytes"] == int8_file.stat().st_size
    script = (folder / "run_onnxruntime.py").read_text()
    assert f"default={expected!r}" in script  # run_onnxruntime.py runs the shipped file
    from edgekd.report.shipping import html_section, markdown_lines

    text = "\n".join(markdown_lines(report))
    assert choice["why"] in text and all(t["name"] in text for t in choice["tried"])
    import html

    assert html.escape(choice["why"]) in html_section(report)  # quotes and apostrophes


def test_int8_policy_ships_int8_even_when_slower(project: Path, tmp_path: Path) -> None:
    report = _build(project, tmp_path / "out", "ship=int8")
    ort = _ort(report)
    choice = ort["int8"]["int8_choice"]
    assert ort["int8"]["shipped"] is True and ort["fp32"]["shipped"] is False
    assert choice["shipped_precision"] == "int8" and 'ship = "int8"' in choice["why"]
    kept = next(t for t in choice["tried"] if t["kept"])
    if kept["verdict"] == "slower":
        assert "slower" in choice["why"]


def test_smallest_ships_int8(project: Path, tmp_path: Path) -> None:
    report = _build(project, tmp_path / "out", "ship=smallest")
    ort = _ort(report)
    assert ort["int8"]["shipped"] is True and ort["fp32"]["shipped"] is False
    assert "smaller" in ort["int8"]["int8_choice"]["why"]


def test_fp32_policy_ships_fp32_and_the_budget_checks_it(project: Path, tmp_path: Path) -> None:
    """ship = "fp32" (what edgekd search sets for an FP32 candidate) ships FP32 without
    trying variants; run_onnxruntime.py and the size budget then take the FP32 file."""
    from edgekd.report.gate import budget_checks
    from edgekd.settings.budgets import Budget

    report = _build(project, tmp_path / "out", "ship=fp32")
    ort = _ort(report)
    choice = ort["int8"]["int8_choice"]
    assert ort["fp32"]["shipped"] is True and ort["int8"]["shipped"] is False
    assert choice["shipped_precision"] == "fp32" and [t["name"] for t in choice["tried"]] == [
        "build"] and choice["why"].startswith('FP32 ships because ship = "fp32"')
    checked = {c.subject for c in budget_checks(report, Budget(max_size_kb=1e6))}
    assert checked == {ort["fp32"]["path"]}
    script = (tmp_path / "out" / "x86-cpu" / "run_onnxruntime.py").read_text()
    assert ort["fp32"]["path"] in script


def test_bad_ship_value_is_one_line(project: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "--config", str(project / "edgekd.toml"), "--out",
                                 str(tmp_path / "out"), "--set", "ship=bogus"])
    assert result.exit_code == 2
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert all(p in lines[0] for p in ("int8", "fastest", "smallest"))
    assert "Traceback" not in result.output
    assert not (tmp_path / "out" / "x86-cpu").exists()


def test_variants_are_real_ort_models(project: Path, tmp_path: Path) -> None:
    """Every variant loads in ONNX Runtime and keeps the float layers it was asked to."""
    import onnx
    import onnxruntime as ort

    net_file = tmp_path / "fp32.onnx"
    spec = importlib.util.spec_from_file_location("int8_choice_m2", project / "models.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    torch.onnx.export(mod.student().eval(), (torch.zeros(1, 3, 8, 8),), str(net_file),
                      input_names=["input"], dynamo=False)
    calib = np.random.default_rng(0).standard_normal((16, 3, 8, 8)).astype(np.float32)
    made = make_variants(net_file, tmp_path / "v", calib, QuantConfig())
    assert [v.name for v in made] == [n for n, _ in candidates(QuantConfig())]
    for v in made:
        ops = {n.op_type for n in onnx.load(str(v.path)).graph.node}
        if v.settings["format"] == "QOperator":
            assert "QLinearConv" in ops
        else:
            assert "QuantizeLinear" in ops and "QLinearConv" not in ops
        session = ort.InferenceSession(str(v.path), providers=["CPUExecutionProvider"])
        out = session.run(None, {session.get_inputs()[0].name: calib[:1]})[0]
        assert out.shape == (1, 10) and np.isfinite(out).all()
