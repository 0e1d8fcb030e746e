"""Units a number is written in wherever edgekd prints it (the CLI, report.md, report.html,
the payoff sentences of :mod:`edgekd.measure.payoff`): one rule, so a latency reads the same
everywhere. Standard library only."""

from __future__ import annotations

import math

# Below this many milliseconds a latency is written in microseconds: "6.52 µs", not "0.00652 ms".
MICROSECONDS_BELOW_MS = 0.1


def three_digits(x: float) -> str:
    """Three significant digits, never an exponent, whole numbers from 100 on: ``6.52``,
    ``94.4``, ``0.142``, ``1234``."""
    if abs(x) >= 99.95:
        return f"{x:.0f}"
    rounded = float(f"{x:.3g}")
    if rounded == 0:
        return "0"
    decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def latency_text(ms: float) -> str:
    """A latency given in milliseconds, with its unit: ``0.00652`` -> ``6.52 µs``,
    ``0.142`` -> ``0.142 ms``, ``12.34`` -> ``12.3 ms``, ``1234.5`` -> ``1234 ms``."""
    if abs(ms) < MICROSECONDS_BELOW_MS:
        return f"{three_digits(ms * 1000)} µs"
    return f"{three_digits(ms)} ms"
