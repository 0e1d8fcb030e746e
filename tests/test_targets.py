from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.errors import UsageError
from edgekd.settings.targets import all_targets, load_target, parse_target, target_names


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
                       match=r"unknown target 'raspberry'; known targets: .*raspberrypi"):
        load_target("raspberry")


def test_target_names_are_looked_up_not_joined(tmp_path: Path) -> None:
    text = 'description = "x"\nruntimes = ["onnxruntime"]\nthreads = 1\n'
    (tmp_path / "ok.toml").write_text(text)
    with pytest.raises(UsageError, match="unknown target"):
        load_target("../ok", tmp_path)
    assert load_target("ok", tmp_path).threads == 1
