"""How a number of the report reads, the same in ``report.md``, ``report.html`` and the
command line's summary: one function per kind of value.

Every formatter takes whatever the report holds (a number, ``None`` where the report writes
``null``, or a missing key's default) and never raises: anything that is not a finite real
number prints as :data:`MISSING`. The renderers add their own markup around the text.

Text that comes from the user or the machine (a target's description, a file or host name,
a model's layer and class names) goes into ``report.md`` only through :func:`md` (and
:func:`md_code`, its inline-code form), so it can neither break a table nor add markup;
``report.html`` escapes it with :func:`html.escape`.
"""

from __future__ import annotations

import math
import re
from typing import Any

from edgekd.common.units import latency_text, three_digits

MISSING = "–"  # an en dash: one character for "not measured", "not a classifier", null


def real(v: Any) -> float | None:
    """``v`` as a float when it is a finite real number (not a bool), else ``None``."""
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    return float(v) if ok else None


def _fmt(v: Any, spec: str, scale: float = 1.0, unit: str = "") -> str:
    x = real(v)
    return MISSING if x is None else f"{x * scale:{spec}}{unit}"


def percent(fraction: Any) -> str:
    """A fraction (accuracy, agreement) as a percentage: ``0.89375`` -> ``89.38 %``."""
    return _fmt(fraction, ".2f", 100, " %")


def share(fraction: Any) -> str:
    """A coarse fraction (sparsity, a pruning target): ``0.5`` -> ``50%``."""
    return _fmt(fraction, ".0%")


def fine_share(fraction: Any) -> str:
    """A per-layer fraction with one decimal: ``0.4987`` -> ``49.9%``."""
    return _fmt(fraction, ".1%")


def points(v: Any) -> str:
    """A difference in percentage points, always signed: ``16.25`` -> ``+16.25``."""
    return _fmt(v, "+.2f")


# One rule for latencies wherever they print (edgekd.common.units: ms with three significant
# digits, µs below 0.1 ms, the unit always in the text, so a header carries no unit).
def latency(v: Any) -> str:
    """A latency given in milliseconds, with its unit: ``0.00652`` -> ``6.52 µs``,
    ``0.142`` -> ``0.142 ms``, ``12.34`` -> ``12.3 ms``, ``1234.5`` -> ``1234 ms``."""
    x = real(v)
    if x is None:
        return MISSING
    return latency_text(x)


def latency_range(pair: Any) -> str:
    """A confidence interval ``[lo, hi]`` in milliseconds, in the unit of its upper end:
    ``6.21–6.84 µs``."""
    if not isinstance(pair, list | tuple) or len(pair) != 2 or None in (
            real(pair[0]), real(pair[1])):
        return MISSING
    hi = latency(pair[1])
    unit = hi.rsplit(" ", 1)[1]
    lo = float(pair[0]) * (1000 if unit == "µs" else 1)
    return f"{three_digits(lo)}–{hi}"


def ms(v: Any) -> str:
    """A latency in milliseconds as a bare number (the unit named elsewhere), four
    significant digits: ``0.00926``. Prefer :func:`latency`, which carries its unit."""
    return _fmt(v, ".4g")



def kib(size_bytes: Any) -> str:
    """A size in bytes as KiB with one decimal: ``129872`` -> ``126.8``."""
    return _fmt(size_bytes, ".1f", 1 / 1024)


def mib(v: Any) -> str:
    """Memory already in MiB (RSS), one decimal."""
    return _fmt(v, ".1f")


def count(v: Any) -> str:
    """A whole count with thousands separators: ``900042`` -> ``900,042``."""
    return _fmt(v, ",.0f")


def cosine(v: Any) -> str:
    """A cosine similarity, five decimals: ``0.99998`` (1.00000 is identical)."""
    return _fmt(v, ".5f")


def error(v: Any) -> str:
    """An error (max |Δ|, relative error), three significant digits: ``2e-06``."""
    return _fmt(v, ".3g")


def number(v: Any) -> str:
    """Any other measured value (a budget's measurement or margin), four significant digits."""
    return _fmt(v, ".4g")


def signed(v: Any) -> str:
    """A margin: how far inside (+) or over (−) a budget."""
    return _fmt(v, "+.4g")


def limit(v: Any) -> str:
    """A limit as the user wrote it: ``64``, ``0.5``."""
    return _fmt(v, "g")


def times(v: Any) -> str:
    """A ratio (speed-up, size ratio): ``3.222`` -> ``3.22×``."""
    return _fmt(v, ".2f", unit="×")


def fold(v: Any) -> str:
    """A large ratio (how many times fewer parameters): ``28.51`` -> ``28.5×``."""
    return _fmt(v, ".1f", unit="×")


def seconds(v: Any) -> str:
    """A duration: ``69.64`` -> ``69.6 s``."""
    return _fmt(v, ".1f", unit=" s")


def version(v: Any) -> str:
    """A runtime version without its build suffix:
    ``2026.4.1-22982-e213a147257-releases/2026/4`` -> ``2026.4.1``; others unchanged."""
    if not isinstance(v, str) or not v:
        return MISSING
    return v.split("-")[0] if v[:1].isdigit() else v


def shape(dims: Any) -> str:
    """A tensor or weight shape: ``[32, 1, 3, 3]`` -> ``32×1×3×3``."""
    if not isinstance(dims, list | tuple):
        return MISSING
    return "×".join(map(str, dims))


# Markdown: "|" ends a table cell, "<", ">" and "&" start HTML or an entity, the rest is
# emphasis, code, links and strikethrough. As entities, "|" splits no cell and "<" opens no tag.
_MD_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "|": "&#124;"}
_MD_ESCAPED = frozenset("\\`*_[]~")
# What makes a line a heading, a list item or a setext underline when it starts the line.
_MD_LINE_START = re.compile(r"^(?:(#{1,6}|[+-]|=+|-+)(?=\s|$)|(\d{1,9})(?=[.)](?:\s|$)))")


def _intraword(text: str, i: int) -> bool:
    """An underscore between two letters or digits (``student_int8``): GitHub's Markdown
    never reads it as emphasis, so it stays as written and file names stay copyable."""
    return (text[i] == "_" and 0 < i < len(text) - 1 and text[i - 1].isalnum()
            and text[i + 1].isalnum())


def md(v: Any) -> str:
    """Text for ``report.md``, safe in a table cell and in running text: on one line (a
    newline would end a table row), with every Markdown and HTML special escaped."""
    if v is None:
        return MISSING
    text = " ".join(str(v).split())
    text = "".join(_MD_ENTITIES.get(c) or (f"\\{c}" if c in _MD_ESCAPED
                                            and not _intraword(text, i) else c)
                   for i, c in enumerate(text))
    m = _MD_LINE_START.match(text)
    if m is None:
        return text
    return f"{m.group(2)}\\{text[m.end():]}" if m.group(2) else f"\\{text}"


def md_code(v: Any) -> str:
    """:func:`md` as inline code. HTML ``<code>``, not backticks: inside backticks no escape
    works, so a backtick or "|" in the text would end the span or the table cell."""
    return f"<code>{md(v)}</code>"
