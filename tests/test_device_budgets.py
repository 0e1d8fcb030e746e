"""Honest device budgets: every budget check says which machine measured its figure, and the
latency and memory of a device target (a Raspberry Pi, a Jetson) measured only on the build
host are "not measured on the target", never a pass. Also: ``edgekd check`` takes a build
folder, and a build removes its lock file however it ends, without a race with a second one.

Reports here are built by hand where only the gate is under test; one real build (a
finished model, ONNX Runtime only) checks the whole path, with real processes and signals.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.report.gate import (
    OFF_TARGET,
    budget_checks,
    check_state,
    gate_fails,
    verdict,
)
from edgekd.report.schema import validate_report
from edgekd.settings.budgets import Budget
from edgekd.settings.targets import canonical_machine
from tests.test_bad_input import case_unconvertible, finished

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
PI = {"hostname": "pi", "machine": "aarch64", "cpu": "Cortex-A72",
      "model": "Raspberry Pi 4 Model B Rev 1.4"}
X86 = {"hostname": "vm", "machine": "x86_64", "cpu": "AMD EPYC", "model": None}


def _lat(p50: float) -> dict[str, Any]:
    return {"p50": p50, "p90": p50, "p95": p50 * 1.2, "p99": p50 * 1.5, "mean": p50,
            "std": 0.1, "min": p50, "max": p50 * 2, "p50_ci95": [p50 * 0.99, p50 * 1.01]}


def _measured(p50: float, rss: float, device: dict[str, Any]) -> dict[str, Any]:
    return {"latency_ms": _lat(p50), "memory": {"peak_rss_mb": rss}, "device": device}


def _report(target: str = "raspberrypi", remote: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """A Pi build as an x86_64 host records it: the INT8 file measured here (and on
    ``remote``, a device reached with --remote)."""
    def art(path: str, precision: str, p50: float, acc: float) -> dict[str, Any]:
        a = {"path": path, "runtime": "onnxruntime", "precision": precision,
             "size_bytes": 40 * 1024, "accuracy": acc, **_measured(p50, 60.0, X86)}
        if remote is not None:
            a["remote"] = [{"remote": "pi@pi4", **_measured(p50 * 10, 80.0, remote)}]
        return a

    return {"target": target, "host": {"machine": "x86_64", "cpus": 2, "processor": "x86_64"},
            "stages": [{"name": "teacher", "accuracy": 0.99}],
            "artifacts": [art("m_fp32.onnx", "fp32", 0.2, 0.985),
                          art("m_int8.onnx", "int8", 0.1, 0.98)]}


BUDGET = Budget(max_size_kb=64, max_p95_ms=5, max_peak_rss_mb=256, max_accuracy_drop=2,
                min_int8_speedup=1.0)


def _by_key(checks: list[Any]) -> dict[tuple[str, str], Any]:
    return {(c.budget, c.subject): c for c in checks}


def test_host_figures_of_a_device_target_are_not_measured_on_the_target() -> None:
    checks = _by_key(budget_checks(_report(), BUDGET))
    size, drop = checks[("max_size_kb", "m_int8.onnx")], checks[("max_accuracy_drop",
                                                                  "m_int8.onnx")]
    assert size.on_target and size.measured_on == "any machine" and size.state == "holds"
    assert drop.on_target and drop.state == "holds"
    for key in ("max_p95_ms", "max_peak_rss_mb", "min_int8_speedup"):
        c = checks[(key, "m_int8.onnx")]
        assert c.ok  # within the limit on this host ...
        assert not c.on_target and c.state == OFF_TARGET  # ... which says nothing of a Pi
        assert c.measured_on == "build host (x86_64, AMD EPYC)"
    rows = [c.to_dict() for c in checks.values()]
    assert not gate_fails(rows) and gate_fails(rows, require_device=True)
    assert verdict(rows) == (
        "2 hold, 3 not measured on the target, only on build host (x86_64, AMD EPYC): run "
        "with --remote user@device to measure them there; --require-device makes them fail")


def test_a_device_measured_over_ssh_decides_and_is_named() -> None:
    checks = _by_key(budget_checks(_report(remote=PI), BUDGET))
    # The device's figures replace the host's: no host latency check is left to confuse.
    assert ("max_p95_ms", "m_int8.onnx") not in checks
    p95 = checks[("max_p95_ms", "m_int8.onnx @ pi@pi4")]
    assert p95.on_target and p95.measured == pytest.approx(1.2) and p95.state == "holds"
    assert p95.measured_on == "pi@pi4 (aarch64, Raspberry Pi 4 Model B Rev 1.4)"
    speed = checks[("min_int8_speedup", "m_int8.onnx @ pi@pi4")]
    assert speed.on_target and speed.measured == pytest.approx(2.0)
    rows = [c.to_dict() for c in checks.values()]
    assert verdict(rows) == f"all {len(rows)} budgets hold"
    assert not gate_fails(rows, require_device=True)
    # Over the limit on the device: broken, whatever the host measured.
    slow = _report(remote=PI)
    slow["artifacts"][1]["remote"][0]["latency_ms"] = _lat(50.0)
    (p95,) = [c for c in budget_checks(slow, Budget(max_p95_ms=5))]
    assert p95.subject == "m_int8.onnx @ pi@pi4" and p95.state == "broken"


def test_a_remote_of_another_architecture_is_not_the_target_either() -> None:
    checks = budget_checks(_report(remote=X86), Budget(max_p95_ms=5))
    assert {c.subject: c.on_target for c in checks} == {"m_int8.onnx": False,
                                                        "m_int8.onnx @ pi@pi4": False}
    assert "pi@pi4 (x86_64, AMD EPYC)" in verdict([c.to_dict() for c in checks])


def test_a_host_target_measured_on_its_own_architecture_holds() -> None:
    """x86-cpu measured on an x86_64 host is the target; a report of an unknown target (or an
    edgekd bench --json file) cannot say otherwise, so its figures count as before."""
    for target in ("x86-cpu", "a-target-this-edgekd-does-not-ship"):
        checks = budget_checks(_report(target), BUDGET)
        assert all(c.on_target for c in checks), target
    recorded = _report()
    recorded["budget"] = {"source": "t", "limits": {}, "target_machine": ""}
    assert all(c.on_target for c in budget_checks(recorded, BUDGET))  # what the build said


def _write(folder: Path, report: dict[str, Any], limits: dict[str, float]) -> Path:
    """A build folder holding ``report`` with its budget evaluated as a build does."""
    folder.mkdir(parents=True, exist_ok=True)
    checks = budget_checks(report, Budget(**limits))
    report = {**report, "budget": {"source": "target raspberrypi", "limits": limits,
                                   "target_machine": "aarch64",
                                   "checks": [c.to_dict() for c in checks]}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_check_takes_a_build_folder_and_require_device_fails_host_figures(
        tmp_path: Path) -> None:
    folder = _write(tmp_path / "build" / "raspberrypi", _report(),
                    {"max_size_kb": 64.0, "max_p95_ms": 5.0})
    junit = tmp_path / "j.xml"
    res = runner.invoke(app, ["check", str(folder), "--junit", str(junit)],
                        terminal_width=200)
    assert res.exit_code == 0, res.output  # a warning by default
    assert "not on target" in res.output and "ok" in res.output
    assert ("1 hold, 1 not measured on the target, only on build host (x86_64, AMD EPYC): "
            "run with --remote user@device") in res.output
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "1")
    skipped = suite.find(".//testcase[@name='m_int8.onnx']/skipped")
    assert skipped is not None and "not measured on the target" in skipped.get("message", "")
    res = runner.invoke(app, ["check", str(folder), "--require-device", "--junit", str(junit)],
                        terminal_width=200)
    assert res.exit_code == 1 and "NOT ON TARGET" in res.output, res.output
    suite = ET.parse(junit).getroot()
    assert (suite.get("failures"), suite.get("skipped")) == ("1", "0")
    failure = suite.find(".//testcase/failure[@type='NotMeasuredOnTarget']")
    assert failure is not None and "build host (x86_64" in failure.get("message", "")
    # Measured on a Pi over SSH: --require-device is satisfied.
    on_pi = _write(tmp_path / "pi" / "raspberrypi", _report(remote=PI),
                   {"max_size_kb": 64.0, "max_p95_ms": 5.0})
    res = runner.invoke(app, ["check", str(on_pi), "--require-device"], terminal_width=200)
    assert res.exit_code == 0 and "all 2 budgets hold" in res.output, res.output
    assert "pi@pi4 (aarch64" in res.output


def test_check_refuses_a_folder_without_a_report(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "edgekd", "check", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {tmp_path} is a folder without a report.json: give a build folder "
        "(OUT/<target>), its report.json or an edgekd bench --json file"]


def test_a_bench_file_measured_on_a_device_is_checked_on_it(tmp_path: Path) -> None:
    """edgekd bench --remote writes device entries only: the gate checks them."""
    entry = {"artifact": "m_int8.onnx", "runtime": "onnxruntime", "file_size_bytes": 4096,
             "placement": {"quantized": True}, **_measured(1.0, 70.0, PI)}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"benchmarks": [{**entry, "remote": "pi@pi4"}], "errors": []}))
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_size_kb = 64\nmax_p95_ms = 0.5\n")
    res = runner.invoke(app, ["check", str(path), "--budget", str(budget)], terminal_width=200)
    assert res.exit_code == 1 and "m_int8.onnx @ pi@pi4" in res.output, res.output
    assert "1 of 2 budgets broken" in res.output


def test_report_md_carries_where_it_was_measured() -> None:
    from edgekd.report import markdown

    report = {**_report(), "target_description": "Raspberry Pi 4"}
    checks = budget_checks(report, BUDGET)
    report["budget"] = {"source": "target raspberrypi", "limits": BUDGET.to_dict(),
                        "target_machine": "aarch64", "checks": [c.to_dict() for c in checks]}
    title, section = "\n".join(markdown._title(report)), "\n".join(markdown._budgets(report))
    assert title.splitlines()[4].startswith(
        "**Budgets: ⚠️ 2 hold, 3 not measured on the target, only on build host")
    assert "all hold" not in title
    assert "| build host (x86_64, AMD EPYC) | ⚠️ not on target |" in section
    assert "| any machine | ✅ |" in section


def test_schema_accepts_the_new_fields() -> None:
    from edgekd.report.schema import report_schema

    part = report_schema()["$defs"]["budget_check"]["properties"]
    assert part["measured_on"]["type"] == "string" and part["on_target"]["type"] == "boolean"
    section = report_schema()["properties"]["budget"]["properties"]
    assert section["target_machine"]["type"] == "string"


# -- one real build for a device target, measured only on this host ---------------------------

def _other_target() -> str:
    """A shipped target of another architecture than this machine's."""
    return "x86-cpu" if canonical_machine(platform.machine()) == "aarch64" else "raspberrypi"


@pytest.fixture(scope="module")
def device_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """``edgekd build --strict`` (a finished model, ONNX Runtime only) for a device target,
    in a real process: the host's figures must not pass for the device's."""
    root = tmp_path_factory.mktemp("device")
    project = finished(root / "p", extra='runtimes = ["onnxruntime"]')
    budget = root / "budget.toml"
    budget.write_text("[budget]\nmax_size_kb = 4096\nmax_p95_ms = 1000\n"
                      "max_peak_rss_mb = 8192\n")
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--config", str(project),
                           "--target", _other_target(), "--out", str(root / "out"),
                           "--budget", str(budget), "--strict", "--junit",
                           str(root / "out" / "budgets.xml")],
                          capture_output=True, text=True, timeout=900, cwd=root)
    return root / "out" / _other_target(), done


def test_a_real_device_build_says_it_was_not_measured_on_the_device(
        device_build: tuple[Path, Any]) -> None:
    folder, done = device_build
    assert done.returncode == 1, done.stdout + done.stderr  # --strict: host figures fail
    assert "Traceback" not in done.stderr
    assert "not measured on the target" in done.stdout and "NOT ON TARGET" in done.stdout
    report = json.loads((folder / "report.json").read_text())  # written all the same
    assert not validate_report(report)
    budget = report["budget"]
    assert budget["target_machine"] == ("x86_64" if _other_target() == "x86-cpu"
                                        else "aarch64")
    states = {(c["budget"], check_state(c)) for c in budget["checks"]}
    assert states == {("max_size_kb", "holds"), ("max_p95_ms", OFF_TARGET),
                      ("max_peak_rss_mb", OFF_TARGET)}
    host = canonical_machine(platform.machine())
    for c in budget["checks"]:
        assert c["measured_on"] == "any machine" if c["budget"] == "max_size_kb" else \
            c["measured_on"].startswith(f"build host ({host}")
    md = (folder / "report.md").read_text()
    assert "✅ all hold" not in md and "not measured on the target" in md
    suite = ET.parse(folder.parent / "budgets.xml").getroot()
    assert suite.get("failures") == "2"
    # The same report through the CI gate: a warning by default, a failure on demand.
    res = subprocess.run([sys.executable, "-m", "edgekd", "check", str(folder)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "not on target" in res.stdout, res.stdout + res.stderr
    res = subprocess.run([sys.executable, "-m", "edgekd", "check", str(folder),
                          "--require-device"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1, res.stdout + res.stderr


def test_the_build_lock_is_gone_after_a_real_build(device_build: tuple[Path, Any]) -> None:
    folder, _ = device_build
    assert not (folder.parent / ".cache" / f"{folder.name}.lock").exists()


# -- the build lock ----------------------------------------------------------------------------

def test_a_failed_build_leaves_no_lock(tmp_path: Path) -> None:
    args = case_unconvertible(tmp_path / "p")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", *args, "--target",
                           "x86-cpu", "--out", str(out)], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "cannot convert the model" in done.stderr
    assert not (out / ".cache" / "x86-cpu.lock").exists()
    assert not (out / ".cache").exists()  # nothing else was cached: the folder went too


def test_an_interrupted_build_leaves_no_lock(tmp_path: Path) -> None:
    project = finished(tmp_path / "p")
    out = tmp_path / "out"
    lock = out / ".cache" / "x86-cpu.lock"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "build", "--config", str(project),
                             "--target", "x86-cpu", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    try:
        deadline = time.monotonic() + 300
        while not lock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock.exists(), "the build never took its lock"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert not lock.exists()
    assert not (out / "x86-cpu").exists()


HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from edgekd.report.staging import build_lock

    with build_lock(Path(sys.argv[1])):
        print("held", flush=True)
        sys.stdin.readline()  # until the test says so
""")


def test_a_second_build_process_waits_for_nothing_and_a_released_lock_is_gone(
        tmp_path: Path) -> None:
    final = tmp_path / "out" / "x86-cpu"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(final)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        second = subprocess.run([sys.executable, "-m", "edgekd", "build", "--config",
                                 str(finished(tmp_path / "p")), "--target", "x86-cpu", "--out",
                                 str(final.parent)], capture_output=True, text=True,
                                timeout=600, cwd=tmp_path)
        assert second.returncode == 2
        assert second.stderr.splitlines() == [
            f"error: another edgekd build is writing {final} right now: wait for it, or "
            "choose another --out"]
        assert (final.parent / ".cache" / "x86-cpu.lock").exists()  # still the holder's
        holder.communicate("\n", timeout=60)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert holder.returncode == 0
    assert not (final.parent / ".cache").exists()


CONTENDER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from edgekd.errors import UsageError
    from edgekd.report.staging import build_lock

    final, inside, rounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    held = 0
    deadline = time.monotonic() + 120
    while held < rounds and time.monotonic() < deadline:
        try:
            with build_lock(final):
                # Exclusive creation: fails if another process holds the lock right now.
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.close(fd)
                time.sleep(0.001)
                os.unlink(inside)
                held += 1
        except UsageError:
            pass  # another one holds it: try again
    sys.exit(0 if held == rounds else 3)
""")


def test_removing_the_lock_opens_no_race_between_real_processes(tmp_path: Path) -> None:
    """Processes take the lock in a loop; each removes the file as it lets go, so others
    often hold a handle on a file that no longer has the name. Two holders at once would
    collide on the exclusive marker file."""
    final, inside = tmp_path / "out" / "x86-cpu", tmp_path / "inside"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(final), str(inside), "40"],
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    try:
        results = [(p.wait(timeout=180), p.communicate()[1]) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(code == 0 for code, _ in results), results
    assert not inside.exists() and not (final.parent / ".cache").exists()
