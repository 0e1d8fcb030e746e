"""``[inputs.<name>]`` and ``[outputs.<name>]`` of the project file: what one model input
is when the data alone cannot say (a fixed value, carried state, a dtype), and how one
output is verified (a decision threshold, top-1). Checked like every settings section
(:mod:`edgekd.settings.typed`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")
INPUT_KINDS = ("auto", "image", "signal", "tokens", "mask", "values")


@dataclass(frozen=True)
class InputDecl:
    """``[inputs.<name>]``: what one model input is, when the data alone cannot say.

    A data input (one row per sample, from ``[data]``) needs no table, or only ``dtype``
    (``"int64"`` keeps token ids integer; float inputs are preprocessed, integer and bool
    inputs never are) and ``kind`` (image | signal | tokens | mask | values: which
    robustness corruptions apply). ``value`` is fixed for a deployment (a sample rate): fed
    as given with every call. ``zeros = true`` with ``from_output`` is carried state: zeros
    of ``shape`` at the start of a stream, then the named output of the call before;
    without ``from_output`` the zeros are fed with every call (an unused optional input).
    ``batch_axis``: where a state or value gets the batch axis when several samples run at
    once (leave it out for a value fed exactly as given; a finished ONNX model's declared
    shape says it for itself)."""

    value: Any = None
    zeros: bool = False
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    batch_axis: int | None = None
    from_output: str | None = None
    kind: str = "auto"

    def __post_init__(self) -> None:
        _check(not (self.value is not None and self.zeros),
               "give value (a fixed input) or zeros = true (a state), not both")
        _check(self.dtype is None or self.dtype in DTYPES,
               f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        _check(self.kind in INPUT_KINDS,
               f"kind must be one of {', '.join(INPUT_KINDS)}, got {self.kind!r}")
        _check(self.shape is None or all(v >= 1 for v in self.shape),
               f"shape must be whole numbers >= 1, got {self.shape!r}")
        _check(self.from_output is None or self.zeros,
               "from_output is for a state input: add zeros = true (its value at the start "
               "of a stream)")
        _check(self.batch_axis is None or self.batch_axis >= 0,
               f"batch_axis must be >= 0, got {self.batch_axis}")
        if self.value is not None:
            _check(_numeric_value(self.value), "value must be a number, a boolean or a "
                                               f"list of them, got {self.value!r}")

    @property
    def role(self) -> str:
        if self.zeros and self.from_output:
            return "state"
        return "fixed" if self.value is not None or self.zeros else "data"


def _numeric_value(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return bool(value) and all(_numeric_value(v) for v in value)
    return isinstance(value, int | float | bool)


@dataclass(frozen=True)
class OutputDecl:
    """``[outputs.<name>]``: how one model output is verified. ``threshold``: decisions are
    ``output > threshold`` (a detector's probability), and INT8 must keep them
    (``min_decision_agreement``); ``classifier``: compared by top-1 (default: the first
    output of a classification model)."""

    threshold: float | None = None
    classifier: bool | None = None
