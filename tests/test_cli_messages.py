"""Messages and exit codes of the command line and the settings (issue 14, a newcomer's
first hour): a bad value is blamed on where it came from (a flag, ``--set``, a Python
argument, the project file); click's usage errors, bench options, missing paths, bench
results checked against a budget, data files and in-memory data with the wrong names all
end in one ``error:`` line with the fix. Real processes, real runtimes, no mocks."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import UsageError
from tests.projects import classifier_project, digits

# The installed command, as a user runs it (its name is in click's messages).
SCRIPT = Path(sys.executable).parent / "edgekd"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "edgekd"]


def edgekd(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], cwd=cwd, text=True, capture_output=True,
                          timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The stderr of a refused command: exactly one line, ``error: ...``, no traceback."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0]


# -- 1. a bad value names the flag, --set item or Python argument it came from --------------


@pytest.mark.parametrize(("args", "says"), [
    (["--epochs", "-1"], "error: --epochs -1: "),
    (["--sparsity", "1.5"], "error: --sparsity 1.5: "),
    (["--threads", "-3"], "error: --threads -3: "),
    (["--set", "prune.sparsity=half"],
     "error: --set prune.sparsity=half: expected a number, got 'half' (str)"),
    (["--set", "quant.mehtod=minmax"], "error: --set quant.mehtod=minmax: unknown key 'mehtod'"),
])
def test_a_bad_flag_is_blamed_on_the_flag_not_the_valid_project_file(
        tmp_path: Path, args: list[str], says: str) -> None:
    classifier_project(tmp_path, n=50)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = edgekd("build", *args, cwd=tmp_path)
    line = one_error_line(result)
    assert result.returncode == 2
    assert line.startswith(says), line
    assert "edgekd.toml" not in line  # the file is valid
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_the_files_own_mistake_is_still_blamed_on_the_file(tmp_path: Path) -> None:
    from edgekd.settings.project import load_project

    path = classifier_project(tmp_path, n=50)
    path.write_text(path.read_text() + "\n[quant]\nper_channel = 3\n")
    with pytest.raises(UsageError) as info:
        load_project(path, ["distill.epochs=3"], origins={"distill.epochs=3": "--epochs 3"})
    assert str(info.value).startswith(f"{path}: quant.per_channel: expected true or false")


def test_python_settings_are_named_as_python_arguments(tmp_path: Path) -> None:
    from edgekd.pipeline.api import load

    classifier_project(tmp_path, n=50)
    with pytest.raises(UsageError) as info:
        load(settings={"prune.sparsity": "half"}, cwd=tmp_path, check_inputs=False)
    assert str(info.value) == ("settings['prune.sparsity']: expected a number, got 'half' "
                               "(str)")
    with pytest.raises(UsageError) as info:
        load(settings={"quant.mehtod": "minmax"}, cwd=tmp_path, check_inputs=False)
    assert str(info.value).startswith("settings['quant.mehtod']: unknown key 'mehtod'")
    assert "--set" not in str(info.value)
    with pytest.raises(UsageError) as info:
        load(settings={"distill.epochs": 0}, cwd=tmp_path, check_inputs=False)
    assert str(info.value).startswith("settings['distill.epochs']: ")


# -- 4. click's usage errors are one line ---------------------------------------------------


@pytest.mark.parametrize(("args", "says"), [
    (["build", "--epoch", "3"], "error: No such option: --epoch (did you mean --epochs?)"),
    (["build", "--log-level", "verbose"], "error: Invalid value for '--log-level': 'verbose' "
     "is not one of 'debug', 'info', 'warning', 'error'."),
    (["bild"], "error: No such command 'bild' (did you mean 'build'?)"),
    (["verify"], "error: Missing argument 'artifact'; see "),
])
def test_a_usage_error_is_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    result = edgekd(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert one_error_line(result).startswith(says)
    assert result.stdout == ""


def test_help_is_unchanged(tmp_path: Path) -> None:
    result = edgekd("build", "--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("Usage: edgekd build [OPTIONS]")
    assert "implies --check" in result.stdout  # 2: --junit writes the checks by itself
    alone = edgekd(cwd=tmp_path)
    assert "Usage: edgekd [OPTIONS] COMMAND" in alone.stdout + alone.stderr


# -- 3. bench options are checked before any work ------------------------------------------


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from onnxruntime.quantization import quantize_dynamic

    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 10))
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), str(folder / "m.onnx"), dynamo=False)
    quantize_dynamic(str(folder / "m.onnx"), str(folder / "q.onnx"))
    (folder / "trunc.onnx").write_bytes((folder / "m.onnx").read_bytes()[:200])
    return folder


@pytest.mark.parametrize(("args", "says"), [
    (["m.onnx", "--runtime", "onnxrt"], "error: unknown runtime 'onnxrt'; did you mean "
     "'onnxruntime'?"),
    (["m.onnx", "--shape", "1,3,32"], "error: --shape 1,3,32: m.onnx's input"),
    (["trunc.onnx"], "is not a valid ONNX model"),
])
def test_bench_refuses_bad_options_before_any_work(onnx_files: Path, args: list[str],
                                                    says: str) -> None:
    result = edgekd("bench", *args, cwd=onnx_files)
    assert result.returncode == 2
    assert says in one_error_line(result)
    assert "benchmarking" not in result.stdout


def test_a_shape_of_the_wrong_rank_names_the_models_rank(onnx_files: Path) -> None:
    result = edgekd("bench", "m.onnx", "--shape", "1,3,32", cwd=onnx_files)
    assert "has rank 4 (1,1,8,8), not 3: give 4 numbers" in one_error_line(result)


# -- 7. edgekd check on an edgekd bench --json file ------------------------------------------


def test_check_takes_the_bench_targets_budget_and_skips_accuracy(onnx_files: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = edgekd("bench", str(onnx_files / "q.onnx"), "--target", "raspberrypi",
                    "--runs", "5", "--seconds", "0.1", "--warmup", "1", "--json", str(out),
                    cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    import json

    assert json.loads(out.read_text())["target"] == "raspberrypi"
    # raspberrypi's budget has max_accuracy_drop, which a benchmark does not measure.
    checked = edgekd("check", str(out), cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    assert "Budgets (target raspberrypi)" in checked.stdout and "max_size_kb" in checked.stdout
    assert "max_accuracy_drop skipped: accuracy is not measured by edgekd bench" in (
        checked.stderr)
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_size_kb = 0.5\nmax_accuracy_drop = 2\n")
    broken = edgekd("check", str(out), "--budget", str(budget), cwd=tmp_path)
    assert broken.returncode == 1 and "max_accuracy_drop skipped" in broken.stderr


# -- 5. edgekd's warnings read as warnings ---------------------------------------------------


@pytest.mark.parametrize(("level", "says"), [
    ("warning", "warning: 48.5% of all parameters are zero"),
    ("debug", "WARNING edgekd.pipeline.training: 48.5% of all parameters are zero"),
])
def test_edgekds_warnings_print_as_warning_lines(tmp_path: Path, level: str, says: str
                                                 ) -> None:
    code = ("import logging; from edgekd.cli.logs import setup_logging; "
            f"setup_logging({level!r}); logging.getLogger('edgekd.pipeline.training')"
            ".warning('%s of all parameters are zero', '48.5%')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    assert result.stderr.strip() == says
    assert "\033[" not in result.stderr  # no colours when stderr is not a terminal


def test_warning_format_is_plain_at_info(caplog: pytest.LogCaptureFixture) -> None:
    from edgekd.cli.logs import _Plain

    record = logging.LogRecord("edgekd.x", logging.INFO, __file__, 1, "hello", None, None)
    assert _Plain(color=False).format(record) == "info: hello"
    other = logging.LogRecord("torch", logging.ERROR, __file__, 1, "boom", None, None)
    assert _Plain(color=False).format(other) == "error torch: boom"


# -- 6. paths given on the command line start at the current folder ---------------------------


def test_a_missing_model_path_says_relative_to_the_current_folder(tmp_path: Path) -> None:
    classifier_project(tmp_path, n=50)
    result = edgekd("build", "--model", "missing.onnx", cwd=tmp_path)
    line = one_error_line(result)
    assert result.returncode == 2
    assert line.startswith("error: --model missing.onnx: ")
    assert "relative to the current folder" in line and "project folder" not in line


# -- 8. a .npz with other names lists them --------------------------------------------------


def test_an_npz_with_other_names_lists_them(tmp_path: Path) -> None:
    from edgekd.inputs.sources import load_samples

    x, y = digits(20)
    np.savez(tmp_path / "digits_wrong.npz", images=x, labels=y)
    with pytest.raises(UsageError) as info:
        load_samples("digits_wrong.npz", root=tmp_path, what="data.train")
    text = str(info.value)
    assert "(its arrays: images, labels)" in text and "name the inputs x and the labels y" in text


# -- 9. in-memory data with a mistyped split or a list --------------------------------------


@pytest.mark.parametrize(("key", "hint"), [("tests", "test"), ("trian", "train")])
def test_a_mistyped_split_is_one_usage_error(key: str, hint: str) -> None:
    from edgekd.inputs.objects import check_form, data_objects

    x, y = digits(20)
    for check in (lambda d: check_form(d, "data"),
                  lambda d: data_objects(d, trains=True)):
        with pytest.raises(UsageError) as info:
            check({key: (x, y)})
        assert str(info.value) == (
            f"data= is a dict with key {key!r} (did you mean {hint!r}?): name splits (train, "
            "test, calibration, validation) or the model's inputs (each an array or tensor)")


def test_inputs_by_name_are_still_inputs() -> None:
    from edgekd.inputs.objects import data_objects

    x, _ = digits(20)
    found = data_objects({"pixels": x}, trains=False).found
    assert list(found) == ["train"] and found["train"].named["pixels"].shape == x.shape


def test_a_list_x_y_asks_for_a_tuple() -> None:
    from edgekd.inputs.objects import data_objects

    x, y = digits(20)
    with pytest.raises(UsageError, match=r"data= is a list \[x, y\]: give \(x, y\) as a tuple"):
        data_objects([x, y], trains=True)
    assert data_objects((x, y), trains=True).found["train"].y is not None


def test_ragged_inputs_are_a_usage_error() -> None:
    from edgekd.inputs.objects import data_objects

    with pytest.raises(UsageError, match="items of different shapes"):
        data_objects({"a": [np.zeros(3), np.zeros(4)]}, trains=False)


# -- 2. --junit implies --check --------------------------------------------------------------


def test_junit_without_check_writes_the_checks(tmp_path: Path) -> None:
    from tests.test_bad_input import finished

    finished(tmp_path / "p")
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_size_kb = 0.001\n")  # broken on purpose
    junit = tmp_path / "j.xml"
    result = edgekd("build", "--target", "x86-cpu", "--out", str(tmp_path / "out"), "--quiet",
                    "--budget", str(budget), "--junit", str(junit), cwd=tmp_path / "p",
                    timeout=600)
    assert result.returncode == 1, result.stderr  # the broken budget, as with --check
    assert (tmp_path / "out" / "x86-cpu" / "report.json").is_file()
    text = junit.read_text()
    assert "<testsuite" in text and 'type="BudgetExceeded"' in text
