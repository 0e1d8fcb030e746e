"""What ``edgekd check`` reads: a build's ``report.json`` (or its folder), or an ``edgekd bench
--json`` file, refused on load with one line naming the file and the first bad field before
any check reads it (:func:`load_report`). Strict JSON: a NaN or an infinity is refused by
name. Torch-free."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from edgekd.errors import UsageError
from edgekd.report.schema import validate, validate_report
from edgekd.settings.resources import read_text_file
from edgekd.settings.targets import load_target

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
                       **_MEASURED}}},
    "target": {"type": "string", "minLength": 1}}}


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


def _bench_as_report(benchmarks: list[dict[str, Any]], target: str | None = None
                     ) -> dict[str, Any]:
    """An ``edgekd bench --json`` file as a report: one artifact per file, measured here
    and/or on each ``--remote`` device (its ``remote`` list, as a build records it). With
    the ``target`` ``edgekd bench --target`` recorded, that target's budget and machine."""
    artifacts: dict[str, dict[str, Any]] = {}
    for b in benchmarks:
        a = artifacts.setdefault(b["artifact"], {
            "path": b["artifact"], "size_bytes": b["file_size_bytes"],
            "precision": "int8" if (b.get("placement") or {}).get("quantized") else "fp32"})
        if b.get("remote"):
            a.setdefault("remote", []).append(b)
        else:
            a.update(b)
    report: dict[str, Any] = {"artifacts": list(artifacts.values()), "from_bench": True}
    if target is not None:
        report["target"] = target
        try:
            limits = load_target(target).budget.to_dict()
        except UsageError:  # a target this edgekd does not ship: --budget FILE is needed
            limits = {}
        report["budget"] = {"source": f"target {target}", "limits": limits}
    return report


def load_report(path: Path) -> dict[str, Any]:
    """A build's report.json, or an ``edgekd bench --json`` file seen as one; anything
    malformed is one :class:`UsageError` naming the file and the first bad field. A build
    folder (``OUT/<target>``) stands for the report.json in it."""
    if path.is_dir():
        if not (path / "report.json").is_file():
            builds = sorted(str(p.parent) for p in path.glob("*/report.json"))[:4]
            hint = f" (builds in it: {', '.join(builds)})" if builds else ""
            raise UsageError(f"{path} is a folder without a report.json: give a build folder "
                             "(OUT/<target>), its report.json or an edgekd bench --json file"
                             f"{hint}")
        path = path / "report.json"
    data = _read(path)
    if isinstance(data, dict) and "artifacts" in data:
        problems = (validate_report(data) if "schema_version" in data
                    else validate(data, _OLDER_REPORT))
        _require(problems, path, data, "edgekd report")
        return data
    if isinstance(data, dict) and "benchmarks" in data:
        _require(validate(data, _BENCH_FILE), path, data, "edgekd bench --json file")
        return _bench_as_report(data["benchmarks"], data.get("target"))
    raise UsageError(f"{path}: not an edgekd report (no 'artifacts' or 'benchmarks')")
