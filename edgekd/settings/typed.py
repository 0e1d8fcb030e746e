"""The one check every settings table goes through: field annotations as the schema.

A settings dataclass (:class:`~edgekd.settings.config.BuildConfig` and its sections, the
project file's ``[model]`` / ``[data]`` / ``target`` / ``out`` / ``runtimes``, a
:class:`~edgekd.settings.targets.Target`, a :class:`~edgekd.settings.budgets.Budget`)
declares its fields' types; :func:`from_table` reads them with :func:`typing.get_type_hints`
and turns a raw TOML or JSON table into an instance: unknown keys are refused with the
allowed ones, each value is checked and converted (lists to tuples, integers to floats) and
every mismatch is one line naming the dotted key::

    prune.sparsity: expected a number, got '0.5' (str)

Understood annotations: ``int`` (not ``bool``), ``float`` (finite; integers accepted),
``bool``, ``str``, ``Any``, ``X | Y`` and ``X | None``, ``tuple[T, ...]``, ``tuple[A, B]``,
``dict[str, Any]``, nested dataclasses (sections) and ``Annotated[str, OneOf(VALUES)]`` for a
closed set of names. Ranges and rules between fields stay in each class's ``__post_init__``,
which runs on the converted values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Mapping, Sequence
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, get_args, get_origin

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T", bound="DataclassInstance")

# Longest value repr quoted in a message: a message stays one readable line.
_MAX_SHOWN = 60


@dataclasses.dataclass(frozen=True)
class OneOf:
    """``Annotated[str, OneOf(VALUES, "noun")]``: the value must be one of ``VALUES``."""

    values: tuple[str, ...]
    noun: str = "value"


class _Mismatch(ValueError):
    """A value of the wrong type. ``specific``: it had the right shape for the annotation but
    was still wrong (a non-finite number, a list of the wrong length), which makes it the
    message worth showing when every alternative of a union fails."""

    def __init__(self, key: str, expected: str, value: Any, *, specific: bool = False) -> None:
        where = f"{key}: " if key else ""
        super().__init__(f"{where}expected {expected}, got {_show(value)}")
        self.key = key
        self.specific = specific


def _show(value: Any) -> str:
    text = repr(value)
    if len(text) > _MAX_SHOWN:
        text = text[:_MAX_SHOWN - 3] + "..."
    return f"{text} ({type(value).__name__})"


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _is_union(hint: Any) -> bool:
    return get_origin(hint) in (typing.Union, types.UnionType)


# Words for the scalar annotations: (one, several).
_NOUNS: dict[Any, tuple[str, str]] = {
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    bool: ("true or false", "true/false values"),
    str: ("a string", "strings"),
    dict: ("a table", "tables"),
    Any: ("anything", "values"),
}


def describe(hint: Any, plural: bool = False) -> str:
    """What ``hint`` expects, in words: ``a list of numbers``, ``a number or a list of
    numbers``, ``a table``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        return describe(args[0], plural)
    if _is_union(hint):
        return " or ".join(describe(a, plural) for a in args if a is not type(None))
    if origin is tuple:
        head = "lists" if plural else "a list"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"{head} of {describe(args[0], plural=True)}"
        if len(set(args)) == 1:
            return f"{head} of {len(args)} {describe(args[0], plural=True)}"
        return f"{head} of {len(args)} items ({', '.join(describe(a) for a in args)})"
    if origin is dict or dataclasses.is_dataclass(hint):
        hint = dict
    one, several = _NOUNS.get(hint, (f"a {hint!r}", f"{hint!r} values"))
    return several if plural else one


def _int(value: Any, key: str) -> int:
    # bool is a subclass of int, and `true` for a count is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Mismatch(key, "an integer", value)
    return value


def _float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Mismatch(key, "a number", value)
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    # NaN passes every `>= 0` range check and inf makes loops endless: refuse both here.
    if not math.isfinite(number):
        raise _Mismatch(key, "a finite number", value, specific=True)
    return number


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise _Mismatch(key, "true or false", value)
    return value


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise _Mismatch(key, "a string", value)
    return value


_SCALARS = {int: _int, float: _float, bool: _bool, str: _str}


def convert(value: Any, hint: Any, key: str) -> Any:
    """``value`` (from TOML or JSON) checked against ``hint`` and converted: lists become
    tuples, integers floats, tables dataclasses. Raises :class:`ValueError` with one line
    that names ``key``."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Annotated:
        choices = [m for m in args[1:] if isinstance(m, OneOf)]
        try:
            value = convert(value, args[0], key)
        except _Mismatch as exc:  # a number where a choice goes: name the choices too
            if not choices:
                raise
            raise _Mismatch(key, f"one of {', '.join(choices[0].values)}", value,
                            specific=True) from exc
        for choice in choices:
            if value not in choice.values:
                close = difflib.get_close_matches(str(value), choice.values, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise ValueError(f"{key}: unknown {choice.noun} {value!r}; {hint}allowed: "
                                 f"{', '.join(choice.values)}")
        return value
    if _is_union(hint):
        return _union(value, hint, key)
    if origin is tuple:
        return _tuple(value, hint, key)
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _Mismatch(key, "a table", value)
        return dict(value)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return from_table(hint, value, key)
    if hint is Any:
        return value
    if hint in _SCALARS:
        return _SCALARS[hint](value, key)
    # A settings class used an annotation this module does not know: a bug, not user input.
    raise TypeError(f"{key}: no check for the annotation {hint!r} (edgekd.settings.typed)")


def _union(value: Any, hint: Any, key: str) -> Any:
    args = get_args(hint)
    options = [a for a in args if a is not type(None)]
    if value is None and len(options) < len(args):
        return None
    if len(options) == 1:
        return convert(value, options[0], key)
    failures: list[_Mismatch] = []
    for option in options:
        try:
            return convert(value, option, key)
        except _Mismatch as exc:
            failures.append(exc)
    # The alternative whose shape the value had (its element was wrong, or it was inf) says
    # more than "expected a number or a list of numbers".
    specific = [e for e in failures if e.specific or e.key != key]
    raise specific[0] if specific else _Mismatch(key, describe(hint), value)


def _tuple(value: Any, hint: Any, key: str) -> tuple[Any, ...]:
    args = get_args(hint)
    # TOML and JSON give lists; a string is a sequence too, but never a list of things.
    if not isinstance(value, list | tuple):
        raise _Mismatch(key, describe(hint), value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise _Mismatch(key, describe(hint), value, specific=True)
    pairs = enumerate(zip(value, args, strict=True))
    return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in pairs)


@cache
def hints(cls: type) -> dict[str, Any]:
    """``cls``'s field annotations, resolved (the settings modules use postponed
    annotations, so they are strings until asked for)."""
    return typing.get_type_hints(cls, include_extras=True)


def check_keys(table: Mapping[str, Any], allowed: Sequence[str], prefix: str = "") -> None:
    """Refuse keys of ``table`` that are not in ``allowed``, listing the allowed ones."""
    unknown = [_join(prefix, k) for k in table if k not in allowed]
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise ValueError(f"unknown key{'s' if len(unknown) > 1 else ''} {names}; allowed: "
                         f"{', '.join(allowed)}")


def convert_fields(cls: type, table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``table``'s values converted to the annotations of ``cls``'s fields of the same name
    (every key of ``table`` must be a field)."""
    declared = hints(cls)
    return {k: convert(v, declared[k], _join(prefix, k)) for k, v in table.items()}


def from_table(cls: type[T], raw: Any, key: str = "", *,
               fixed: Mapping[str, Any] | None = None) -> T:
    """An instance of the dataclass ``cls`` from a TOML / JSON table ``raw`` found at the
    dotted ``key`` (``""`` for a whole file). ``fixed``: fields that do not come from the
    table (a target's name is its file's name); they are not allowed as keys."""
    fixed = dict(fixed or {})
    if not isinstance(raw, Mapping):
        raise _Mismatch(key, "a table", raw)
    own = [f for f in dataclasses.fields(cls) if f.init and f.name not in fixed]
    check_keys(raw, [f.name for f in own], key)
    missing = [f.name for f in own if f.name not in raw
               and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ValueError(f"missing key {_join(key, missing[0])!r}")
    return cls(**convert_fields(cls, raw, key), **fixed)
