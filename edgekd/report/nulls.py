"""Non-finite numbers become ``null``, and the report says which and why.

JSON has no NaN or infinity: Python writes them as ``NaN``/``Infinity``, which most JSON
readers (JavaScript, jq, Go, CI dashboards) reject. A measurement can still come out
non-finite (a model whose outputs overflow gives a NaN cosine), so every file edgekd writes
goes through :func:`with_nulls`: each NaN or ±inf becomes ``null`` and one entry of the
top-level ``nulls`` list names the field and the value it replaced::

    "nulls": [{"field": "artifacts[2].cosine_min", "why": "not finite (nan)"}]

A ``null`` that is not listed there is the value's own meaning (documented in the schema:
e.g. ``accuracy`` of a model that is not a classifier). :func:`write_json` writes every JSON
file of edgekd (report, manifest, ``bench --json``) this way.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypedDict

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class NullNote(TypedDict):
    field: str  # where the null is: artifacts[2].latency_ms.p95
    why: str  # what it replaced: "not finite (nan)"


def field_path(parts: Iterable[str | int]) -> str:
    """``["artifacts", 2, "cosine_min"]`` -> ``artifacts[2].cosine_min``; a key that is not a
    plain name is quoted: ``accuracy["student_int8.onnx"]``."""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif _NAME.match(p):
            out += f".{p}" if out else p
        else:
            out += f"[{_quote(p)}]"
    return out


def _quote(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def finite(data: Any) -> tuple[Any, list[NullNote]]:
    """A copy of ``data`` as plain JSON values (tuples become lists, NumPy scalars Python
    numbers) with every NaN and ±inf replaced by ``None``, and a note for each."""
    notes: list[NullNote] = []
    return _walk(data, [], notes), notes


def _walk(v: Any, at: list[str | int], notes: list[NullNote]) -> Any:
    if isinstance(v, dict):
        return {k: _walk(x, [*at, str(k)], notes) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_walk(x, [*at, i], notes) for i, x in enumerate(v)]
    if isinstance(v, bool | str) or v is None:
        return v
    if isinstance(v, numbers.Integral):  # also NumPy integers, which json cannot write
        return int(v)
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isfinite(x):
            return x
        notes.append({"field": field_path(at), "why": f"not finite ({x})"})
        return None
    return v  # anything else: json.dumps says what it is


def with_nulls(data: dict[str, Any]) -> dict[str, Any]:
    """:func:`finite` of a top-level object, its notes appended to its ``nulls`` list (which
    appears only when there is something to explain)."""
    clean, notes = finite(data)
    if notes:
        clean["nulls"] = [*(clean.get("nulls") or []), *notes]
    return clean  # type: ignore[no-any-return]


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as strict JSON: NaN and ±inf become ``null``, listed in ``nulls`` (a JSON
    reader in another language would reject them, and CI tools do)."""
    clean = with_nulls(dict(data))
    path.write_text(json.dumps(clean, indent=2, sort_keys=False, allow_nan=False) + "\n",
                    encoding="utf-8")
