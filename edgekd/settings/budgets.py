"""Budgets a build must meet, and the check that compares a report against them.

A budget is a ``[budget]`` table in a target file or in a separate ``--budget FILE``::

    [budget]
    max_size_kb = 64          # each shipped artifact, KiB on disk (.xml + .bin for OpenVINO)
    max_p95_ms = 2.0          # each shipped artifact, every measurement (host and devices)
    max_peak_rss_mb = 120     # each shipped artifact, every measurement
    max_accuracy_drop = 1.0   # points of test accuracy lost vs the teacher
    min_int8_speedup = 1.0    # FP32 p50 / INT8 p50 on the same runtime and machine
    min_speedup_vs_teacher = 10  # teacher FP32 p50 / deployed student p50, same runtime
                                 # and machine (the headline); needs a build with a teacher

Shipped artifacts are the quantized ones (precision other than fp32); the FP32 artifacts
are references. Every key is optional. The check of a report against a budget is
:mod:`edgekd.report.gate`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edgekd.errors import UsageError
from edgekd.settings.resources import read_text_file
from edgekd.settings.typed import from_table


@dataclass(frozen=True)
class Budget:
    max_size_kb: float | None = None
    max_p95_ms: float | None = None
    max_peak_rss_mb: float | None = None
    max_accuracy_drop: float | None = None
    min_int8_speedup: float | None = None
    min_speedup_vs_teacher: float | None = None

    def __post_init__(self) -> None:
        for key, value in self.to_dict().items():
            if value < 0:
                raise ValueError(f"budget {key} must be >= 0, got {value}")

    def to_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) is not None}

    @property
    def empty(self) -> bool:
        return not self.to_dict()


KEYS = tuple(f.name for f in fields(Budget))
UNITS = {"max_size_kb": "KiB", "max_p95_ms": "ms", "max_peak_rss_mb": "MiB",
         "max_accuracy_drop": "points", "min_int8_speedup": "×",
         "min_speedup_vs_teacher": "×"}


def parse_budget(table: Any, source: str, key: str = "budget") -> Budget:
    """A :class:`Budget` from the TOML table at ``key`` in ``source``; every problem is one
    :class:`UsageError` line naming both."""
    try:
        return from_table(Budget, table, key)
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from exc


def load_budget_file(path: Path) -> Budget:
    try:
        text = read_text_file(path)
    except FileNotFoundError as exc:
        raise UsageError(f"budget file not found: {path}: give the path of a TOML file with a "
                         "[budget] table") from exc
    except ValueError as exc:
        raise UsageError(f"{path} {exc}: --budget takes a TOML file with a [budget] "
                         "table") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: TOML syntax error: {exc}") from exc
    if "budget" not in raw:
        raise UsageError(f"{path}: no [budget] table; keys go under [budget]: {', '.join(KEYS)}")
    return parse_budget(raw["budget"], str(path))
