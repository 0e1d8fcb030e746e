"""What the bad-input fuzzer (benchmarks/fuzz_bad_input.py) found accepted silently, as
regular cases: each is now one `error:` line, exit 2."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from edgekd.cli import app
from tests.test_bad_input import finished

runner = CliRunner()


def _build(project: Path, tmp_path: Path) -> tuple[int, str]:
    result = runner.invoke(app, ["build", "--config", str(project), "--target", "x86-cpu",
                                 "--out", str(tmp_path / "out")])
    return result.exit_code, result.output


def test_a_dataset_factory_calling_sys_exit_is_an_error(tmp_path: Path) -> None:
    project = finished(tmp_path / "p")
    (tmp_path / "p" / "data_factory.py").write_text("import sys\n\ndef f():\n    sys.exit(0)\n")
    text = project.read_text().replace('test = "data.npz"',
                                       'test = "data.npz"\ncalibration = "data_factory.py:f"')
    project.write_text(text)
    code, out = _build(project, tmp_path)
    assert code == 2, out
    assert "data.calibration: the factory data_factory.py:f raised SystemExit" in out
    assert "Traceback" not in out and not (tmp_path / "out" / "x86-cpu").exists()


def test_a_budget_key_given_a_table_is_not_a_target(tmp_path: Path) -> None:
    project = finished(tmp_path / "p")
    project.write_text(project.read_text() + "\n[budget.min_int8_speedup]\n")
    code, out = _build(project, tmp_path)
    assert code == 2 and "budget.min_int8_speedup must be a number, got a table" in out


def test_a_budget_for_an_unknown_target_is_refused(tmp_path: Path) -> None:
    project = finished(tmp_path / "p")
    project.write_text(project.read_text() + "\n[budget.raspberry]\nmax_size_kb = 3\n")
    code, out = _build(project, tmp_path)
    assert code == 2 and "[budget.raspberry] names no target; targets:" in out


def test_a_fifo_as_the_project_file_is_refused_at_once(tmp_path: Path) -> None:
    """Read only regular files: a named pipe given as --config would block forever."""
    import os
    import subprocess
    import sys

    fifo = tmp_path / "edgekd.toml"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "edgekd", "build", "--config", str(fifo)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: project file {fifo} is not a regular file (a FIFO, socket or device): give a "
        "UTF-8 TOML file"]
