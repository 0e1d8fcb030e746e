from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli.commands import app

runner = CliRunner()


def test_targets_lists_every_target_with_a_description() -> None:
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    for name in ("raspberrypi", "x86-cpu", "intel-cpu", "nvidia-gpu"):
        assert name in result.output


def test_unknown_target_exits_2_with_the_list(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["build", "--target", "coral", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown target 'coral'" in result.output
    assert "raspberrypi" in result.output and "intel-cpu" in result.output
    assert list(tmp_path.iterdir()) == []


def test_bad_option_value_exits_2(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["build", "--target", "raspberrypi", "--alpha", "3",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "alpha must be in [0, 1]" in result.output


def test_gpu_target_without_provider_exits_1_before_any_work(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return
    result = runner.invoke(app, ["build", "--target", "nvidia-gpu", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "onnxruntime-gpu" in result.output
    assert list(tmp_path.iterdir()) == []


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and "edgekd" in result.output


@pytest.mark.parametrize(("setting", "message"), [
    ("foo", "expected section.key=value"),
    ("prune.metod=x", "unknown key 'metod'; allowed: method, schedule"),
    ("nosection.x=1", "no config section 'nosection'"),
    ("distill.views=-1", "views must be >= 0"),
    ('distill.pairs=[["2"]]', "pairs must be [[student_layer, teacher_layer]"),
    ("prune.method=channels", "allowed: unstructured, structured"),
])
def test_bad_setting_exits_2_before_any_work(setting: str, message: str,
                                             tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "--target", "x86-cpu", "--out", str(tmp_path),
                                 "--set", setting])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_pair_naming_a_missing_layer_exits_2_and_writes_no_build(tmp_path: Path) -> None:
    result = runner.invoke(app, ["build", "--target", "x86-cpu", "--out", str(tmp_path),
                                 "--epochs", "1", "--set", "teacher.epochs=1",
                                 "--set", 'distill.pairs=[["9", "5"]]'])
    assert result.exit_code == 2, result.output
    assert "the student has no layer '9'" in " ".join(result.output.split())
    assert not (tmp_path / "x86-cpu").exists()
