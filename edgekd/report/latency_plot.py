"""The latency plot of ``report.html`` as inline SVG: one box per artifact and machine.

The raw timings of a shared host hold the odd descheduled run that takes a thousand times the
median; an axis fitted to it squashes every box into a hairline. So the axis spans the
1st-99th percentiles of every series (:data:`LATENCY_WHISKERS`) and the runs beyond are
counted at the right edge. A series without raw samples shows its p50 and 95 % interval.
Drawn like :mod:`.plots` (whose SVG and tick helpers it uses): no pyplot, tolerant of any
missing key.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgekd.report import format as fmt
from edgekd.report.format import real
from edgekd.report.plots import as_dict, dicts, host_of, measured, plain_log, svg

LATENCY_WHISKERS = (1.0, 99.0)  # percentiles: one slow run must not set the axis


@dataclass
class Series:
    """One artifact on one machine: its raw timings (may be empty) and latency summary."""

    label: str
    samples: list[float]
    latency: dict[str, Any]


def latency_series(r: dict[str, Any]) -> list[Series]:
    """Every artifact and reference, on this host and on each remote device."""
    out = []
    for a in measured(r):
        name = str(a.get("path", "?"))
        for label, m in [(name, a)] + [(f"{name} @ {host_of(m)}", m)
                                       for m in dicts(a.get("remote"))]:
            raw = m.get("latency_samples_ms")
            samples = [float(x) for x in raw if (real(x) or 0) > 0] \
                if isinstance(raw, list) else []
            lat = as_dict(m.get("latency_ms"))
            if samples or (real(lat.get("p50")) or 0) > 0:
                out.append(Series(label, samples, lat))
    return out


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of an already sorted list."""
    k = (len(sorted_values) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def _extent(s: Series) -> tuple[float, float]:
    """What must be on the axis for one series: its whiskers (1st-99th percentile), or, with
    no raw samples, its p50 and 95 % interval up to its p99."""
    if s.samples:
        values = sorted(s.samples)
        return _percentile(values, LATENCY_WHISKERS[0]), _percentile(values, LATENCY_WHISKERS[1])
    p50 = float(s.latency["p50"])
    near = [p50] + [c for c in map(real, _ci(s.latency)) if c and c > 0]
    far = real(s.latency.get("p99"))
    return min(near), max(near + ([far] if far else []))


def _ci(lat: dict[str, Any]) -> list[Any]:
    raw = lat.get("p50_ci95")
    return list(raw) if isinstance(raw, list | tuple) and len(raw) == 2 else []


def latency_window(series: Sequence[Series]) -> tuple[float, float]:
    """The latency axis (ms, log): every series' whiskers with a little room, however slow
    its slowest single run; the runs beyond are counted at the right edge instead."""
    ends = [_extent(s) for s in series]
    lo, hi = min(e[0] for e in ends), max(e[1] for e in ends)
    pad = max((hi / lo) ** 0.06, 1.15)
    return lo / pad, hi * pad


def _summary_only(ax: Any, i: int, lat: dict[str, Any], first: bool) -> None:
    """No raw samples: p50 with its 95 % CI as error bars, min–max as a dotted whisker."""
    p50 = float(lat["p50"])
    ci = [c for c in map(real, _ci(lat)) if c is not None]
    lo, hi = (ci[0], ci[1]) if len(ci) == 2 else (p50, p50)
    ax.errorbar(p50, i, xerr=[[max(0, p50 - lo)], [max(0, hi - p50)]], fmt="D", color="C1",
                capsize=5, label="p50 ± 95 % CI (no raw samples)" if first else None)
    mn, mx = real(lat.get("min")), real(lat.get("max"))
    if mn and mx and mn > 0:
        ax.plot([mn, mx], [i, i], ":|", color="C1", ms=10, label="min–max" if first else None)


def _beyond(s: Series, right: float) -> str:
    """The note at the right edge: how many runs the box leaves out and the slowest."""
    if s.samples:
        cut = _percentile(sorted(s.samples), LATENCY_WHISKERS[1])
        slow = [x for x in s.samples if x > cut]
        return (f"▸ {len(slow)} run{'s' * (len(slow) != 1)} past p99, slowest "
                f"{fmt.ms(max(slow))} ms") if slow else ""
    mx = real(s.latency.get("max"))
    return f"▸ max {fmt.ms(mx)} ms" if mx and mx > right else ""


def latency_figure(r: dict[str, Any]) -> Any:
    """One box per artifact and machine from the raw timings (else p50 and its interval),
    on an axis that the 1st-99th percentiles set, with the runs beyond counted."""
    from matplotlib.figure import Figure

    series = latency_series(r)
    fig = Figure(figsize=(10, 1.6 + 0.5 * max(1, len(series))))
    ax = fig.add_subplot()
    ax.set(title="Latency per artifact and machine\nbox: middle half of the timed runs, "
                 "orange: median, whiskers: 1st–99th percentile",
           xlabel="latency per inference (ms, log scale)")
    if not series:
        ax.text(0.5, 0.5, "no latency measured", ha="center", transform=ax.transAxes)
        return fig
    first = True
    lo, hi = latency_window(series)
    for i, s in enumerate(series):
        if s.samples:
            ax.boxplot([s.samples], positions=[i], orientation="horizontal", widths=0.6,
                       whis=LATENCY_WHISKERS, showfliers=False)
        else:
            _summary_only(ax, i, s.latency, first)
            first = False
        note = _beyond(s, hi)
        if note:
            ax.annotate(note, (1.01, i), xycoords=("axes fraction", "data"), fontsize=7,
                        va="center", color="#555")
    ax.set_yticks(range(len(series)), [s.label for s in series], fontsize=8)
    ax.set_ylim(len(series) - 0.5, -0.5)
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    plain_log(ax.xaxis, lo, hi)
    ax.grid(axis="x", which="both", alpha=0.3)
    if not first:
        ax.legend(loc="best", fontsize=8)
    return fig


def latency_svg(r: dict[str, Any]) -> str:
    return svg(latency_figure(r), "lat")
