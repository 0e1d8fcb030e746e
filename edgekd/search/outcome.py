"""What a search found: each candidate's figures and budget checks from its build's report,
the Pareto front of accuracy vs p50 latency vs size, the winner and why it won.

A candidate's figures are its worst case over the target's runtimes (and ``--remote``
devices): the lowest verified accuracy, the highest p50 latency, the largest file, the
highest peak RSS, so that "within the budget" holds for every artifact it would ship.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from edgekd.report.gate import BROKEN, budget_checks, check_state
from edgekd.settings.budgets import Budget

FEASIBLE, INFEASIBLE, STOPPED, FAILED = "feasible", "infeasible", "stopped early", "failed"
# The budgets an untrained candidate can break: they do not depend on the weights.
WEIGHT_FREE = ("max_size_kb", "max_p95_ms", "max_peak_rss_mb")


def _shipped(report: Mapping[str, Any], precision: str) -> list[dict[str, Any]]:
    # Not the references (the dense student, the teacher): what this candidate ships.
    return [a for a in report.get("artifacts", []) if a.get("precision") == precision]


def figures(report: Mapping[str, Any], precision: str) -> dict[str, Any]:
    """The candidate's worst-case figures over its ``precision`` artifacts."""
    arts = _shipped(report, precision)
    runs = [m for a in arts for m in [a, *a.get("remote", [])] if "latency_ms" in m]
    accs = [a["accuracy"] for a in arts if a.get("accuracy") is not None]
    return {
        "accuracy": min(accs) if accs and len(accs) == len(arts) else None,
        "p50_ms": max((m["latency_ms"]["p50"] for m in runs), default=None),
        "p95_ms": max((m["latency_ms"]["p95"] for m in runs), default=None),
        "size_bytes": max((a["size_bytes"] for a in arts), default=None),
        "peak_rss_mb": max((m["memory"]["peak_rss_mb"] for m in runs if "memory" in m),
                           default=None),
        "runtimes": sorted(str(a.get("runtime")) for a in arts),
    }


def checks(report: Mapping[str, Any], precision: str, budget: Budget | None, *,
           machine: str, untrained: bool = False) -> list[dict[str, Any]]:
    """Every budget against the candidate's ``precision`` artifacts, as report.json holds
    checks. ``untrained``: only the budgets the weights do not change (size, latency,
    memory). An FP32 candidate ships its FP32 files: they are checked as the shipped ones,
    and the INT8 speed-up budget does not apply to them."""
    if budget is None:
        return []
    if untrained:
        budget = Budget(**{k: v for k, v in budget.to_dict().items() if k in WEIGHT_FREE})
    if precision == "fp32":
        budget = replace(budget, min_int8_speedup=None)
    if budget.empty:
        return []
    ours = {id(a) for a in _shipped(report, precision)}
    if not ours:
        return []
    # The report as if the candidate's precision shipped (budget_checks checks the artifacts
    # marked "shipped"), whatever the build's ship policy chose: the others stay beside
    # them, so that an INT8 candidate's min_int8_speedup finds its FP32 reference.
    view = {**report, "artifacts": [dict(a, shipped=id(a) in ours)
                                    for a in report.get("artifacts", [])]}
    return [c.to_dict() for c in budget_checks(view, budget, machine=machine)]


def broken(found: Sequence[Mapping[str, Any]]) -> list[str]:
    """The budgets broken (each named once, in order)."""
    names: list[str] = []
    for c in found:
        if check_state(c) == BROKEN and c["budget"] not in names:
            names.append(str(c["budget"]))
    return names


def _dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    fa, fb = a["figures"], b["figures"]
    at_least = (fa["accuracy"] >= fb["accuracy"] and fa["p50_ms"] <= fb["p50_ms"]
                and fa["size_bytes"] <= fb["size_bytes"])
    better = (fa["accuracy"] > fb["accuracy"] or fa["p50_ms"] < fb["p50_ms"]
              or fa["size_bytes"] < fb["size_bytes"])
    return at_least and better


def _measured(c: Mapping[str, Any]) -> bool:
    f = c.get("figures") or {}
    return all(f.get(k) is not None for k in ("accuracy", "p50_ms", "size_bytes"))


def pareto(candidates: Sequence[Mapping[str, Any]]) -> list[int]:
    """Numbers of the feasible trained candidates no other feasible one beats on accuracy,
    p50 latency and size at once."""
    pool = [c for c in candidates if c["state"] == FEASIBLE and _measured(c)]
    return [c["number"] for c in pool if not any(_dominates(o, c) for o in pool)]


def winner(candidates: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, str]:
    """The most accurate feasible candidate (ties: faster, then smaller) and a sentence why."""
    feasible = [c for c in candidates if c["state"] == FEASIBLE and _measured(c)]
    failed = [c for c in candidates if c["state"] == FAILED]
    if not feasible:
        stopped = sum(c["state"] == STOPPED for c in candidates)
        rest = len(candidates) - stopped - len(failed)
        return None, ("no candidate is within the budget: "
                      + "; ".join(p for p in (
                          f"{stopped} of {len(candidates)} were over a latency, size or memory "
                          "budget untrained" if stopped else "",
                          f"{rest} broke a budget once trained" if rest else "",
                          _failed(failed))
                          if p) + " (see each candidate's checks)")
    best = min(feasible, key=lambda c: (-c["figures"]["accuracy"], c["figures"]["p50_ms"],
                                        c["figures"]["size_bytes"]))
    acc = best["figures"]["accuracy"]
    why = (f"most accurate of the {len(feasible)} feasible candidate"
           f"{'s' if len(feasible) != 1 else ''} ({100 * acc:.2f}%)")
    better = [c for c in candidates if c["state"] == INFEASIBLE and _measured(c)
              and c["figures"]["accuracy"] > acc]
    if better:
        top = max(better, key=lambda c: c["figures"]["accuracy"])
        why += (f"; the more accurate #{top['number']} ({top['label']}, "
                f"{100 * top['figures']['accuracy']:.2f}%) was over "
                f"{' and '.join(top['broken'])}")
    stopped = [c for c in candidates if c["state"] == STOPPED]
    if stopped:
        why += (f"; {len(stopped)} candidate{'s' if len(stopped) != 1 else ''} "
                f"({'; '.join(c['label'] for c in stopped)}) "
                f"{'were' if len(stopped) != 1 else 'was'} over "
                f"{' and '.join(sorted({b for c in stopped for b in c['broken']}))} "
                "untrained and never trained")
    if failed:
        why += "; " + _failed(failed)
    return best, why


def _failed(failed: Sequence[Mapping[str, Any]]) -> str:
    """``2 candidates (width=4, …; width=8, …) failed to build: <the first one's error>``."""
    if not failed:
        return ""
    n = len(failed)
    return (f"{n} candidate{'s' if n != 1 else ''} ({'; '.join(c['label'] for c in failed)}) "
            f"failed to build (#{failed[0]['number']}: {failed[0].get('error', '')})")


def section(candidates: list[dict[str, Any]], *, study: str, storage: str,
            space: Mapping[str, Any], budget: Budget | None, budget_source: str | None
            ) -> dict[str, Any]:
    """The search summary: ``search.json`` and ``report["search"]``."""
    best, why = winner(candidates)
    trained = sum(bool(c.get("trained")) for c in candidates)
    return {
        "study": study, "storage": storage, "space": dict(space),
        "budget": ({"source": budget_source or "", "limits": budget.to_dict()}
                   if budget is not None else None),
        # The failed candidates apart: they have no figures (report.json's schema lists
        # the states of measured candidates only).
        "candidates": [c for c in candidates if c["state"] != FAILED],
        "failed": [{k: c.get(k) for k in ("number", "label", "params", "error", "seconds")}
                   for c in candidates if c["state"] == FAILED],
        "pareto": pareto(candidates),
        "winner": best["number"] if best else None,
        "why": why,
        "trainings": trained,
        "trainings_saved": sum(c["state"] == STOPPED for c in candidates),
    }
