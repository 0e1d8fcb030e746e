"""The search section (``report["search"]``, also ``search.json``): Markdown lines, an HTML
section with the Pareto plot (accuracy vs p50 latency, marker area = model size), and the
stand-alone ``search.md`` / ``search.html`` pages of ``OUT/<target>/search/``.

Like the other renderers, these tolerate missing keys: a figure that is absent shows as
"—"."""

from __future__ import annotations

import html
from typing import Any

from edgekd.report.plots import as_dict, dicts, svg

_DASH = "—"
_COLOURS = {"feasible": "#2ca02c", "infeasible": "#d62728", "stopped early": "#999999"}


def _pct(v: Any) -> str:
    return f"{100 * v:.2f}%" if isinstance(v, int | float) else _DASH


def _ms(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, int | float) else _DASH


def _kib(v: Any) -> str:
    return f"{v / 1024:.1f}" if isinstance(v, int | float) else _DASH


def _mb(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, int | float) else _DASH


def _rows(section: dict[str, Any]) -> list[list[str]]:
    pareto, winner = set(section.get("pareto") or []), section.get("winner")
    rows = []
    for c in dicts(section.get("candidates")):
        f = as_dict(c.get("figures"))
        mark = ("winner" if c.get("number") == winner else
                "Pareto" if c.get("number") in pareto else "")
        rows.append([f"#{c.get('number')}", str(c.get("label", "")), str(c.get("state", "")),
                     _pct(f.get("accuracy")), _ms(f.get("p50_ms")), _ms(f.get("p95_ms")),
                     _kib(f.get("size_bytes")), _mb(f.get("peak_rss_mb")),
                     ", ".join(c.get("broken") or []) or _DASH,
                     "yes" if c.get("trained") else "no", mark])
    return rows


HEADER = ["#", "candidate", "state", "accuracy", "p50 ms", "p95 ms", "size KiB",
          "peak RSS MB", "over budget", "trained", ""]


def _summary(section: dict[str, Any]) -> str:
    n = len(dicts(section.get("candidates")))
    return (f"{n} candidates, {section.get('trainings', 0)} trained, "
            f"{section.get('trainings_saved', 0)} stopped before training (over a latency, "
            f"size or memory budget untrained). Study `{section.get('study', '')}`.")


def markdown_lines(section: dict[str, Any]) -> list[str]:
    """The section as Markdown lines (a heading, the winner and why, the candidates)."""
    lines = ["## Search: the most accurate student within the budget", "",
             f"**Winner: #{section.get('winner')}** — {section.get('why', '')}"
             if section.get("winner") is not None else f"**No winner** — {section.get('why')}",
             "", _summary(section), "",
             "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _rows(section)]
    front = section.get("pareto") or []
    lines += ["", "Pareto front (accuracy vs p50 latency vs size, feasible candidates): "
              + (", ".join(f"#{n}" for n in front) or _DASH), ""]
    return lines


def pareto_svg(section: dict[str, Any]) -> str:
    """Accuracy vs p50 latency of every trained candidate, marker area = size; the Pareto
    front joined by a line; the winner ringed. Empty when nothing was trained."""
    points = [c for c in dicts(section.get("candidates"))
              if isinstance(as_dict(c.get("figures")).get("accuracy"), int | float)
              and isinstance(as_dict(c.get("figures")).get("p50_ms"), int | float)]
    if not points:
        return ""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text, as report.html's
        return _draw(section, points, Figure(figsize=(6.0, 4.0)))


def _draw(section: dict[str, Any], points: list[dict[str, Any]], fig: Any) -> str:
    ax = fig.add_subplot()
    sizes = [float(as_dict(c["figures"]).get("size_bytes") or 0) for c in points]
    biggest = max(sizes) or 1.0
    for c, size in zip(points, sizes, strict=True):
        f = c["figures"]
        ax.scatter(f["p50_ms"], 100 * f["accuracy"], s=30 + 400 * size / biggest,
                   color=_COLOURS.get(str(c.get("state")), "#1f77b4"), alpha=0.7,
                   edgecolors="black" if c.get("number") == section.get("winner") else "none",
                   linewidths=2)
        ax.annotate(f"#{c.get('number')}", (f["p50_ms"], 100 * f["accuracy"]),
                    textcoords="offset points", xytext=(6, 4), fontsize=8)
    front = sorted((c for c in points if c.get("number") in set(section.get("pareto") or [])),
                   key=lambda c: c["figures"]["p50_ms"])
    if len(front) > 1:
        ax.plot([c["figures"]["p50_ms"] for c in front],
                [100 * c["figures"]["accuracy"] for c in front], color="#2ca02c", lw=1,
                ls="--", label="Pareto front")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("p50 latency (ms, worst runtime)")
    ax.set_ylabel("accuracy (%, worst runtime)")
    ax.set_title("Search candidates (marker area = model size; green feasible, "
                 "red over budget)", fontsize=9)
    ax.grid(alpha=0.3)
    return svg(fig, "search")


def html_section(section: dict[str, Any]) -> str:
    """The section as HTML: the winner and why, the Pareto plot, the candidates' table."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{e(v)}</td>" for v in r) + "</tr>"
                   for r in _rows(section))
    winner = section.get("winner")
    title = f"Winner: #{winner}" if winner is not None else "No winner"
    return (f'<section id="search"><h2>Search: the most accurate student within the budget'
            f"</h2><p><strong>{e(title)}</strong> — {e(str(section.get('why', '')))}</p>"
            f"<p>{e(_summary(section))}</p>{pareto_svg(section)}"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def page_markdown(section: dict[str, Any]) -> str:
    return "\n".join(["# edgekd search", "", *markdown_lines(section)[2:]]) + "\n"


def page_html(section: dict[str, Any]) -> str:
    return ("<!doctype html><html><head><meta charset=\"utf-8\"><title>edgekd search</title>"
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head>"
            f"<body>{html_section(section)}</body></html>\n")
