"""The CI gate: a report (or an ``edgekd bench --json`` file) checked against a budget, as
checks with margins and as JUnit XML. Torch-free: ``edgekd check`` runs in any CI job.

A file that is not a well-formed report is refused on load (:func:`load_report`) with one
line naming the file and the first bad field, before any check reads it."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import UsageError
from edgekd.report.schema import validate, validate_report
from edgekd.settings.budgets import UNITS, Budget
from edgekd.settings.resources import read_text_file


@dataclass(frozen=True)
class Check:
    budget: str
    subject: str
    measured: float
    limit: float

    @property
    def at_limit(self) -> bool:
        """Equal to the limit but for float noise: ``100 * (0.99 - 0.97)`` is
        2.0000000000000004 points, and a budget of 2.0 points holds there."""
        return math.isclose(self.measured, self.limit, rel_tol=1e-9, abs_tol=1e-9)

    @property
    def ok(self) -> bool:
        if self.at_limit:
            return True
        if self.budget.startswith("min_"):
            return self.measured >= self.limit
        return self.measured <= self.limit

    @property
    def margin(self) -> float:
        """How far inside the budget (negative: how far over); 0 at the limit."""
        if self.at_limit:
            return 0.0
        return (self.measured - self.limit if self.budget.startswith("min_")
                else self.limit - self.measured)

    def to_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "subject": self.subject,
                "measured": round(self.measured, 4), "limit": self.limit,
                "margin": round(self.margin, 4), "ok": self.ok, "unit": UNITS[self.budget]}


def _measurements(artifact: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, bench result) for the host measurement and every remote device."""
    found = [("", artifact)] if "latency_ms" in artifact else []
    found += [(f" @ {r['remote']}", r) for r in artifact.get("remote", [])]
    return found


def budget_checks(report: Mapping[str, Any], budget: Budget) -> list[Check]:
    """Every budget against every shipped artifact (see the module docstring)."""
    artifacts = report.get("artifacts", [])
    shipped = [a for a in artifacts if a.get("precision", "int8") != "fp32"]
    if not shipped:
        raise UsageError("the report lists no quantized artifact to check")
    # Accuracy is lost against the teacher; a finished model (no teacher) against itself:
    # its PyTorch accuracy, else its FP32 artifact's. Models that are not classifiers have no
    # accuracy: the build held their artifacts to min_cosine instead.
    stages = {s["name"]: s.get("accuracy") for s in report.get("stages", [])}
    teacher = stages.get("teacher", stages.get("student"))
    accuracy_budget = report.get("task", "classification") == "classification"
    checks = []
    for a in shipped:
        name = a["path"]
        if budget.max_size_kb is not None:
            checks.append(Check("max_size_kb", name, a["size_bytes"] / 1024,
                                budget.max_size_kb))
        for where, m in _measurements(a):
            if budget.max_p95_ms is not None:
                checks.append(Check("max_p95_ms", name + where, m["latency_ms"]["p95"],
                                    budget.max_p95_ms))
            if budget.max_peak_rss_mb is not None:
                checks.append(Check("max_peak_rss_mb", name + where,
                                    m["memory"]["peak_rss_mb"], budget.max_peak_rss_mb))
        if budget.max_accuracy_drop is not None and accuracy_budget:
            reference = teacher if teacher is not None else next(
                (f.get("accuracy") for f in artifacts if f.get("runtime") == a.get("runtime")
                 and f.get("precision") == "fp32"), None)
            if reference is None or a.get("accuracy") is None:
                raise UsageError(f"max_accuracy_drop needs the teacher's and {name}'s "
                                 "accuracy: check a build report, not a bench result")
            checks.append(Check("max_accuracy_drop", name, 100 * (reference - a["accuracy"]),
                                budget.max_accuracy_drop))
    if budget.min_int8_speedup is not None:
        for a in [a for a in shipped if a.get("precision") == "int8"]:
            ref = next((f for f in artifacts if f.get("runtime") == a.get("runtime")
                        and f.get("precision") == "fp32"), None)
            if ref is None:
                raise UsageError(f"min_int8_speedup needs an FP32 artifact in {a['runtime']} "
                                 f"beside {a['path']}")
            pairs = [("", ref, a)] + [
                (f" @ {r['remote']}", rr, r) for r in a.get("remote", [])
                for rr in ref.get("remote", []) if rr["remote"] == r["remote"]]
            for where, fp32, int8 in pairs:
                if int8["latency_ms"]["p50"] <= 0:
                    raise UsageError(f"min_int8_speedup: {a['path']}{where} has a p50 latency "
                                     "of 0 ms, so no speed-up can be computed; measure it "
                                     "again (edgekd bench)")
                checks.append(Check("min_int8_speedup", f"{a['path']}{where}",
                                    fp32["latency_ms"]["p50"] / int8["latency_ms"]["p50"],
                                    budget.min_int8_speedup))
    return checks


# What budget_checks reads, as JSON Schema: reports that carry no schema_version (written
# before report schema 1.0, or trimmed by hand) and ``edgekd bench --json`` entries are held
# to this; a report with a schema_version to the whole report.schema.json.
_NUMBER = {"type": "number"}
_MEASURED = {
    "latency_ms": {"type": "object", "required": ["p50", "p95", "p50_ci95"],
                   "properties": {"p50": {"type": "number", "minimum": 0}, "p95": _NUMBER,
                                  "p50_ci95": {"type": "array", "items": _NUMBER,
                                               "minItems": 2, "maxItems": 2}}},
    "memory": {"type": "object", "required": ["peak_rss_mb"],
               "properties": {"peak_rss_mb": _NUMBER}},
}
_REMOTE = {"type": "object", "required": ["remote", "latency_ms", "memory"],
           "properties": {"remote": {"type": "string"}, **_MEASURED}}
_OLDER_REPORT = {"type": "object", "required": ["artifacts"], "properties": {
    "artifacts": {"type": "array", "items": {
        "type": "object", "required": ["path", "size_bytes", "latency_ms", "memory"],
        "properties": {"path": {"type": "string", "minLength": 1}, "runtime": {"type": "string"},
                       "precision": {"type": "string"}, "size_bytes": {"type": "integer"},
                       "accuracy": {"type": ["number", "null"]}, **_MEASURED,
                       "remote": {"type": "array", "items": _REMOTE}}}},
    "stages": {"type": "array", "items": {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}, "accuracy": {"type": ["number", "null"]}}}},
    "task": {"type": "string"},
    "budget": {"type": "object", "properties": {
        "source": {"type": "string"},
        "limits": {"type": "object", "additionalProperties": _NUMBER}}}}}
_BENCH_FILE = {"type": "object", "required": ["benchmarks"], "properties": {
    "benchmarks": {"type": "array", "items": {
        "type": "object", "required": ["artifact", "runtime", "file_size_bytes", "latency_ms",
                                       "memory"],
        "properties": {"artifact": {"type": "string", "minLength": 1},
                       "runtime": {"type": "string"}, "file_size_bytes": {"type": "integer"},
                       "placement": {"type": "object"}, "remote": {"type": ["string", "null"]},
                       **_MEASURED}}}}}


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number (edgekd writes null there)")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a number")
    return value


def _read(path: Path) -> Any:
    """The JSON in ``path``: strict JSON (no NaN or Infinity, which a report never holds)."""
    try:
        text = read_text_file(path)
    except FileNotFoundError as exc:
        raise UsageError(f"{path}: report not found; run edgekd build (it writes "
                         "OUT/<target>/report.json) or edgekd bench --json FILE") from exc
    except ValueError as exc:
        raise UsageError(f"{path} {exc}: give the report.json of a build or an edgekd bench "
                         "--json file") from exc
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not a readable JSON report ({exc})") from exc
    except ValueError as exc:
        raise UsageError(f"{path}: not a valid edgekd report: {exc}") from exc
    except RecursionError as exc:  # the C parser recurses per nesting level
        raise UsageError(f"{path}: not an edgekd report (JSON nested too deeply)") from exc


def _why_null(problem: str, data: dict[str, Any]) -> str:
    """The writer's reason when the bad field is a null it listed in ``nulls``."""
    notes = data.get("nulls")
    if not isinstance(notes, list):
        notes = []
    why = next((n.get("why") for n in notes if isinstance(n, dict)
                and problem.startswith(f"{n.get('field')}: ")), None)
    return f" (written as null: {why})" if why else ""


def _require(problems: list[str], path: Path, data: dict[str, Any], what: str) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise UsageError(f"{path}: not a valid {what}: {problems[0]}"
                         f"{_why_null(problems[0], data)}{more}")


def load_report(path: Path) -> dict[str, Any]:
    """A build's report.json, or an ``edgekd bench --json`` file seen as one; anything
    malformed is one :class:`UsageError` naming the file and the first bad field."""
    data = _read(path)
    if isinstance(data, dict) and "artifacts" in data:
        problems = (validate_report(data) if "schema_version" in data
                    else validate(data, _OLDER_REPORT))
        _require(problems, path, data, "edgekd report")
        return data
    if isinstance(data, dict) and "benchmarks" in data:
        _require(validate(data, _BENCH_FILE), path, data, "edgekd bench --json file")
        return {"artifacts": [
            {**b, "path": b["artifact"], "size_bytes": b["file_size_bytes"],
             "precision": "int8" if (b.get("placement") or {}).get("quantized") else "fp32"}
            for b in data["benchmarks"] if not b.get("remote")]}
    raise UsageError(f"{path}: not an edgekd report (no 'artifacts' or 'benchmarks')")


def junit_xml(checks: list[Check], source: str) -> str:
    """JUnit XML: one test case per budget and subject, for CI test-report views."""
    failures = sum(not c.ok for c in checks)
    suite = ET.Element("testsuite", name="edgekd budgets", tests=str(len(checks)),
                       failures=str(failures), errors="0", skipped="0")
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"edgekd.settings.budgets.{c.budget}",
                             name=c.subject, time="0")
        text = (f"{c.budget}: measured {c.measured:.4g} {UNITS[c.budget]}, limit {c.limit:g} "
                f"{UNITS[c.budget]}, margin {c.margin:+.4g} ({source})")
        if c.ok:
            ET.SubElement(case, "system-out").text = text
        else:
            ET.SubElement(case, "failure", message=text, type="BudgetExceeded").text = text
    suites = ET.Element("testsuites", tests=str(len(checks)), failures=str(failures))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")
