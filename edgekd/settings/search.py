"""The project file's ``[search]`` table: what ``edgekd search`` explores.

::

    [search]
    trials = 12                              # candidates evaluated (each trained at most once)
    student_args = { width = [8, 16, 32] }   # per factory argument: a list of choices, or a
                                             # range { low = 8, high = 32, step = 8 }
    prune_sparsity = [0.0, 0.25, 0.5]        # structured pruning ratios (prune.method)
    precision = ["int8", "fp32"]             # the precision shipped
    seed = 0                                 # the sampler's seed

Every key is optional but the table must explore something. Unknown keys are refused with
a did-you-mean; every mistake is one ``ValueError`` line naming ``search.<key>``, which the
project loader prefixes with the file's name. Whether the student's factory takes the
``student_args`` keys is checked by the search itself, once the factory can be imported.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Annotated, Any

from edgekd.settings.typed import OneOf, from_table

PRECISIONS = ("int8", "fp32")
Precision = Annotated[str, OneOf(PRECISIONS, "precision")]
MAX_TRIALS = 10_000
# A range of integers (or of numbers with a step) is expanded into its choices; more than
# this many per argument is a typo (a step of 1 over a width in the thousands).
MAX_CHOICES = 1_000

# One line: messages are one line each.
EXAMPLE = ("[search] with trials = 12, student_args = { width = [8, 16, 32] }, "
           "prune_sparsity = [0.0, 0.25, 0.5], precision = [\"int8\", \"fp32\"]")


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


def _scalar(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) and not (
        isinstance(value, float) and not math.isfinite(value))


def _choices(key: str, value: Any) -> tuple[Any, ...]:
    """The choices of one ``student_args`` entry: a non-empty list of scalars, or a table
    ``{low, high, step}`` (step: default 1 for integers, required for other numbers)."""
    where = f"search.student_args.{key}"
    if isinstance(value, list | tuple):
        _check(len(value) > 0, f"{where} is an empty list: give at least one value, e.g. "
                               f"{key} = [8, 16, 32]")
        _check(all(_scalar(v) for v in value),
               f"{where}: expected numbers, strings or true/false, got {value!r}")
        _check(len(set(value)) == len(value), f"{where} has duplicates: {value!r}")
        return tuple(value)
    if isinstance(value, Mapping):
        unknown = [str(k) for k in value if k not in ("low", "high", "step")]
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}"
                             + _hint(unknown[0], ("low", "high", "step"))
                             + "; a range is { low, high, step }")
        _check("low" in value and "high" in value, f"{where}: a range needs low and high, "
                                                   "e.g. { low = 8, high = 32, step = 8 }")
        low, high = value["low"], value["high"]
        is_int = all(isinstance(v, int) and not isinstance(v, bool)
                     for v in (low, high, value.get("step", 1)))
        step = value.get("step", 1 if is_int else None)
        for name, v in (("low", low), ("high", high), ("step", step)):
            _check(isinstance(v, int | float) and not isinstance(v, bool)
                   and math.isfinite(v), f"{where}.{name}: expected a number, got {v!r}"
                   + ("; a range of non-integers needs a step" if name == "step" else ""))
        _check(low <= high, f"{where}: low ({low}) is above high ({high})")
        _check(step > 0, f"{where}.step must be > 0, got {step}")
        count = int(math.floor((high - low) / step + 1e-9)) + 1
        _check(count <= MAX_CHOICES, f"{where}: the range has {count} values (at most "
                                     f"{MAX_CHOICES}): use a larger step")
        values = [low + i * step for i in range(count)]
        return tuple(int(v) if is_int else round(float(v), 12) for v in values)
    raise ValueError(f"{where}: expected a list of choices or a range table "
                     f"{{ low, high, step }}, got {value!r}")


def _hint(name: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True)
class SearchSpace:
    """The ``[search]`` table, checked: ``student_args`` maps each factory argument to its
    choices (ranges expanded), the rest are lists of choices."""

    trials: int = 12
    student_args: dict[str, Any] = field(default_factory=dict)
    prune_sparsity: tuple[float, ...] = (0.0,)
    precision: tuple[Precision, ...] = ("int8",)
    seed: int = 0

    def __post_init__(self) -> None:
        _check(1 <= self.trials <= MAX_TRIALS,
               f"search.trials must be 1..{MAX_TRIALS}, got {self.trials}")
        _check(0 <= self.seed < 2**32, f"search.seed must be 0..{2**32 - 1}, got {self.seed}")
        args = {k: _choices(k, v) for k, v in self.student_args.items()}
        object.__setattr__(self, "student_args", args)
        for key in ("prune_sparsity", "precision"):
            value = getattr(self, key)
            example = "[0.0, 0.5]" if key == "prune_sparsity" else '["int8", "fp32"]'
            _check(len(value) > 0, f"search.{key} is an empty list: give at least one value, "
                                   f"e.g. {key} = {example}")
            _check(len(set(value)) == len(value), f"search.{key} has duplicates: "
                                                  f"{list(value)!r}")
        for s in self.prune_sparsity:
            _check(0.0 <= s < 1.0, f"search.prune_sparsity: each ratio must be in [0, 1), "
                                   f"got {s}")
        _check(self.size > 1, "[search] explores nothing (one candidate): give several "
                              "choices for student_args, prune_sparsity or precision, e.g. "
                              + EXAMPLE)

    @property
    def size(self) -> int:
        """How many distinct candidates the space holds."""
        n = len(self.prune_sparsity) * len(self.precision)
        for choices in self.student_args.values():
            n *= len(choices)
        return n

    def to_dict(self) -> dict[str, Any]:
        return {"trials": self.trials,
                "student_args": {k: list(v) for k, v in self.student_args.items()},
                "prune_sparsity": list(self.prune_sparsity),
                "precision": list(self.precision), "seed": self.seed}


KEYS = tuple(f.name for f in fields(SearchSpace))


def parse_search(raw: Any) -> SearchSpace | None:
    """The ``[search]`` table (None when the file has none). Raises :class:`ValueError`,
    one line naming the key; an unknown key says which known one it resembles."""
    if raw is None:
        return None
    if isinstance(raw, Mapping):
        for key in raw:
            _check(key in KEYS, f"unknown key 'search.{key}'{_hint(key, KEYS)}; allowed: "
                                f"{', '.join(KEYS)}")
    return from_table(SearchSpace, raw, "search")
