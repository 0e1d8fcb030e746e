"""Does each step pay off? INT8 vs FP32 and pruned vs dense, per runtime and machine.

A step is "faster" or "slower" only when the 95 % confidence intervals of the two medians do
not overlap (the difference is not noise) and the medians differ by at least ``MIN_CHANGE``
(the difference matters); otherwise it is "no measurable change". Unstructured pruning
leaves dense kernels doing the same work, so on ONNX Runtime, OpenVINO and LiteRT it is
expected to change the (gzip-compressed) size, not the latency; the report says which.
"""

from __future__ import annotations

from typing import Any

from edgekd.common.units import latency_text

MIN_CHANGE = 0.05  # 5 %: below this a latency difference is not worth a verdict


def _at(entry: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The measurement of an artifact on the host ("") or on a remote device."""
    if not where:
        return entry if "latency_ms" in entry else None
    return next((r for r in entry.get("remote", []) if r["remote"] == where), None)


def speedup_of(base: dict[str, Any], cand: dict[str, Any]) -> tuple[float, str]:
    """(speedup of ``cand`` over ``base``, verdict) from their medians and intervals."""
    b, c = base["latency_ms"], cand["latency_ms"]
    speedup = b["p50"] / c["p50"]
    if abs(speedup - 1) < MIN_CHANGE:
        return speedup, "no measurable change"
    if c["p50_ci95"][1] < b["p50_ci95"][0]:
        return speedup, "faster"
    if c["p50_ci95"][0] > b["p50_ci95"][1]:
        return speedup, "slower"
    return speedup, "no measurable change"


def _times(speedup: float) -> str:
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


def payoff(artifacts: list[dict[str, Any]], references: list[dict[str, Any]]
           ) -> list[dict[str, Any]]:
    """One row per runtime, step and machine where both sides were measured."""
    rows = []
    hosts = [""] + sorted({r["remote"] for a in artifacts for r in a.get("remote", [])})
    for runtime in dict.fromkeys(a["runtime"] for a in artifacts):
        by_prec = {a["precision"]: a for a in artifacts if a["runtime"] == runtime}
        dense = next((r for r in references if r["runtime"] == runtime), None)
        steps = [("int8", by_prec.get("fp32"), by_prec.get("int8")),
                 ("pruning", dense, by_prec.get("fp32"))]
        for step, base, cand in steps:
            if not base or not cand:
                continue
            for where in hosts:
                mb, mc = _at(base, where), _at(cand, where)
                if not mb or not mc:
                    continue
                speedup, verdict = speedup_of(mb, mc)
                size = base["size_bytes"] / cand["size_bytes"]
                gz = base.get("size_gzip_bytes", 0) / max(1, cand.get("size_gzip_bytes", 1))
                what = "INT8 vs FP32" if step == "int8" else "pruned vs dense (both FP32)"
                on = f"{runtime}" + (f" on {where}" if where else "")
                if verdict == "no measurable change":
                    text = f"{what} on {on}: no measurable latency change"
                else:
                    text = f"{what} on {on}: {_times(speedup)}"
                text += (f" (p50 {latency_text(mb['latency_ms']['p50'])} → "
                         f"{latency_text(mc['latency_ms']['p50'])}); file {size:.2f}× "
                         f"smaller, gzipped {gz:.2f}× smaller")
                if step == "pruning" and verdict == "no measurable change":
                    text += "; pruning compressed size only"
                rows.append({"runtime": runtime, "where": where or "host", "step": step,
                             "baseline": base["path"], "candidate": cand["path"],
                             "speedup": round(speedup, 3), "verdict": verdict,
                             "size_ratio": round(size, 3), "gzip_size_ratio": round(gz, 3),
                             "detail": text})
    return rows


def flags(rows: list[dict[str, Any]], artifacts: list[dict[str, Any]]) -> list[str]:
    """What a reader must not miss: steps that made things slower, ops not run as intended."""
    out = [f"SLOWER: {r['detail']}" for r in rows if r["verdict"] == "slower"]
    for a in artifacts:
        off = (a.get("placement") or {}).get("not_as_intended") or []
        if off:
            ops = ", ".join(sorted({n["op"] for n in off}))
            out.append(f"{a['path']}: {len(off)} node(s) did not run as intended ({ops}): "
                       f"{off[0]['ran']}")
    return out
