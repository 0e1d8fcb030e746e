from __future__ import annotations

from typer.testing import CliRunner

from edgekd.cli import app

runner = CliRunner()


def test_targets_lists_every_target_with_a_description() -> None:
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    for name in ("raspberrypi", "x86-cpu", "intel-cpu", "nvidia-gpu"):
        assert name in result.output


def test_unknown_target_exits_2_with_the_list(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = runner.invoke(app, ["build", "--target", "raspberry", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown target 'raspberry'" in result.output
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
