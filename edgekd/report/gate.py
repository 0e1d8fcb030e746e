"""The CI gate: a report (or an ``edgekd bench --json`` file) checked against a budget, as
checks with margins and as JUnit XML. Torch-free: ``edgekd check`` runs in any CI job.

Each check says which machine its figure was measured on. Latency, memory and speed-up of a
target that is a device of its own architecture (``machine`` in the target file: a Raspberry
Pi, a Jetson) count only when a machine of that architecture measured them (a ``--remote``
device, or the build host when it is one); measured elsewhere they are "not measured on the
target": neither held nor broken, a failure only with ``--require-device``. Size and
accuracy hold on any machine.

The file it checks is read by :func:`edgekd.report.reading.load_report`."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgekd.errors import UsageError
from edgekd.measure.headline import machine_of as _machine_of
from edgekd.settings.budgets import UNITS, Budget
from edgekd.settings.targets import canonical_machine, load_target

ANY_MACHINE = "any machine"


@dataclass(frozen=True)
class Check:
    """One budget against one figure. ``measured_on`` names the machine the figure comes
    from; ``on_target`` is False when that machine is not the target's (latency measured on
    an x86 build host for a Raspberry Pi): such a check neither holds nor breaks, it is
    "not measured on the target" (:attr:`state`)."""

    budget: str
    subject: str
    measured: float
    limit: float
    measured_on: str = ANY_MACHINE
    on_target: bool = True

    @property
    def at_limit(self) -> bool:
        """Equal to the limit but for float noise: ``100 * (0.99 - 0.97)`` is
        2.0000000000000004 points, and a budget of 2.0 points holds there."""
        return math.isclose(self.measured, self.limit, rel_tol=1e-9, abs_tol=1e-9)

    @property
    def ok(self) -> bool:
        """The figure is within the limit (wherever it was measured)."""
        if self.at_limit:
            return True
        if self.budget.startswith("min_"):
            return self.measured >= self.limit
        return self.measured <= self.limit

    @property
    def state(self) -> str:
        return check_state(self.to_dict())

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
                "margin": round(self.margin, 4), "ok": self.ok, "unit": UNITS[self.budget],
                "measured_on": self.measured_on, "on_target": self.on_target}


# -- where a figure was measured ---------------------------------------------------------------

HELD, BROKEN, OFF_TARGET = "holds", "broken", "not measured on the target"


def check_state(check: Mapping[str, Any]) -> str:
    """:data:`HELD`, :data:`BROKEN` or :data:`OFF_TARGET` for a check as report.json holds
    it (a check written before 1.1 has no ``on_target``: it was on target)."""
    if check.get("on_target", True) is False:
        return OFF_TARGET
    return HELD if check.get("ok") else BROKEN


def target_machine(report: Mapping[str, Any]) -> str:
    """The architecture of the report's target ("" when it runs where it is built, or is
    unknown): recorded in the budget section, else the shipped target file's."""
    recorded = report.get("budget")
    if isinstance(recorded, Mapping) and isinstance(recorded.get("target_machine"), str):
        return canonical_machine(recorded["target_machine"])
    name = report.get("target")
    if not isinstance(name, str):
        return ""  # an edgekd bench --json file: measured where the user chose to
    try:
        return load_target(name).machine
    except UsageError:  # a target this edgekd does not ship
        return ""


@dataclass(frozen=True)
class _Where:
    """One measurement of an artifact: the subject suffix, the machine, on target or not."""

    suffix: str
    measured_on: str
    on_target: bool
    result: Mapping[str, Any]


def _measurements(report: Mapping[str, Any], artifact: Mapping[str, Any], machine: str
                  ) -> list[_Where]:
    """Every measurement of ``artifact`` that speaks for the target: each ``--remote``
    device's and the build host's. When the target is a device of another architecture
    than the host and a device of its own measured the artifact, the host's figures are
    left out (the device's decide); with no such device they stay, not on the target."""
    host = report.get("host")
    who, fallback = (("build host", str(host.get("machine") or ""))
                     if isinstance(host, Mapping) else ("bench host", ""))
    found = []
    if "latency_ms" in artifact:
        arch, text = _machine_of(artifact.get("device"), fallback)
        found.append(_Where("", f"{who} ({text})" if text else who,
                            not machine or not arch or arch == machine, artifact))
    for r in artifact.get("remote", []):
        arch, text = _machine_of(r.get("device"), "")
        found.append(_Where(f" @ {r['remote']}",
                            f"{r['remote']} ({text})" if text else str(r["remote"]),
                            not machine or not arch or arch == machine, r))
    if any(w.on_target and w.suffix for w in found):
        found = [w for w in found if w.on_target or w.suffix]
    return found


def budget_checks(report: Mapping[str, Any], budget: Budget, *, machine: str | None = None,
                  notes: list[str] | None = None) -> list[Check]:
    """Every budget against every shipped artifact (see the module docstring). Latency,
    memory and speed-up are checked per measurement and say which machine measured them
    (:class:`Check` ``measured_on`` / ``on_target``); size and accuracy hold on any.
    ``machine``: the target's architecture (default: :func:`target_machine`). An ``edgekd
    bench`` result measures no accuracy: its accuracy budget is skipped, and ``notes`` (when
    given) says so."""
    artifacts = report.get("artifacts", [])
    # What ships: the artifacts the ship policy marked (edgekd.pipeline.choosing), else (an
    # older report, an edgekd bench result) every quantized one.
    shipped = ([a for a in artifacts if a.get("shipped")] if any("shipped" in a for a in artifacts)
               else [a for a in artifacts if a.get("precision", "int8") != "fp32"])
    if not shipped:
        raise UsageError("the report lists no quantized artifact to check")
    machine = target_machine(report) if machine is None else canonical_machine(machine)
    # Accuracy is lost against the teacher; a finished model (no teacher) against itself:
    # its PyTorch accuracy, else its FP32 artifact's. Models that are not classifiers have no
    # accuracy: the build held their artifacts to min_cosine instead.
    stages = {s["name"]: s.get("accuracy") for s in report.get("stages", [])}
    teacher = stages.get("teacher", stages.get("student"))
    accuracy_budget = report.get("task", "classification") == "classification"
    # An edgekd bench result (report.reading marks it) has no accuracy; a build report's
    # "bench" section is its benchmark settings, which every build has.
    if report.get("from_bench") and budget.max_accuracy_drop is not None:
        accuracy_budget = False
        if notes is not None:
            notes.append("max_accuracy_drop skipped: accuracy is not measured by edgekd bench "
                         "(check the build's report.json for it)")
    checks = []
    for a in shipped:
        name = a["path"]
        if budget.max_size_kb is not None:
            checks.append(Check("max_size_kb", name, a["size_bytes"] / 1024,
                                budget.max_size_kb))
        for w in _measurements(report, a, machine):
            if budget.max_p95_ms is not None:
                checks.append(Check("max_p95_ms", name + w.suffix, w.result["latency_ms"]["p95"],
                                    budget.max_p95_ms, w.measured_on, w.on_target))
            if budget.max_peak_rss_mb is not None:
                checks.append(Check("max_peak_rss_mb", name + w.suffix,
                                    w.result["memory"]["peak_rss_mb"], budget.max_peak_rss_mb,
                                    w.measured_on, w.on_target))
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
        checks += _speedups(report, artifacts, shipped, budget.min_int8_speedup, machine)
    if budget.min_speedup_vs_teacher is not None:
        checks += _vs_teacher(report, artifacts, budget.min_speedup_vs_teacher, machine)
    return checks


def _vs_teacher(report: Mapping[str, Any], artifacts: list[dict[str, Any]], limit: float,
                machine: str) -> list[Check]:
    """Each headline row's speed-up (teacher FP32 p50 / deployed student p50, same runtime
    and machine), where the student's measurement speaks for the target (as the latency
    budgets: :func:`_measurements`)."""
    top = report.get("headline")
    if not isinstance(top, Mapping) or not top.get("rows"):
        raise UsageError("min_speedup_vs_teacher needs the teacher measured beside the "
                         "student (report.json's headline): check the report of a build with "
                         "a teacher, or remove the key from the budget")
    by_path = {a.get("path"): a for a in artifacts}
    checks = []
    for row in top["rows"]:
        student = by_path.get(row["student"])
        if student is None or row.get("speedup_p50") is None:
            continue
        suffix = "" if row["where"] == "host" else f" @ {row['where']}"
        w = next((w for w in _measurements(report, student, machine) if w.suffix == suffix),
                 None)
        if w is not None:
            checks.append(Check("min_speedup_vs_teacher",
                                f"{row['student']} vs {row['teacher']}{suffix}",
                                row["speedup_p50"], limit, w.measured_on, w.on_target))
    return checks


def _speedups(report: Mapping[str, Any], artifacts: list[dict[str, Any]],
              shipped: list[dict[str, Any]], limit: float, machine: str) -> list[Check]:
    """FP32 p50 / INT8 p50 on the same runtime and the same machine."""
    checks = []
    for a in [a for a in shipped if a.get("precision") == "int8"]:
        ref = next((f for f in artifacts if f.get("runtime") == a.get("runtime")
                    and f.get("precision") == "fp32"), None)
        if ref is None:
            raise UsageError(f"min_int8_speedup needs an FP32 artifact in {a['runtime']} "
                             f"beside {a['path']}")
        refs = {w.suffix: w.result for w in _measurements(report, ref, machine)}
        for w in _measurements(report, a, machine):
            fp32 = refs.get(w.suffix)
            if fp32 is None:
                continue
            if w.result["latency_ms"]["p50"] <= 0:
                raise UsageError(f"min_int8_speedup: {a['path']}{w.suffix} has a p50 latency "
                                 "of 0 ms, so no speed-up can be computed; measure it "
                                 "again (edgekd bench)")
            checks.append(Check("min_int8_speedup", f"{a['path']}{w.suffix}",
                                fp32["latency_ms"]["p50"] / w.result["latency_ms"]["p50"],
                                limit, w.measured_on, w.on_target))
    return checks


def verdict(checks: Sequence[Mapping[str, Any]], require_device: bool = False) -> str:
    """The one-line verdict: how many hold, are broken, were not measured on the target
    (and where they were measured, and what to do about it)."""
    states = [check_state(c) for c in checks]
    held, broken, off = (states.count(s) for s in (HELD, BROKEN, OFF_TARGET))
    if not off:
        return (f"{broken} of {len(checks)} budgets broken" if broken
                else f"all {len(checks)} budgets hold")
    where = sorted({str(c.get("measured_on")) for c, s in zip(checks, states, strict=True)
                    if s == OFF_TARGET})
    parts = [f"{broken} broken" if broken else "", f"{held} hold" if held else ""]
    head = ", ".join(p for p in parts if p)
    head = f"{head}, " if head else ""
    then = ("--require-device makes them fail" if not require_device
            else "--require-device: they fail")
    return (f"{head}{off} not measured on the target, only on {'; '.join(where)}: run with "
            f"--remote user@device to measure them there; {then}")


def gate_fails(checks: Sequence[Mapping[str, Any]], require_device: bool = False) -> bool:
    """The exit status of the gate: a broken budget fails it; a check not measured on the
    target fails it only with ``require_device``."""
    states = {check_state(c) for c in checks}
    return BROKEN in states or (require_device and OFF_TARGET in states)


def junit_xml(checks: list[Check], source: str, require_device: bool = False) -> str:
    """JUnit XML: one test case per budget and subject, for CI test-report views. A check
    not measured on the target is skipped, or a failure with ``require_device``."""
    states = [c.state for c in checks]
    failures = states.count(BROKEN) + (states.count(OFF_TARGET) if require_device else 0)
    skipped = 0 if require_device else states.count(OFF_TARGET)
    suite = ET.Element("testsuite", name="edgekd budgets", tests=str(len(checks)),
                       failures=str(failures), errors="0", skipped=str(skipped))
    for c, state in zip(checks, states, strict=True):
        case = ET.SubElement(suite, "testcase", classname=f"edgekd.settings.budgets.{c.budget}",
                             name=c.subject, time="0")
        text = (f"{c.budget}: measured {c.measured:.4g} {UNITS[c.budget]} on {c.measured_on}, "
                f"limit {c.limit:g} {UNITS[c.budget]}, margin {c.margin:+.4g} ({source})")
        if state == HELD:
            ET.SubElement(case, "system-out").text = text
        elif state == BROKEN:
            ET.SubElement(case, "failure", message=text, type="BudgetExceeded").text = text
        else:
            why = (f"not measured on the target: {text}; run with --remote user@device to "
                   "measure it there")
            if require_device:
                ET.SubElement(case, "failure", message=why,
                              type="NotMeasuredOnTarget").text = why
            else:
                ET.SubElement(case, "skipped", message=why)
    suites = ET.Element("testsuites", tests=str(len(checks)), failures=str(failures),
                        skipped=str(skipped))
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")
