"""``report.html``: one self-contained page for a build report, with tables and two SVG plots.

Everything the page needs is inside it (inline CSS, inline SVG, a few lines of script), so it
can be attached to a CI run or copied off a device and opened offline. Every key of the report
may be missing: a missing value shows as "–", never as an error.
"""

from __future__ import annotations

import html
import io
import math
import re
from collections.abc import Sequence
from typing import Any

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:12.5px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;white-space:nowrap}
caption{text-align:left;color:#555;padding-bottom:3px}.wide{overflow-x:auto}
tr.pass td{background:#e8f5e9}tr.fail td{background:#ffebee}
.flag{border-left:5px solid;padding:6px 10px;margin:6px 0}
.flag.red{border-color:#c62828;background:#ffebee}.flag.amber{border-color:#ef8f00;background:#fff8e1}
figure.plot{margin:1em 0}figure.plot svg{max-width:100%;height:auto}
.meta{color:#555}ul{margin:0;padding-left:1.2em}
"""

# Lets a headless browser prove the plots were laid out (`--dump-dom` shows the count).
_SCRIPT = """<script>window.addEventListener("load", function () {
  var svgs = Array.from(document.querySelectorAll("figure.plot svg"));
  document.body.dataset.plotsRendered = String(svgs.filter(function (s) {
    var r = s.getBoundingClientRect(); return r.width > 50 && r.height > 50; }).length);
});</script>"""

_NUMBER = re.compile(r"^(–|[-+]?[0-9][0-9.,]*(e[-+]?[0-9]+)?( %|%|×)?(–[0-9.e-]+)?)$")
_BAD = ("slower", "fail", "exceed", "over budget", "did not run as intended")
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def _e(v: Any) -> str:
    return "–" if v is None else html.escape(str(v))


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def _num(v: Any) -> float | None:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _f(v: Any, fmt: str = ".4g", scale: float = 1.0, unit: str = "") -> str:
    x = _num(v)
    return "–" if x is None else f"{x * scale:{fmt}}{unit}"


def _measured(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Shipped artifacts, then the dense references the payoff table compares against."""
    return _dicts(report.get("artifacts")) + _dicts(report.get("references"))


def _host(m: dict[str, Any]) -> str:
    return str(m.get("host") or m.get("remote") or "?")


def _table(title: str, head: Sequence[str], rows: list[tuple[str, list[str]]],
           caption: str = "") -> str:
    """A titled table; cells are already escaped HTML. Nothing at all when there are no rows."""
    if not rows:
        return ""
    cap = f"<caption>{caption}</caption>" if caption else ""
    ths = "".join(f"<th>{h}</th>" for h in head)
    trs = "".join(f'<tr class="{cls}">' + "".join(
        f'<td class="num">{c}</td>' if _NUMBER.match(c) else f"<td>{c}</td>" for c in cells)
        + "</tr>" for cls, cells in rows)
    return f'<h2>{title}</h2><div class="wide"><table>{cap}<tr>{ths}</tr>{trs}</table></div>'


def _header(r: dict[str, Any]) -> str:
    host, bench = _dict(r.get("host")), _dict(r.get("bench"))
    facts = [f"edgekd {_e(r.get('edgekd_version'))}",
             f"built in {_f(r.get('build_seconds'), '.1f', unit=' s')}",
             f"host {_e(host.get('machine'))}, {_e(host.get('cpus'))} CPUs"]
    facts += [f"{_e(k)} {_e(v)}" for k, v in bench.items() if not isinstance(v, dict | list)]
    return (f"<h1>edgekd build: {_e(r.get('target', 'unknown target'))}</h1>"
            f"<p>{_e(r.get('target_description', ''))}</p>"
            f'<p class="meta">{" · ".join(facts)}</p>')


def _flags(r: dict[str, Any]) -> str:
    flags = [f for f in r.get("flags") or [] if f] if isinstance(r.get("flags"), list) else []
    items = "".join(
        f'<div class="flag {"red" if any(b in str(f).lower() for b in _BAD) else "amber"}">'
        f"{_e(f)}</div>" for f in flags)
    return f'<section id="flags"><h2>Flags</h2>{items}</section>' if flags else ""


def _budget(r: dict[str, Any]) -> str:
    b = _dict(r.get("budget"))
    rows = [("pass" if c.get("ok") else "fail" if c.get("ok") is False else "",
             [_e(c.get("budget")), _e(c.get("subject")), _f(c.get("measured")),
              _f(c.get("limit")), _f(c.get("margin")), _e(c.get("unit")),
              "pass" if c.get("ok") is True else "FAIL" if c.get("ok") is False else "–"])
            for c in _dicts(b.get("checks"))]
    return _table("Budget", ["budget", "subject", "measured", "limit", "margin", "unit",
                             "result"], rows, f"from {_e(b.get('source'))}")


def _stages(r: dict[str, Any]) -> str:
    rows = [("", [_e(s.get("name")), _f(s.get("params"), ",.0f"),
                  _f(s.get("nonzero_params"), ",.0f"), _f(s.get("weight_sparsity"), ".0%"),
                  _f(s.get("accuracy"), ".2f", 100, " %")]) for s in _dicts(r.get("stages"))]
    return _table("Models", ["stage", "params", "non-zero", "weight sparsity", "accuracy"],
                  rows)


def _latency_cells(m: dict[str, Any]) -> list[str]:
    lat, mem = _dict(m.get("latency_ms")), _dict(m.get("memory"))
    ci = lat.get("p50_ci95")
    ci = ci if isinstance(ci, list | tuple) and len(ci) == 2 else ["?", "?"]
    return ([_f(lat.get(k)) for k in ("p50", "p95", "p99", "mean", "std")]
            + [f"{_f(ci[0])}–{_f(ci[1])}" if _num(ci[0]) else "–"]
            + [_f(mem.get(k), ".1f") for k in ("peak_rss_mb", "model_rss_mb")])


def _artifacts(r: dict[str, Any]) -> str:
    rows = []
    for a in _measured(r):
        name = _e(a.get("path"))
        rows.append(("", [name, _e(a.get("runtime")), _e(a.get("precision")),
                          _f(a.get("size_bytes"), ".1f", 1 / 1024),
                          _f(a.get("size_gzip_bytes"), ".1f", 1 / 1024),
                          _f(a.get("accuracy"), ".2f", 100, " %"),
                          _f(a.get("top1_agreement"), ".2f", 100, " %")] + _latency_cells(a)))
        rows += [("", [f"{name} @ {_e(_host(m))}"] + ["–"] * 6 + _latency_cells(m))
                 for m in _dicts(a.get("remote"))]
    head = ["file", "runtime", "precision", "KiB", "gzip KiB", "accuracy", "top-1 agreement",
            "p50 ms", "p95", "p99", "mean", "std", "p50 95% CI", "peak RSS MiB",
            "model RSS MiB"]
    return _table("Artifacts", head, rows)


def _payoff(r: dict[str, Any]) -> str:
    rows = [("fail" if p.get("verdict") == "slower" else
             "pass" if p.get("verdict") == "faster" else "",
             [_e(p.get("runtime")), _e(p.get("where", "host")), _e(p.get("step")),
              _e(p.get("baseline")), _e(p.get("candidate")), _f(p.get("speedup"), ".2f", unit="×"),
              _f(p.get("size_ratio"), ".2f", unit="×"), _e(p.get("verdict")),
              _e(p.get("detail"))])
            for p in _dicts(r.get("payoff"))]
    return _table("Does each step pay off?", ["runtime", "where", "step", "baseline",
                  "candidate", "speedup", "size ratio", "verdict", "detail"], rows)


def _placement(r: dict[str, Any]) -> str:
    rows = []
    for a in _measured(r):
        p = _dict(a.get("placement"))
        odd = _dicts(p.get("not_as_intended"))
        ran = ("not recorded" if not p else "all as intended" if not odd else "<ul>" + "".join(
            f"<li>{_e(n.get('node'))} ({_e(n.get('op'))}): {_e(n.get('ran'))}</li>"
            for n in odd) + "</ul>")
        how = f"<br><small>{_e(p['how'])}</small>" if p.get("how") else ""
        rows.append(("fail" if odd else "", [_e(a.get("path")), _e(p.get("quantized")),
                                             _e(p.get("nodes")), ran + how]))
    return _table("What ran where", ["file", "quantized", "nodes", "not as intended"], rows)


def _robustness(r: dict[str, Any]) -> str:
    rob = _dict(r.get("robustness"))
    models = [str(m) for m in rob.get("models") or []] if isinstance(rob.get("models"), list) \
        else []
    rows = [("", [_e(c.get("name"))] + [_f(_dict(c.get("accuracy")).get(m), ".2f", 100, " %")
                                         for m in models]
             + [_f(c.get("distilled_minus_scratch_points"), "+.2f")])
            for c in _dicts(rob.get("conditions"))]
    finding = _dict(rob.get("summary")).get("finding")
    return _table("Robustness: accuracy under input corruptions",
                  ["condition", *map(_e, models), "distilled − scratch (points)"], rows,
                  f"{_e(rob.get('pixel_units'))}. {_e(finding) if finding else ''}")


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
    for s in _dicts(r.get("stages")):
        nonzero, acc = _num(s.get("nonzero_params")), _num(s.get("accuracy"))
        if nonzero is not None and nonzero > 0 and acc is not None:
            stages.append((str(s.get("name", "?")), nonzero * 4 / 1024, acc * 100))
    for a in _measured(r):
        size, acc = _num(a.get("size_bytes")), _num(a.get("accuracy"))
        if size is not None and size > 0 and acc is not None:
            p50 = _num(_dict(a.get("latency_ms")).get("p50"))
            arts.append((str(a.get("path", "?")), size / 1024, acc * 100, p50))
    return stages, arts


def _plot_accuracy_size(r: dict[str, Any]) -> str:
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
    for a in _measured(r):
        name = str(a.get("path", "?"))
        for label, m in [(name, a)] + [(f"{name} @ {_host(m)}", m)
                                       for m in _dicts(a.get("remote"))]:
            raw = m.get("latency_samples_ms")
            samples = [x for x in raw if (_num(x) or 0) > 0] if isinstance(raw, list) else []
            lat = _dict(m.get("latency_ms"))
            if samples or (_num(lat.get("p50")) or 0) > 0:
                out.append((label, samples, lat))
    return out


def _summary_only(ax: Any, i: int, lat: dict[str, Any], first: bool) -> None:
    """No raw samples: p50 with its 95 % CI as error bars, min–max as a dotted whisker."""
    p50 = float(lat["p50"])
    raw = lat.get("p50_ci95")
    ci = [c for c in map(_num, raw) if c is not None] if isinstance(raw, list | tuple) else []
    lo, hi = (ci[0], ci[1]) if len(ci) == 2 else (p50, p50)
    ax.errorbar(p50, i, xerr=[[max(0, p50 - lo)], [max(0, hi - p50)]], fmt="D", color="C1",
                capsize=5, label="p50 ± 95 % CI (no raw samples)" if first else None)
    mn, mx = _num(lat.get("min")), _num(lat.get("max"))
    if mn and mx and mn > 0:
        ax.plot([mn, mx], [i, i], ":|", color="C1", ms=10, label="min–max" if first else None)


def _plot_latency(r: dict[str, Any]) -> str:
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


def render_html(report: dict[str, Any]) -> str:
    """The whole report as one HTML page that needs no network and no other file."""
    import matplotlib  # lazy: importing this module must stay cheap

    r = _dict(report)
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: small, crisp
        plots = (f'<figure class="plot" id="plot-accuracy-size">{_plot_accuracy_size(r)}'
                 f'</figure><figure class="plot" id="plot-latency">{_plot_latency(r)}</figure>')
    body = (_header(r) + _flags(r) + _budget(r) + plots + _stages(r) + _artifacts(r)
            + _robustness(r) + _payoff(r) + _placement(r))
    title = f"edgekd build: {_e(r.get('target', 'unknown target'))}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n{_SCRIPT}\n</body></html>\n")
