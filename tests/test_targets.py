from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.errors import UsageError
from edgekd.settings.targets import (
    Target,
    all_targets,
    load_target,
    parse_target,
    target_names,
)


def test_shipped_targets_load() -> None:
    names = target_names()
    assert {"raspberrypi", "raspberrypi5", "x86-cpu", "intel-cpu", "nvidia-gpu",
            "jetson-orin"} <= set(names)
    targets = {t.name: t for t in all_targets()}
    assert targets["raspberrypi"].runtimes == ("tflite", "onnxruntime")
    assert targets["intel-cpu"].runtimes == ("openvino",)
    assert targets["x86-cpu"].runtimes == ("onnxruntime",)
    assert targets["nvidia-gpu"].needs_gpu
    assert not targets["raspberrypi"].needs_gpu
    assert all(t.description for t in targets.values())
    assert targets["raspberrypi5"].cpu == "Cortex-A76"
    assert targets["raspberrypi"].cpu == "Cortex-A72"
    assert targets["jetson-orin"].needs_gpu
    assert targets["raspberrypi"].budget.max_size_kb == 64


def test_budget_table_in_a_target_file() -> None:
    text = ('description = "x"\nruntimes = ["onnxruntime"]\nthreads = 2\n'
            '[budget]\nmax_p95_ms = 1.5\n')
    assert parse_target("t", text, "t.toml").budget.max_p95_ms == 1.5
    with pytest.raises(UsageError, match="t.toml: unknown key 'budget.p95'"):
        parse_target("t", text.replace("max_p95_ms", "p95"), "t.toml")


def test_unknown_key_is_rejected_with_the_allowed_keys() -> None:
    text = 'description = "x"\nruntimes = ["onnxruntime"]\nthreads = 2\nthread = 4\n'
    with pytest.raises(UsageError, match=r"unknown key 'thread'; allowed: description"):
        parse_target("t", text, "t.toml")


@pytest.mark.parametrize("text, message", [
    ('description = "x"\nruntimes = ["coreml"]\nthreads = 2\n', "unknown runtime 'coreml'"),
    ('description = "x"\nruntimes = []\nthreads = 2\n', "runtimes is empty"),
    ('description = "x"\nruntimes = ["onnxruntime"]\nthreads = 0\n', "threads must be >= 1"),
    ('description = "x"\nruntimes = ["onnxruntime"]\nthreads = "4"\n',
     "threads: expected an integer, got '4'"),
    ('description = "x"\nruntimes = "onnxruntime"\nthreads = 2\n',
     "runtimes: expected a list of strings, got 'onnxruntime'"),
    ('description = "x"\nthreads = 2\n', "missing key 'runtimes'"),
    ('description = "x\n', "TOML syntax error"),
])
def test_bad_target_files(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_target("t", text, "t.toml")


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(UsageError,
                       match=r"unknown target 'coral'; known targets: .*raspberrypi"):
        load_target("coral")


@pytest.mark.parametrize(("typo", "meant"), [("raspbery", "raspberrypi"),
                                             ("raspberry", "raspberrypi"),
                                             ("x86cpu", "x86-cpu"), ("jetson", "jetson-orin")])
def test_a_mistyped_target_suggests_the_close_one(typo: str, meant: str) -> None:
    with pytest.raises(UsageError) as info:
        load_target(typo)
    assert str(info.value) == (f"unknown target {typo!r}: did you mean {meant!r}? "
                               "(edgekd targets lists them)")


def test_a_mistyped_target_on_the_command_line(tmp_path: Path) -> None:
    """The real CLI, before any import of torch: one line, exit 2, nothing written."""
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--target", "raspbery",
                           "--out", str(tmp_path / "out")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: unknown target 'raspbery': did you mean 'raspberrypi'? (edgekd targets lists "
        "them)"]
    assert not (tmp_path / "out").exists()


def test_device_targets_name_their_machine() -> None:
    """Which targets are devices of their own architecture (edgekd.report.gate uses it)."""
    machines = {t.name: t.machine for t in all_targets()}
    assert machines["raspberrypi"] == machines["raspberrypi5"] == "aarch64"
    assert machines["jetson-orin"] == "aarch64"
    assert machines["x86-cpu"] == machines["intel-cpu"] == "x86_64"
    assert machines["nvidia-gpu"] == ""  # runs where it is built
    base = 'description = "x"\nruntimes = ["onnxruntime"]\nthreads = 1\n'
    assert parse_target("t", base + 'machine = "arm64"\n', "t.toml").machine == "aarch64"
    with pytest.raises(UsageError, match="unknown machine 'aarch46'; did you mean 'aarch64'"):
        parse_target("t", base + 'machine = "aarch46"\n', "t.toml")


def test_a_mistyped_runtime_suggests_the_close_one() -> None:
    with pytest.raises(ValueError, match="unknown runtime 'onnxrt'; did you mean "
                                         "'onnxruntime'"):
        Target(name="t", description="x", runtimes=("onnxrt",), threads=1)


def test_target_names_are_looked_up_not_joined(tmp_path: Path) -> None:
    text = 'description = "x"\nruntimes = ["onnxruntime"]\nthreads = 1\n'
    (tmp_path / "ok.toml").write_text(text)
    with pytest.raises(UsageError, match="unknown target"):
        load_target("../ok", tmp_path)
    assert load_target("ok", tmp_path).threads == 1
