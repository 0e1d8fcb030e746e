"""The headline of a build: what the whole of it bought. Per runtime and machine (the build
host and each ``--remote`` device), the *deployed* student artifact against the teacher's
FP32 artifact in the same runtime: accuracy difference, size ratio, p50 speed-up, peak and
model RSS ratios. The three figures the distillation literature reports (compression,
speed-up, accuracy), measured in the runtime that ships rather than counted in parameters.

Pure functions on report entries (``report.json``'s ``artifacts``, ``references`` and
``payoff``), no printing. On the host the speed-up is the paired comparison's
(:func:`edgekd.measure.payoff.paired_speedup`, a 95 % interval over alternating rounds);
on a remote device, the two separate benchmarks' medians.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekd.measure.payoff import SEPARATE, deployed, reference
from edgekd.settings.targets import canonical_machine


def machine_of(device: Any, fallback: str) -> tuple[str, str]:
    """(architecture, "architecture, board or CPU") of a bench result's ``device``."""
    device = device if isinstance(device, Mapping) else {}
    machine = str(device.get("machine") or fallback or "")
    board = str(device.get("model") or device.get("cpu") or "")
    text = ", ".join(p for p in (machine, board if board != machine else "") if p)
    return canonical_machine(machine), text


def _ratio(top: Any, bottom: Any, digits: int = 3) -> float | None:
    """``top / bottom``, None where either is missing or the bottom is not positive (a
    model RSS of 0 MiB: the runtime's loader allocated nothing the OS could see)."""
    if not isinstance(top, int | float) or not isinstance(bottom, int | float) or bottom <= 0:
        return None
    return round(top / bottom, digits)


def _at(entry: Mapping[str, Any], where: str) -> Mapping[str, Any] | None:
    if where == "host":
        return entry if "latency_ms" in entry else None
    return next((r for r in entry.get("remote", []) if r.get("remote") == where), None)


def _times(v: float | None, better: str, worse: str) -> str | None:
    if v is None:
        return None
    x, word = (v, better) if v >= 1 else (1 / v, worse)
    return f"{x:.2f}× {word}" if x < 2 else f"{x:.1f}× {word}"  # 1.02×, not 1.0×


def _detail(row: dict[str, Any]) -> str:
    """One sentence: "onnxruntime on host: student_int8.onnx vs teacher_fp32.onnx: 12.3×
    faster (95 % CI 11.9–12.8×), 22.6× smaller, −0.31 points, peak RSS 1.4× lower"."""
    speed = _times(row["speedup_p50"], "faster", "slower")
    ci = row.get("speedup_ci95")
    if speed and ci:
        speed += f" (95 % CI {ci[0]:.1f}–{ci[1]:.1f}×)"
    delta = row["accuracy_delta_points"]
    parts = [speed or "speed not measured", _times(row["size_ratio"], "smaller", "larger"),
             None if delta is None else f"{delta:+.2f} points".replace("-", "−"),
             None if row["peak_rss_ratio"] is None else
             f"peak RSS {_times(row['peak_rss_ratio'], 'lower', 'higher')}"]
    return (f"{row['runtime']} on {row['where']}: {row['student']} vs {row['teacher']}: "
            + ", ".join(p for p in parts if p))


def _row(runtime: str, where: str, student: Mapping[str, Any], teacher: Mapping[str, Any],
         pay: Mapping[str, Any] | None, host_machine: str) -> dict[str, Any] | None:
    ms, mt = _at(student, where), _at(teacher, where)
    if ms is None or mt is None:
        return None
    delta = None
    if student.get("accuracy") is not None and teacher.get("accuracy") is not None:
        delta = round(100 * (student["accuracy"] - teacher["accuracy"]), 2)
    row: dict[str, Any] = {"runtime": runtime, "where": where, "student": student["path"],
                           "teacher": teacher["path"], "accuracy_delta_points": delta,
                           "size_ratio": _ratio(teacher["size_bytes"], student["size_bytes"])}
    if pay is not None:
        row |= {"speedup_p50": pay["speedup"], "method": pay.get("method", SEPARATE)}
        if "speedup_ci95" in pay:
            row["speedup_ci95"] = pay["speedup_ci95"]
    else:
        row |= {"speedup_p50": _ratio(mt["latency_ms"]["p50"], ms["latency_ms"]["p50"]),
                "method": SEPARATE}
    mem_s, mem_t = ms.get("memory") or {}, mt.get("memory") or {}
    row["peak_rss_ratio"] = _ratio(mem_t.get("peak_rss_mb"), mem_s.get("peak_rss_mb"))
    row["model_rss_ratio"] = _ratio(mem_t.get("model_rss_mb"), mem_s.get("model_rss_mb"))
    _, text = machine_of(ms.get("device"), host_machine if where == "host" else "")
    who = "build host" if where == "host" else where
    row["measured_on"] = f"{who} ({text})" if text else who
    row["detail"] = _detail(row)
    return row


def headline(artifacts: list[dict[str, Any]], references: list[dict[str, Any]],
             payoff: list[dict[str, Any]], host_machine: str = "") -> dict[str, Any] | None:
    """``report.json``'s ``headline``: ``{"reference": "teacher", "rows": [...]}``, one row
    per runtime and machine where both the deployed student and the teacher were measured;
    None without a teacher reference (a finished model). ``payoff``: the payoff rows, whose
    ``teacher`` step carries the paired speed-up on the host."""
    if not any(r.get("role") == "teacher" for r in references):
        return None
    rows = []
    wheres = ["host", *sorted({r["remote"] for a in artifacts for r in a.get("remote", [])})]
    for runtime in dict.fromkeys(a["runtime"] for a in artifacts):
        student, teacher = deployed(artifacts, runtime), reference(references, runtime,
                                                                   "teacher")
        if student is None or teacher is None:
            continue
        for where in wheres:
            pay = next((p for p in payoff if p["step"] == "teacher" and p["runtime"] == runtime
                        and p["where"] == where and p["candidate"] == student["path"]), None)
            row = _row(runtime, where, student, teacher, pay, host_machine)
            if row is not None:
                rows.append(row)
    return {"reference": "teacher", "rows": rows}
