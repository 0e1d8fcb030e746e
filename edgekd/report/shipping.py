"""What ships per runtime, rendered for ``report.md`` and ``report.html``: the ``ship`` policy,
every INT8 file tried against FP32 (settings, accuracy, size, paired speed-up with its 95 %
interval, verdict, kept or rejected and why) and one sentence of why the shipped one won.

Reads the ``int8_choice`` section :mod:`edgekd.pipeline.choosing` puts on each INT8 artifact
entry; a report without one renders nothing.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from edgekd.report import format as fmt

HEAD = ["INT8 file", "settings", "accuracy", "KiB", "speed-up vs FP32", "95 % CI", "verdict",
        "kept", "why"]


def choices(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each runtime's ``int8_choice``, in the order of the artifacts."""
    return [a["int8_choice"] for a in report.get("artifacts", [])
            if isinstance(a, Mapping) and isinstance(a.get("int8_choice"), Mapping)]


def _settings(s: Mapping[str, Any]) -> str:
    if "format" not in s:
        return ", ".join(f"{k} {v}" for k, v in s.items())
    act = {"uint8": "U8S8", "int8": "S8S8"}.get(str(s.get("activation_type")), "?")
    return (f"{s['format']}, {act}, {'per-channel' if s.get('per_channel') else 'per-tensor'}"
            + (", layers only" if s.get("op_types") == "layers" else "")
            + (", 7-bit weights" if s.get("reduce_range") else ""))


def _ci(t: Mapping[str, Any]) -> str:
    ci = t.get("speedup_ci95")
    return f"{fmt.times(ci[0])}–{fmt.times(ci[1])}" if ci else fmt.MISSING


def _cells(t: Mapping[str, Any]) -> list[str]:
    return [str(t.get("name")), _settings(t.get("settings") or {}),
            fmt.percent(t.get("accuracy")), fmt.kib(t.get("size_bytes")),
            fmt.times(t.get("speedup")), _ci(t), str(t.get("verdict")),
            "yes" if t.get("kept") else "no", str(t.get("why", ""))]


def _lead(c: Mapping[str, Any]) -> str:
    why = str(c.get("why") or "").rstrip(".")
    why = why[:1].upper() + why[1:]  # a report before the choose step wrote sentences
    return (f"{c.get('runtime')}: ships {c.get('shipped')} (ship = \"{c.get('policy')}\", "
            f"from the {c.get('policy_from')}). {why}.")


def markdown_lines(report: Mapping[str, Any]) -> list[str]:
    """The "What ships" section of ``report.md`` (nothing without a choice)."""
    found = choices(report)
    if not found:
        return []
    lines = ["## What ships", "",
             "INT8 timed against FP32 in alternating rounds in one process (paired); where "
             "INT8 was not faster, ONNX Runtime's other INT8 forms were made, verified on the "
             "test split and timed the same way. Where the target is a device of another "
             "architecture than this host, the figure is this host's: shown, never deciding "
             "what ships.", ""]
    for c in found:
        lines += [fmt.md(_lead(c)), "", "| " + " | ".join(HEAD) + " |",
                  "|---|---|---:|---:|---:|---|---|---|---|"]
        lines += ["| " + " | ".join(fmt.md(v) for v in _cells(t)) + " |"
                  for t in c.get("tried", [])]
        lines.append("")
    return lines


def html_section(report: Mapping[str, Any]) -> str:
    """The same section for ``report.html`` ("" without a choice)."""
    found = choices(report)
    if not found:
        return ""
    parts = ["<h2>What ships</h2>"]
    for c in found:
        rows = "".join(
            '<tr class="{}">'.format("pass" if t.get("kept") else "")
            + "".join(f"<td>{html.escape(v)}</td>" for v in _cells(t)) + "</tr>"
            for t in c.get("tried", []))
        head = "".join(f"<th>{html.escape(h)}</th>" for h in HEAD)
        parts.append(f"<p>{html.escape(_lead(c))}</p><div class=\"wide\"><table>"
                     f"<tr>{head}</tr>{rows}</table></div>")
    return "".join(parts)
