"""Budgets: parsing, evaluation against a report, JUnit output and `edgekd check` exit codes."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.errors import UsageError
from edgekd.measure.payoff import flags, payoff, speedup_of
from edgekd.report.gate import budget_checks, junit_xml
from edgekd.settings.budgets import Budget, parse_budget


def _lat(p50: float, half: float = 0.01) -> dict:
    return {"p50": p50, "p90": p50 * 1.1, "p95": p50 * 1.2, "p99": p50 * 1.5, "mean": p50,
            "std": 0.1, "min": p50 * 0.9, "max": p50 * 2, "p50_ci95": [p50 - half, p50 + half]}


def _art(path: str, runtime: str, precision: str, p50: float, size: int, acc: float,
         **extra: object) -> dict:
    return {"path": path, "runtime": runtime, "precision": precision, "size_bytes": size,
            "size_gzip_bytes": size // 2, "accuracy": acc, "latency_ms": _lat(p50),
            "memory": {"peak_rss_mb": 50.0, "model_rss_mb": 15.0, "baseline_rss_mb": 33.0},
            **extra}


REPORT = {
    "stages": [{"name": "teacher", "accuracy": 0.99}],
    "artifacts": [
        _art("m_fp32.onnx", "onnxruntime", "fp32", 2.0, 4000 * 1024, 0.985),
        _art("m_int8.onnx", "onnxruntime", "int8", 1.0, 1000 * 1024, 0.98,
             remote=[{"remote": "pi@pi5", "latency_ms": _lat(8.0),
                      "memory": {"peak_rss_mb": 70.0}}]),
    ],
}


def test_parse_budget_rejects_unknown_keys_and_bad_values() -> None:
    assert parse_budget({"max_size_kb": 10}, "t").max_size_kb == 10.0
    with pytest.raises(UsageError,
                       match="t: unknown key 'budget.max_latency'; allowed: .*max_p95_ms"):
        parse_budget({"max_latency": 1}, "t")
    with pytest.raises(UsageError,
                       match=r"t: budget.max_p95_ms: expected a number, got 'fast' \(str\)"):
        parse_budget({"max_p95_ms": "fast"}, "t")
    with pytest.raises(UsageError, match=">= 0"):
        parse_budget({"max_p95_ms": -1}, "t")


def test_evaluate_covers_shipped_artifacts_and_every_device() -> None:
    budget = Budget(max_size_kb=1500, max_p95_ms=5, max_peak_rss_mb=60,
                    max_accuracy_drop=0.5, min_int8_speedup=1.5)
    checks = {(c.budget, c.subject): c for c in budget_checks(REPORT, budget)}
    assert ("max_size_kb", "m_fp32.onnx") not in checks  # FP32 is a reference, not shipped
    assert checks[("max_size_kb", "m_int8.onnx")].ok
    assert checks[("max_p95_ms", "m_int8.onnx")].ok
    assert not checks[("max_p95_ms", "m_int8.onnx @ pi@pi5")].ok  # 9.6 ms on the device
    assert not checks[("max_peak_rss_mb", "m_int8.onnx @ pi@pi5")].ok
    drop = checks[("max_accuracy_drop", "m_int8.onnx")]
    assert drop.measured == pytest.approx(1.0) and not drop.ok and drop.margin < 0
    speed = checks[("min_int8_speedup", "m_int8.onnx")]
    assert speed.measured == pytest.approx(2.0) and speed.ok and speed.margin == pytest.approx(0.5)


def test_a_build_report_checks_accuracy_and_what_ships() -> None:
    """Every build report has a "bench" section (its benchmark settings): the accuracy budget
    is still checked (only an edgekd bench result has no accuracy). Where the ship policy
    marked what ships, that artifact is checked, FP32 included."""
    report = {**REPORT, "bench": {"warmup": 50, "runs": 300, "threads": 2},
              "artifacts": [{**REPORT["artifacts"][0], "shipped": True},
                            {**REPORT["artifacts"][1], "shipped": False}]}
    checks = {(c.budget, c.subject): c
              for c in budget_checks(report, Budget(max_size_kb=5000, max_accuracy_drop=2.0))}
    assert set(checks) == {("max_size_kb", "m_fp32.onnx"), ("max_accuracy_drop", "m_fp32.onnx")}
    assert checks[("max_accuracy_drop", "m_fp32.onnx")].measured == pytest.approx(0.5)
    notes: list[str] = []
    bench = {"artifacts": REPORT["artifacts"], "from_bench": True}
    assert not [c for c in budget_checks(bench, Budget(max_accuracy_drop=2.0), notes=notes)
                if c.budget == "max_accuracy_drop"] and "max_accuracy_drop skipped" in notes[0]


def test_junit_lists_every_check_and_failures() -> None:
    checks = budget_checks(REPORT, Budget(max_size_kb=1, max_p95_ms=100))
    root = ET.fromstring(junit_xml(checks, "b.toml"))
    cases = root.findall(".//testcase")
    assert len(cases) == len(checks) == 3
    assert root.get("failures") == "1"
    assert cases[0].find("failure") is not None


@pytest.fixture
def report_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**REPORT, "budget": {"source": "target t",
                                                     "limits": {"max_size_kb": 2000}}}))
    return path


def test_check_exit_codes(report_file: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    tight, loose = tmp_path / "tight.toml", tmp_path / "loose.toml"
    tight.write_text("[budget]\nmax_size_kb = 100\nmax_p95_ms = 0.5\n")
    loose.write_text("[budget]\nmax_size_kb = 4096\nmax_p95_ms = 50\nmin_int8_speedup = 1.2\n")
    junit = tmp_path / "j.xml"
    res = runner.invoke(app, ["check", str(report_file), "--budget", str(tight),
                              "--junit", str(junit)])
    assert res.exit_code == 1 and "BROKEN" in res.output
    assert ET.parse(junit).getroot().get("failures") == "3"
    res = runner.invoke(app, ["check", str(report_file), "--budget", str(loose)])
    assert res.exit_code == 0 and "all 4 budgets hold" in res.output
    res = runner.invoke(app, ["check", str(report_file)])  # the budget recorded in the report
    assert res.exit_code == 0
    for args, message in [
        (["check", str(tmp_path / "nope.json")], "report not found"),
        (["check", str(report_file), "--budget", str(tmp_path / "nope.toml")],
         "budget file not found"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2 and message in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text("[budget]\nmax_p95 = 1\n")
    res = runner.invoke(app, ["check", str(report_file), "--budget", str(bad)])
    assert res.exit_code == 2 and "unknown key 'budget.max_p95'" in res.output
    nobudget = tmp_path / "r2.json"
    nobudget.write_text(json.dumps(REPORT))
    res = runner.invoke(app, ["check", str(nobudget)])
    assert res.exit_code == 2 and "[budget]" in res.output


def test_compare_needs_separated_intervals_and_a_real_difference() -> None:
    base = {"latency_ms": _lat(1.0, 0.01)}
    assert speedup_of(base, {"latency_ms": _lat(0.5, 0.01)}) == (2.0, "faster")
    assert speedup_of(base, {"latency_ms": _lat(2.0, 0.01)})[1] == "slower"
    assert speedup_of(base, {"latency_ms": _lat(0.9, 0.2)})[1] == "no measurable change"
    assert speedup_of(base, {"latency_ms": _lat(0.98, 0.001)})[1] == "no measurable change"


def test_payoff_flags_a_slower_int8_and_ops_off_target() -> None:
    arts = [_art("a_fp32.tflite", "tflite", "fp32", 1.0, 400, 0.9),
            _art("a_int8.tflite", "tflite", "int8", 2.0, 100, 0.9, placement={
                "not_as_intended": [{"node": "n", "op": "TRANSPOSE",
                                     "ran": "builtin kernel (not XNNPACK)"}]})]
    rows = payoff(arts, [_art("dense_fp32.tflite", "tflite", "fp32", 1.0, 400, 0.9)])
    by = {r["step"]: r for r in rows}
    assert by["int8"]["verdict"] == "slower" and by["int8"]["speedup"] == 0.5
    assert by["pruning"]["verdict"] == "no measurable change"
    assert "compressed size only" in by["pruning"]["detail"]
    out = flags(rows, arts)
    assert out[0].startswith("SLOWER: INT8 vs FP32 on tflite: 2.00× slower")
    assert "TRANSPOSE" in out[1]


def _on_a_pi_target(report: dict) -> dict:
    """REPORT as a build for the Raspberry Pi on an x86_64 host records it."""
    return {**report, "target": "raspberrypi",
            "host": {"machine": "x86_64", "cpus": 2, "processor": "x86_64"}}


def test_every_check_says_where_it_was_measured() -> None:
    budget = Budget(max_size_kb=1500, max_p95_ms=5, max_accuracy_drop=2, min_int8_speedup=1.5)
    checks = {(c.budget, c.subject): c for c in budget_checks(REPORT, budget)}
    assert checks[("max_size_kb", "m_int8.onnx")].measured_on == "any machine"
    assert checks[("max_accuracy_drop", "m_int8.onnx")].measured_on == "any machine"
    # No target in the report (a trimmed one): its figures count where they were measured.
    assert checks[("max_p95_ms", "m_int8.onnx")].measured_on == "bench host"
    assert checks[("max_p95_ms", "m_int8.onnx @ pi@pi5")].measured_on == "pi@pi5"
    assert all(c.on_target for c in checks.values())
    assert {"measured_on", "on_target"} <= set(checks[("max_size_kb", "m_int8.onnx")].to_dict())


def test_a_pi_target_keeps_only_the_devices_latency() -> None:
    """The device's figures (its architecture unknown: it was named with --remote) replace
    the x86 host's for a Pi target; size and accuracy stay."""
    budget = Budget(max_size_kb=1500, max_p95_ms=50, max_peak_rss_mb=100, min_int8_speedup=0.1)
    checks = {(c.budget, c.subject): c for c in budget_checks(_on_a_pi_target(REPORT), budget)}
    assert set(checks) == {("max_size_kb", "m_int8.onnx"), ("max_p95_ms", "m_int8.onnx @ pi@pi5"),
                           ("max_peak_rss_mb", "m_int8.onnx @ pi@pi5")}
    # min_int8_speedup: the FP32 reference was not measured on the device, so there is no
    # pair on the device; the host's pair is left out with the host's figures.
    assert all(c.on_target for c in checks.values())


def test_junit_skips_what_was_not_measured_on_the_target() -> None:
    report = _on_a_pi_target({**REPORT, "artifacts": [
        {k: v for k, v in a.items() if k != "remote"} for a in REPORT["artifacts"]]})
    checks = budget_checks(report, Budget(max_size_kb=1, max_p95_ms=100, min_int8_speedup=1))
    assert [c.state for c in checks] == ["broken", "not measured on the target",
                                         "not measured on the target"]
    root = ET.fromstring(junit_xml(checks, "b.toml"))
    suite = root.find("testsuite")
    assert suite is not None
    assert (suite.get("failures"), suite.get("skipped")) == ("1", "2")
    assert len(root.findall(".//testcase/skipped")) == 2
    root = ET.fromstring(junit_xml(checks, "b.toml", require_device=True))
    assert (root.get("failures"), root.get("skipped")) == ("3", "0")
    assert len(root.findall(".//failure[@type='NotMeasuredOnTarget']")) == 2


def test_check_require_device_exit_codes(tmp_path: Path) -> None:
    report = _on_a_pi_target({**REPORT, "artifacts": [
        {k: v for k, v in a.items() if k != "remote"} for a in REPORT["artifacts"]]})
    path = tmp_path / "report.json"
    path.write_text(json.dumps({**report, "budget": {"source": "target raspberrypi",
                                                     "limits": {"max_p95_ms": 50.0}}}))
    runner = CliRunner()
    res = runner.invoke(app, ["check", str(path)], terminal_width=200)
    assert res.exit_code == 0 and "not on target" in res.output, res.output
    res = runner.invoke(app, ["check", str(path), "--require-device"], terminal_width=200)
    assert res.exit_code == 1 and "NOT ON TARGET" in res.output, res.output
    res = runner.invoke(app, ["check", str(tmp_path)], terminal_width=200)  # the folder
    assert res.exit_code == 0, res.output


def test_help_shows_brackets_literally() -> None:
    """`[budget]` in a help string was eaten as rich markup ("a  table")."""
    runner = CliRunner()
    for command in ("build", "check", "bench", "init", "targets"):
        res = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert res.exit_code == 0, res.output
        if command in ("build", "check"):
            assert "TOML file with a [budget] table" in res.output, res.output
        assert "a  table" not in res.output
