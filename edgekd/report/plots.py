"""The two plots of ``report.html`` as inline SVG: accuracy vs size vs latency, and the
latency distribution of every artifact on every machine.

matplotlib is imported inside the functions (no pyplot: no global state, no GUI backend), so
importing the HTML renderer stays cheap. Like the page, the plots tolerate any missing key:
the accessors here turn a missing or malformed value into an empty one.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from typing import Any

from edgekd.report.format import real

_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def measured(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Shipped artifacts, then the dense references the payoff table compares against."""
    return dicts(report.get("artifacts")) + dicts(report.get("references"))


def host_of(m: dict[str, Any]) -> str:
    return str(m.get("host") or m.get("remote") or "?")


def _svg(fig: Any, name: str) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    text = buf.getvalue()
    text = text[text.find("<svg"):]  # drop the XML prolog and DOCTYPE: invalid inside HTML
    # Each figure numbers its ids from 1 (figure_1, axes_1); one page needs them unique.
    return re.sub(r'( id="|href="#|url\(#)', rf"\1{name}-", text)


def _plain_log(axis: Any, lo: float, hi: float) -> None:
    """Log-axis ticks as 0.02 and 100 rather than 2×10⁻²; minor ticks on a short range."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    spans = [(3, "23456789"), (10, "2345"), (100, "25")]  # the wider, the fewer: no overlap
    digits = next((d for span, d in spans if hi < span * lo), "")
    axis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in digits else ""))


_OFFSETS = [(d * dx, d * dy) for d in (1, 2.5, 4)
            for dx, dy in [(7, 5), (7, -5), (-7, 5), (-7, -5), (0, 9), (0, -9)]]


def _box(u: float, v: float, w: float, h: float, dx: float, dy: float
         ) -> tuple[float, float, float, float]:
    """Display box of a w×h text placed at offset (dx, dy) from the point (u, v)."""
    left, bottom = u + dx - (w if dx < 0 else w / 2 if dx == 0 else 0), v + dy - (dy < 0) * h
    return (left, bottom, left + w, bottom + h)


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _cost(b: Sequence[float], own: Sequence[float], points: list[Any],
          taken: Sequence[Sequence[float]], frame: Sequence[float]) -> float:
    """Area a label box covers of other labels and markers, or outside the axes; plus a
    third of its own area when it sits nearer another point than its own (misreadable)."""
    area = (b[2] - b[0]) * (b[3] - b[1])
    cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
    nearest = min(points, key=lambda q: (q[0] - cx) ** 2 + (q[1] - cy) ** 2)
    misread = 0.3 * area if (nearest[0], nearest[1]) != (own[0], own[1]) else 0.0
    return sum(_overlap(b, t) for t in taken) + 3 * (area - _overlap(b, frame)) + misread


def _place_labels(ax: Any, labels: list[tuple[float, float, str]]) -> None:
    """Label each point at the nearest offset with the least `_cost`.

    Points cluster (one file size, several runtimes), so any fixed offset would collide.
    """
    px = ax.figure.dpi / 72  # offsets are in points, boxes in display pixels
    ax.get_xlim()  # settles autoscaling so that transData is final
    xy = [ax.transData.transform((x, y)) for x, y, _ in labels]
    taken = [(u - 5 * px, v - 5 * px, u + 5 * px, v + 5 * px) for u, v in xy]
    for (x, y, text), (u, v) in zip(labels, xy, strict=True):
        w, h = len(text) * 4.9 * px, 10 * px  # 8 pt text: about 0.6 em per character
        boxes = [_box(u, v, w, h, dx * px, dy * px) for dx, dy in _OFFSETS]
        cost = [_cost(b, (u, v), xy, taken, ax.bbox.extents) for b in boxes]
        best = cost.index(min(cost))  # the first of equals: the nearest offset
        taken.append(boxes[best])
        dx, dy = _OFFSETS[best]
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top",
                    arrowprops={"arrowstyle": "-", "color": "#888", "lw": 0.6})


def _points(r: dict[str, Any]) -> tuple[list[tuple[str, float, float]],
                                        list[tuple[str, float, float, float | None]]]:
    """(name, KiB, accuracy %) per stage, and per artifact with its p50 latency (ms)."""
    stages, arts = [], []
    for s in dicts(r.get("stages")):
        nonzero, acc = real(s.get("nonzero_params")), real(s.get("accuracy"))
        if nonzero is not None and nonzero > 0 and acc is not None:
            stages.append((str(s.get("name", "?")), nonzero * 4 / 1024, acc * 100))
    for a in measured(r):
        size, acc = real(a.get("size_bytes")), real(a.get("accuracy"))
        if size is not None and size > 0 and acc is not None:
            p50 = real(as_dict(a.get("latency_ms")).get("p50"))
            arts.append((str(a.get("path", "?")), size / 1024, acc * 100, p50))
    return stages, arts


def accuracy_size_svg(r: dict[str, Any]) -> str:
    """Stages and artifacts by size (log) and accuracy, artifacts coloured by p50 latency."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(10, 6))
    ax = fig.add_subplot()
    pts, arts = _points(r)
    if pts:
        ax.scatter([p[1] for p in pts], [p[2] for p in pts], s=80, facecolors="none",
                   edgecolors="#1f77b4", linewidths=1.5,
                   label="model stage: non-zero params × 4 B (FP32 dense-equivalent)")
    timed = [(n, x, y, p) for n, x, y, p in arts if p is not None and p > 0]
    if timed:
        lo, hi = min(a[3] for a in timed), max(a[3] for a in timed)
        norm = LogNorm(lo, hi) if hi > lo else Normalize(lo * 0.9, hi * 1.1)
        sc = ax.scatter([a[1] for a in timed], [a[2] for a in timed], c=[a[3] for a in timed],
                        cmap="viridis", norm=norm, s=80, edgecolors="k",
                        label="artifact: file size, coloured by p50 latency")
        _plain_log(fig.colorbar(sc, ax=ax, label="p50 latency (ms)").ax.yaxis, lo, hi)
    untimed = [a for a in arts if a not in timed]
    if untimed:
        ax.scatter([a[1] for a in untimed], [a[2] for a in untimed], color="#9e9e9e", s=80,
                   edgecolors="k", label="artifact, no latency measured")
    labels = sorted([(p[1], p[2], p[0]) for p in pts] + [(a[1], a[2], a[0]) for a in arts])
    if labels:
        ax.set_xscale("log")
        ax.margins(0.2, 0.15)
        _plain_log(ax.xaxis, *ax.get_xlim())
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
        _place_labels(ax, labels)
    else:
        ax.text(0.5, 0.5, "no stages or artifacts in the report", ha="center",
                transform=ax.transAxes)
    ax.set(title="Accuracy vs size vs latency", ylabel="test accuracy (%)",
           xlabel="size (KiB, log scale)")
    return _svg(fig, "acc")


def _latency_series(r: dict[str, Any]) -> list[tuple[str, list[float], dict[str, Any]]]:
    """(label, positive raw samples, latency summary) per artifact and per remote device."""
    out = []
    for a in measured(r):
        name = str(a.get("path", "?"))
        for label, m in [(name, a)] + [(f"{name} @ {host_of(m)}", m)
                                       for m in dicts(a.get("remote"))]:
            raw = m.get("latency_samples_ms")
            samples = [x for x in raw if (real(x) or 0) > 0] if isinstance(raw, list) else []
            lat = as_dict(m.get("latency_ms"))
            if samples or (real(lat.get("p50")) or 0) > 0:
                out.append((label, samples, lat))
    return out


def _summary_only(ax: Any, i: int, lat: dict[str, Any], first: bool) -> None:
    """No raw samples: p50 with its 95 % CI as error bars, min–max as a dotted whisker."""
    p50 = float(lat["p50"])
    raw = lat.get("p50_ci95")
    ci = [c for c in map(real, raw) if c is not None] if isinstance(raw, list | tuple) else []
    lo, hi = (ci[0], ci[1]) if len(ci) == 2 else (p50, p50)
    ax.errorbar(p50, i, xerr=[[max(0, p50 - lo)], [max(0, hi - p50)]], fmt="D", color="C1",
                capsize=5, label="p50 ± 95 % CI (no raw samples)" if first else None)
    mn, mx = real(lat.get("min")), real(lat.get("max"))
    if mn and mx and mn > 0:
        ax.plot([mn, mx], [i, i], ":|", color="C1", ms=10, label="min–max" if first else None)


def latency_svg(r: dict[str, Any]) -> str:
    """One box per artifact and machine from the raw timings (else p50 and its interval)."""
    from matplotlib.figure import Figure

    series = _latency_series(r)
    fig = Figure(figsize=(10, 1.6 + 0.5 * max(1, len(series))))
    ax = fig.add_subplot()
    first = True
    for i, (_, samples, lat) in enumerate(series):
        if samples:
            ax.boxplot([samples], positions=[i], orientation="horizontal", widths=0.6,
                       flierprops={"markersize": 2, "alpha": 0.5})
        else:
            _summary_only(ax, i, lat, first)
            first = False
    if series:
        ax.set_yticks(range(len(series)), [s[0] for s in series], fontsize=8)
        ax.set_ylim(len(series) - 0.5, -0.5)
        ax.set_xscale("log")
        _plain_log(ax.xaxis, *ax.get_xlim())
        ax.grid(axis="x", which="both", alpha=0.3)
        if not first:
            ax.legend(loc="best", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no latency measured", ha="center", transform=ax.transAxes)
    ax.set(title="Latency distribution per runtime (box: timed runs, whiskers 1.5 IQR)",
           xlabel="latency per inference (ms, log scale)")
    return _svg(fig, "lat")
