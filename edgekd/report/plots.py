"""The accuracy-vs-size-vs-latency plot of ``report.html`` as inline SVG, and what both plots
of the page share (reading the report tolerantly, SVG output, plain log ticks); the latency
box plot is :mod:`.latency_plot`.

The plot is drawn to stay readable on a real build, where artifacts cluster: the FP32 files
of two runtimes differ by a few hundred bytes. So markers that would cover each other are set
side by side (:func:`spread`; a dot and a leader keep the exact value), each label goes where
it covers least (:func:`_place_labels`), and the colour bar spans every plotted latency and
names both ends.

matplotlib is imported inside the functions (no pyplot: no global state, no GUI backend), so
importing the HTML renderer stays cheap. Like the page, the plots tolerate any missing key:
the accessors here turn a missing or malformed value into an empty one.
"""
from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edgekd.report import format as fmt
from edgekd.report.format import real

_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}

# One marker shape per runtime and one edge colour per precision: two artifacts at the same
# size and accuracy still read apart. Runtimes not named here take the spare shapes in turn.
RUNTIME_MARKERS = {"onnxruntime": "D", "tflite": "s", "openvino": "^", "tensorrt": "v"}
_SPARE_MARKERS = "PXph<>"
PRECISION_COLOURS = {"fp32": "#222222", "fp16": "#1f77b4", "int8": "#d62728"}
_SPARE_COLOURS = ("#9467bd", "#8c564b", "#e377c2")
_STAGE_COLOUR = "#1f77b4"
MARKER_PT = 10.0  # marker width in points; markers whose centres are closer are set apart


def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def measured(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Shipped artifacts, then the dense references the payoff table compares against."""
    return dicts(report.get("artifacts")) + dicts(report.get("references"))


def host_of(m: dict[str, Any]) -> str:
    return str(m.get("host") or m.get("remote") or "?")


def svg(fig: Any, name: str) -> str:
    """A figure as an ``<svg>`` element to inline in the page, its ids prefixed by ``name``."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    text = buf.getvalue()
    text = text[text.find("<svg"):]  # drop the XML prolog and DOCTYPE: invalid inside HTML
    # Each figure numbers its ids from 1 (figure_1, axes_1); one page needs them unique.
    return re.sub(r'( id="|href="#|url\(#)', rf"\1{name}-", text)


def plain_log(axis: Any, lo: float, hi: float) -> None:
    """Log-axis ticks as 0.02 and 100 rather than 2×10⁻²; minor ticks on a short range."""
    from matplotlib.ticker import FuncFormatter

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    spans = [(3, "23456789"), (10, "2345"), (100, "25")]  # the wider, the fewer: no overlap
    digits = next((d for span, d in spans if hi < span * lo), "")
    axis.set_minor_formatter(FuncFormatter(
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in digits else ""))


# -- labels ------------------------------------------------------------------------------------

# Label offsets (points) from a marker, nearest first: beside it, then stacked ever further
# above and below, where a crowded row of markers leaves room.
_OFFSETS = sorted(((dx, sign * dy) for dy in (5, 9, 18, 28, 38, 48, 58, 68)
                   for dx in (7, -7, 0, 22, -22) for sign in (1, -1)),
                  key=lambda o: math.hypot(*o))


def _box(u: float, v: float, w: float, h: float, dx: float, dy: float
         ) -> tuple[float, float, float, float]:
    """Display box of a w×h text placed at offset (dx, dy) from the point (u, v)."""
    left, bottom = u + dx - (w if dx < 0 else w / 2 if dx == 0 else 0), v + dy - (dy < 0) * h
    return (left, bottom, left + w, bottom + h)


def _overlap(a: Sequence[float], b: Sequence[float]) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _crosses(p: Sequence[float], q: Sequence[float], r: Sequence[float],
             s: Sequence[float]) -> bool:
    """Whether segment p-q crosses segment r-s (touching ends do not count)."""
    def side(a: Sequence[float], b: Sequence[float], c: Sequence[float]) -> float:
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return (side(p, q, r) * side(p, q, s) < 0) and (side(r, s, p) * side(r, s, q) < 0)


def _through(p: Sequence[float], q: Sequence[float], box: Sequence[float]) -> bool:
    """Whether segment p-q passes through ``box`` (sampled: boxes are marker-sized)."""
    return any(box[0] < p[0] + (q[0] - p[0]) * t < box[2]
               and box[1] < p[1] + (q[1] - p[1]) * t < box[3] for t in (0.2, 0.4, 0.6, 0.8))


@dataclass
class _Layout:
    """What the labels placed so far occupy: boxes (markers and labels) and leader lines."""

    markers: list[tuple[float, float, float, float]]
    labels: list[tuple[float, float, float, float]]
    leaders: list[tuple[tuple[float, float], tuple[float, float]]]


def _cost(b: Sequence[float], own: tuple[float, float], anchor: tuple[float, float],
          lay: _Layout, frame: Sequence[float]) -> float:
    """Area a label box covers of other labels and markers or outside the axes; the same
    again for a leader line through another marker or across another leader; and a little
    per pixel of leader, so that of equal places the nearest wins; half of it when the
    leader ends nearer another marker than its own (the label reads as that marker's)."""
    area = (b[2] - b[0]) * (b[3] - b[1])
    nearest = min(lay.markers, key=lambda m: math.dist(anchor, ((m[0] + m[2]) / 2,
                                                                (m[1] + m[3]) / 2)))
    if not nearest[0] < own[0] < nearest[2] or not nearest[1] < own[1] < nearest[3]:
        area_misread = 0.5 * area
    else:
        area_misread = 0.0
    cost = sum(_overlap(b, t) for t in lay.markers + lay.labels) + 3 * (area - _overlap(b, frame))
    cost += area * sum(_through(own, anchor, m) for m in lay.markers
                       if not m[0] < own[0] < m[2] or not m[1] < own[1] < m[3])
    cost += area * sum(_crosses(own, anchor, p, q) for p, q in lay.leaders)
    return cost + area_misread + 0.004 * area * math.dist(own, anchor)


def _place_labels(ax: Any, labels: list[tuple[float, float, str]]) -> None:
    """Label each point where `_cost` is least, with a leader line back to it.

    Points cluster (one file size, several runtimes and machines), so any fixed offset would
    collide; crowded clusters get their labels stacked above and below.
    """
    px = ax.figure.dpi / 72  # offsets are in points, boxes in display pixels
    xy = [tuple(ax.transData.transform((x, y))) for x, y, _ in labels]
    half = MARKER_PT / 2 * px
    lay = _Layout([(u - half, v - half, u + half, v + half) for u, v in xy], [], [])
    for (x, y, text), (u, v) in zip(labels, xy, strict=True):
        w, h = len(text) * 4.9 * px, 10 * px  # 8 pt text: about 0.6 em per character
        options = []
        for dx, dy in _OFFSETS:
            box = _box(u, v, w, h, dx * px, dy * px)
            anchor = (u + dx * px, box[1] if dy > 0 else box[3])
            options.append((_cost(box, (u, v), anchor, lay, ax.bbox.extents), box, anchor,
                            dx, dy))
        _, box, anchor, dx, dy = min(options, key=lambda o: o[0])
        lay.labels.append(box)
        lay.leaders.append(((u, v), anchor))
        ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=8,
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top",
                    arrowprops={"arrowstyle": "-", "color": "#888", "lw": 0.6,
                                "shrinkA": 0, "shrinkB": half / px})


# -- accuracy vs size vs latency ----------------------------------------------------------------

@dataclass
class Mark:
    """One marker: a model stage (``runtime`` None) or an artifact measured on one machine."""

    label: str
    kib: float
    accuracy: float  # percent
    runtime: str | None = None
    precision: str = ""
    p50: float | None = None  # ms, on the machine the label names


def marks(r: dict[str, Any]) -> list[Mark]:
    """Every stage (non-zero params × 4 B) and every artifact on every machine it was timed
    on (this host, each remote device), with its accuracy on the test split."""
    out = []
    for s in dicts(r.get("stages")):
        nonzero, acc = real(s.get("nonzero_params")), real(s.get("accuracy"))
        if nonzero is not None and nonzero > 0 and acc is not None:
            out.append(Mark(str(s.get("name", "?")), nonzero * 4 / 1024, acc * 100))
    for a in measured(r):
        size, acc = real(a.get("size_bytes")), real(a.get("accuracy"))
        if size is None or size <= 0 or acc is None:
            continue
        name, runtime = str(a.get("path", "?")), str(a.get("runtime") or "?")
        precision = str(a.get("precision") or "?")
        remotes = dicts(a.get("remote"))
        for label, m in [(name, a)] + [(f"{name} @ {host_of(m)}", m) for m in remotes]:
            p50 = real(as_dict(m.get("latency_ms")).get("p50"))
            if m is a or (p50 is not None and p50 > 0):  # a remote row is only its timing
                out.append(Mark(label, size / 1024, acc * 100, runtime, precision,
                                p50 if p50 is not None and p50 > 0 else None))
    return out


def colour_range(latencies: Sequence[float]) -> tuple[float, float]:
    """The colour bar's (low, high) in ms: every plotted latency inside, with a small margin
    so that neither end colour is cut off; a single value gets ±10 %."""
    lo, hi = min(latencies), max(latencies)
    if hi <= lo * 1.001:
        return lo / 1.1, hi * 1.1
    pad = (hi / lo) ** 0.03
    return lo / pad, hi * pad


def _colour_ticks(bar: Any, lo: float, hi: float, norm: Any) -> None:
    """Ticks at the fastest and slowest plotted latency, named, and a few round values
    between that keep clear of both ends."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    span = math.log10(norm.vmax / norm.vmin)
    inner = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)))
             for m in (1, 2, 5)]
    inner = [t for t in inner if min(abs(math.log10(t / lo)), abs(math.log10(t / hi)))
             > 0.12 * span]
    ticks = sorted({lo, hi, *inner}) if hi > lo else [lo]
    names = {lo: "fastest", hi: "slowest"} if hi > lo else {lo: "all"}
    bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.ax.yaxis.set_major_formatter(FuncFormatter(
        lambda v, _: f"{fmt.ms(v)} {names[v]}" if v in names else f"{v:g}"))


def _styles(ms: list[Mark]) -> tuple[dict[str, str], dict[str, str]]:
    """(shape per runtime, edge colour per precision) for this figure's artifacts; one not
    in the tables takes the next spare shape or colour."""
    shapes, edges = dict(RUNTIME_MARKERS), dict(PRECISION_COLOURS)
    for m in ms:
        if m.runtime is not None and m.runtime not in shapes:
            shapes[m.runtime] = next((s for s in _SPARE_MARKERS if s not in shapes.values()),
                                     "o")
        if m.runtime is not None and m.precision not in edges:
            edges[m.precision] = next((c for c in _SPARE_COLOURS if c not in edges.values()),
                                      "k")
    return shapes, edges


def spread(points: Sequence[tuple[float, float]], gap: float) -> list[tuple[float, float]]:
    """Display positions where no two centres are closer than ``gap``: each group of
    crowding points is laid out on a row (rows, when more than four) around its centroid,
    in their own left-to-right order; repeated while a moved row crowds another point."""
    pos = [(float(u), float(v)) for u, v in points]
    for _ in range(8):
        groups = _crowds(pos, gap)
        if all(len(g) == 1 for g in groups):
            break
        for g in (g for g in groups if len(g) > 1):
            cu = sum(pos[i][0] for i in g) / len(g)
            cv = sum(pos[i][1] for i in g) / len(g)
            cols = len(g) if len(g) <= 4 else math.ceil(math.sqrt(len(g)))
            rows = math.ceil(len(g) / cols)
            order = sorted(g, key=lambda i: (pos[i][0], -pos[i][1], i))
            for k, i in enumerate(order):
                col, row = k % cols, k // cols
                pos[i] = (cu + (col - (cols - 1) / 2) * gap * 1.05,
                          cv + ((rows - 1) / 2 - row) * gap * 1.05)
    return [(float(u), float(v)) for u, v in pos]


def _crowds(pos: Sequence[tuple[float, float]], gap: float) -> list[list[int]]:
    """Groups of points linked by centre distances under ``gap`` (single linkage)."""
    group = list(range(len(pos)))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for i in range(len(pos)):
        for j in range(i):
            if math.dist(pos[i], pos[j]) < gap * 0.999:
                group[root(i)] = root(j)
    out: dict[int, list[int]] = {}
    for i in range(len(pos)):
        out.setdefault(root(i), []).append(i)
    return list(out.values())


def _legend(ax: Any, ms: list[Mark], styles: tuple[dict[str, str], dict[str, str]],
            moved: bool) -> None:
    """Shapes name runtimes, edge colours name precisions: one legend entry each."""
    from matplotlib.lines import Line2D

    def entry(label: str, **style: Any) -> Any:
        return Line2D([], [], linestyle="none", markersize=8, label=label, **style)

    arts = [m for m in ms if m.runtime is not None]
    shapes, edges = styles
    handles = []
    if len(arts) < len(ms):
        handles.append(entry("model stage: non-zero params × 4 B (FP32 dense-equivalent)",
                             marker="o", markerfacecolor="none",
                             markeredgecolor=_STAGE_COLOUR, markeredgewidth=1.5))
    for rt in dict.fromkeys(m.runtime for m in arts):
        handles.append(entry(f"{rt} (shape)", marker=shapes[str(rt)],
                             markerfacecolor="#bbbbbb", markeredgecolor="#bbbbbb"))
    for p in dict.fromkeys(m.precision for m in arts):
        handles.append(entry(f"{p.upper()} (edge colour)", marker="o", markerfacecolor="white",
                             markeredgecolor=edges[p],
                             markeredgewidth=2))
    if any(m.p50 is None for m in arts):
        handles.append(entry("no latency measured", marker="o", markerfacecolor="#9e9e9e",
                             markeredgecolor="#9e9e9e"))
    if moved:
        handles.append(Line2D([], [], color="#555", marker=".", markersize=4, lw=0.6,
                              label="exact value of a marker set apart from its neighbours"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8,
              ncol=2)


def accuracy_size_figure(r: dict[str, Any]) -> Any:
    """Stages and artifacts by size (log) and accuracy; artifacts shaped by runtime, edged
    by precision, filled by p50 latency (colour bar); crowded markers set side by side."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(10, 6))
    ax = fig.add_subplot()
    ax.set(title="Accuracy vs size vs latency", ylabel="test accuracy (%)",
           xlabel="size (KiB, log scale)")
    ms = marks(r)
    if not ms:
        ax.text(0.5, 0.5, "no stages or artifacts in the report", ha="center",
                transform=ax.transAxes)
        return fig
    shapes, edges = _styles(ms)
    ax.set_xscale("log")
    ax.update_datalim([(m.kib, m.accuracy) for m in ms])
    ax.margins(0.2, 0.15)
    ax.autoscale_view()
    timed = [m.p50 for m in ms if m.p50 is not None]
    norm = LogNorm(*colour_range(timed)) if timed else None
    if norm is not None:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap="viridis"), ax=ax,
                           label="p50 latency (ms), on the machine each label names")
        _colour_ticks(bar, min(timed), max(timed), norm)
    ax.set_xlim(ax.get_xlim())  # frozen: the layout below is in display space
    ax.set_ylim(ax.get_ylim())
    plain_log(ax.xaxis, *ax.get_xlim())
    exact = [ax.transData.transform((m.kib, m.accuracy)) for m in ms]
    px = fig.dpi / 72
    shown = spread([(float(u), float(v)) for u, v in exact], MARKER_PT * px * 1.15)
    to_data = ax.transData.inverted()
    at = [tuple(to_data.transform(p)) for p in shown]
    moved = False
    for m, (u, v), (su, sv), (x, y) in zip(ms, exact, shown, at, strict=True):
        if math.dist((u, v), (su, sv)) > 0.5:
            moved = True
            ax.plot([m.kib, x], [m.accuracy, y], "-", color="#777", lw=0.6, zorder=2)
            ax.plot([m.kib], [m.accuracy], ".", color="#333", ms=3, zorder=5)
    size = MARKER_PT ** 2
    for m, (x, y) in zip(ms, at, strict=True):
        if m.runtime is None:
            ax.scatter([x], [y], s=size * 1.1, facecolors="none", edgecolors=_STAGE_COLOUR,
                       linewidths=1.5, zorder=3, label="_marker")
            continue
        fill = {"c": [m.p50], "cmap": "viridis", "norm": norm} if m.p50 is not None and \
            norm is not None else {"color": "#9e9e9e"}
        ax.scatter([x], [y], marker=shapes[m.runtime], s=size, edgecolors=edges[m.precision],
                   linewidths=2, zorder=4,
                   label="_marker", **fill)
    _legend(ax, ms, (shapes, edges), moved)
    _place_labels(ax, sorted((x, y, m.label) for m, (x, y) in zip(ms, at, strict=True)))
    return fig


def accuracy_size_svg(r: dict[str, Any]) -> str:
    return svg(accuracy_size_figure(r), "acc")
