"""Does each step pay off? INT8 vs FP32, pruned vs dense, and the deployed student vs the
teacher (all of it together: the headline, :mod:`.headline`), per runtime and machine.

On this host each compared pair is measured *paired* (:func:`edgekd.measure.bench.run_pair`):
both files loaded in one process and timed in alternating rounds (A B B A), so that load on
the machine that comes and goes during the build hits both alike. Each round gives a
speed-up (baseline's median / candidate's median in that round); the step's speed-up is the
median over rounds, with a distribution-free 95 % interval over rounds (order statistics).
The step is "faster" or "slower" only when that whole interval lies beyond ``MIN_CHANGE``
(the difference is neither noise nor too small to matter); otherwise it is "no measurable
change".

Remote devices are measured one artifact after the other (the remote protocol ships one
artifact per worker); there a step is "faster" or "slower" only when the 95 % intervals of
the two medians do not overlap and the medians differ by at least ``MIN_CHANGE``, and the
row's ``method`` says so.

Unstructured pruning leaves dense kernels doing the same work, so on ONNX Runtime, OpenVINO
and LiteRT it is expected to change the (gzip-compressed) size, not the latency; the report
says which.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgekd.common.units import latency_text

MIN_CHANGE = 0.05  # 5 %: below this a latency difference is not worth a verdict
# Where the paired comparisons of a candidate entry wait for :func:`payoff`, by baseline path
# (set by :mod:`edgekd.pipeline.measuring`, removed by :func:`payoff`: not part of the report).
PAIRED = "_paired"
SEPARATE = "separate runs: the medians' 95 % intervals compared"


def _at(entry: dict[str, Any], where: str) -> dict[str, Any] | None:
    """The measurement of an artifact on the host ("") or on a remote device."""
    if not where:
        return entry if "latency_ms" in entry else None
    return next((r for r in entry.get("remote", []) if r["remote"] == where), None)


def reference(references: list[dict[str, Any]], runtime: str, role: str
              ) -> dict[str, Any] | None:
    """The FP32 reference of ``role`` ("dense" or "teacher") on ``runtime``; a reference
    without a role (a report before 1.3) is the dense one."""
    return next((r for r in references if r["runtime"] == runtime
                 and r.get("role", "dense") == role), None)


def deployed(artifacts: list[dict[str, Any]], runtime: str) -> dict[str, Any] | None:
    """The student artifact a runtime deploys: the one marked ``"shipped": true`` when the
    report marks any (the ship policy), else the INT8 artifact, else the FP32 one."""
    mine = [a for a in artifacts if a["runtime"] == runtime]
    if any("shipped" in a for a in artifacts):
        return next((a for a in mine if a.get("shipped")), None)
    by_prec = {a["precision"]: a for a in mine}
    return by_prec.get("int8") or by_prec.get("fp32")


def compared(artifacts: list[dict[str, Any]], references: list[dict[str, Any]]
             ) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(runtime, step, baseline, candidate) of every comparison the payoff rows make: INT8
    against FP32, the (pruned) FP32 against the dense reference, and the deployed student
    (:func:`deployed`) against the teacher's FP32, on each runtime. None without references:
    the payoff section is there only beside them."""
    if not references:
        return []
    out = []
    for runtime in dict.fromkeys(a["runtime"] for a in artifacts):
        by_prec = {a["precision"]: a for a in artifacts if a["runtime"] == runtime}
        for step, base, cand in (("int8", by_prec.get("fp32"), by_prec.get("int8")),
                                 ("pruning", reference(references, runtime, "dense"),
                                  by_prec.get("fp32")),
                                 ("teacher", reference(references, runtime, "teacher"),
                                  deployed(artifacts, runtime))):
            if base and cand:
                out.append((runtime, step, base, cand))
    return out


def speedup_of(base: dict[str, Any], cand: dict[str, Any]) -> tuple[float, str]:
    """(speedup of ``cand`` over ``base``, verdict) from two separate measurements' medians
    and intervals (remote devices)."""
    b, c = base["latency_ms"], cand["latency_ms"]
    speedup = b["p50"] / c["p50"]
    if abs(speedup - 1) < MIN_CHANGE:
        return speedup, "no measurable change"
    if c["p50_ci95"][1] < b["p50_ci95"][0]:
        return speedup, "faster"
    if c["p50_ci95"][0] > b["p50_ci95"][1]:
        return speedup, "slower"
    return speedup, "no measurable change"


def median_ci95(values: list[float]) -> tuple[float, float, float]:
    """(median, low, high): the median and its distribution-free 95 % interval, the j-th and
    k-th smallest of n values with j, k = n/2 -+ 1.96 sqrt(n)/2 (as the latency intervals)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    n = len(v)
    half = 1.959964 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    hi = min(n - 1, math.ceil(n / 2 + half) - 1)
    return float(np.median(v)), float(v[lo]), float(v[hi])


def paired_speedup(result: dict[str, Any]) -> dict[str, Any]:
    """Speed-up of the candidate over the baseline from a paired result
    (:func:`edgekd.measure.bench.run_pair`): the median over rounds of each round's ratio, its
    95 % interval, and the verdict, "faster"/"slower" only when the whole interval is beyond
    ``MIN_CHANGE`` (1.05×, or 1/1.05×)."""
    ratios = [b / c for b, c in result["round_p50_ms"] if b > 0 and c > 0]
    if not ratios:
        return {"speedup": float("nan"), "speedup_ci95": [float("nan")] * 2,
                "verdict": "no measurable change", "rounds": 0}
    mid, lo, hi = median_ci95(ratios)
    verdict = ("faster" if lo > 1 + MIN_CHANGE else
               "slower" if hi < 1 / (1 + MIN_CHANGE) else "no measurable change")
    base = float(np.median([b for b, _ in result["round_p50_ms"]]))
    cand = float(np.median([c for _, c in result["round_p50_ms"]]))
    return {"speedup": mid, "speedup_ci95": [lo, hi], "verdict": verdict,
            "rounds": len(ratios), "p50_ms": [base, cand]}


def _times(speedup: float) -> str:
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


def _smaller(ratio: float) -> str:
    """A size ratio (baseline / candidate) in words: ``1.25× larger``, never ``0.80× smaller``."""
    return f"{ratio:.2f}× smaller" if ratio >= 1 or ratio <= 0 else f"{1 / ratio:.2f}× larger"


def payoff(artifacts: list[dict[str, Any]], references: list[dict[str, Any]]
           ) -> list[dict[str, Any]]:
    """One row per runtime, step and machine where both sides were measured. Takes the
    paired comparisons (``PAIRED``) off the candidate entries."""
    pairs = {id(a): a.pop(PAIRED, {}) for a in artifacts + references}
    rows = []
    hosts = [""] + sorted({r["remote"] for a in artifacts for r in a.get("remote", [])})
    for runtime, step, base, cand in compared(artifacts, references):
        for where in hosts:
            mb, mc = _at(base, where), _at(cand, where)
            paired = None if where else pairs[id(cand)].get(base["path"])
            if not paired and (not mb or not mc):
                continue
            rows.append(_row(runtime, step, where, base, cand, mb, mc, paired))
    return rows


def _row(runtime: str, step: str, where: str, base: dict[str, Any], cand: dict[str, Any],
         mb: dict[str, Any] | None, mc: dict[str, Any] | None,
         paired: dict[str, Any] | None) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    if paired:
        p = paired_speedup(paired)
        speedup, verdict = p["speedup"], p["verdict"]
        lo, hi = p["speedup_ci95"]
        method = f"paired, {p['rounds']} alternating rounds in one process"
        # The interval in the words of the verdict; no p50 pair here: each side's median
        # over rounds moves with the load, the ratio within a round does not.
        if verdict == "slower":
            ci = f"{1 / hi:.2f}–{1 / lo:.2f}× slower"
        elif verdict == "faster":
            ci = f"{lo:.2f}–{hi:.2f}× faster"
        else:
            ci = f"{speedup:.2f}×, 95 % CI {lo:.2f}–{hi:.2f}×"
        how = (f"95 % CI {ci}" if verdict != "no measurable change" else ci) + f"; {method}"
        extra = {"speedup_ci95": [round(lo, 3), round(hi, 3)], "rounds": p["rounds"]}
    else:
        assert mb is not None and mc is not None
        speedup, verdict = speedup_of(mb, mc)
        method = SEPARATE
        how = (f"p50 {latency_text(mb['latency_ms']['p50'])} → "
               f"{latency_text(mc['latency_ms']['p50'])}, {SEPARATE}")
    size = base["size_bytes"] / cand["size_bytes"]
    gz = base.get("size_gzip_bytes", 0) / max(1, cand.get("size_gzip_bytes", 1))
    what = {"int8": "INT8 vs FP32", "pruning": "pruned vs dense (both FP32)",
            "teacher": f"student {cand['precision'].upper()} vs teacher FP32"}[step]
    on = f"{runtime}" + (f" on {where}" if where else "")
    if verdict == "no measurable change":
        text = f"{what} on {on}: no measurable latency change"
    else:
        text = f"{what} on {on}: {_times(speedup)}"
    text += f" ({how}); file {_smaller(size)}, gzipped {_smaller(gz)}"
    if step == "pruning" and verdict == "no measurable change":
        text += "; pruning compressed size only"
    return {"runtime": runtime, "where": where or "host", "step": step,
            "baseline": base["path"], "candidate": cand["path"],
            "speedup": round(speedup, 3), "verdict": verdict,
            "size_ratio": round(size, 3), "gzip_size_ratio": round(gz, 3),
            "detail": text, "method": method, **extra}


def flags(rows: list[dict[str, Any]], artifacts: list[dict[str, Any]],
          float_by_design: tuple[str, ...] = ()) -> list[str]:
    """What a reader must not miss: steps that made a *shipped* artifact slower (with the
    ship policy's reason for shipping it anyway, when it gives one), ops not run as intended.
    An INT8 artifact slower than its FP32 that does not ship (the ship policy sent the FP32)
    is no flag: its payoff row says it. Without ``shipped`` keys every artifact ships.
    ``float_by_design``: ops the INT8 recipe keeps in float on purpose (not flagged when they
    ran in float on the intended provider)."""
    by_path = {a["path"]: a for a in artifacts}
    marked = any("shipped" in a for a in artifacts)
    out = []
    for r in rows:
        cand = by_path.get(r["candidate"], {})
        if r["verdict"] != "slower" or (marked and not cand.get("shipped")):
            continue
        why = (cand.get("int8_choice") or {}).get("why")  # the ship policy's documented choice
        out.append(f"SLOWER: {r['detail']}" + (f"; ships anyway: {why}" if why else ""))
    for a in artifacts:
        off = [n for n in (a.get("placement") or {}).get("not_as_intended") or []
               if not (n.get("op") in float_by_design and str(n.get("ran", "")).endswith(
                   ", float"))]
        if off:
            ops = ", ".join(sorted({n["op"] for n in off}))
            out.append(f"{a['path']}: {len(off)} node(s) did not run as intended ({ops}): "
                       f"{off[0]['ran']}")
    return out
