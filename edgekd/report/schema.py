"""``report.schema.json`` (JSON Schema 2020-12, beside this module) and checking data against it.

:func:`validate_report` lists what is wrong with a report, one ``field: problem`` line each,
in the order the schema meets them. It uses the ``jsonschema`` library when it is installed
(the ``dev`` extra; the tests run it). Without it, a small interpreter of the keywords the
schema uses does the same job, so ``edgekd check`` on a device or a lean CI image still
catches a malformed report; :data:`KEYWORDS` lists those keywords and a test keeps the schema
within them. Both paths word their messages the same way (:func:`_message`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

from edgekd.report.nulls import field_path

SCHEMA_FILE = "report.schema.json"
# Everything the fallback understands; annotations ($schema, title, description) do nothing.
KEYWORDS = frozenset({"$ref", "$defs", "type", "required", "properties",
                      "additionalProperties", "items", "enum", "pattern", "minimum", "maximum",
                      "minItems", "maxItems", "minLength", "anyOf", "oneOf",
                      "$schema", "title", "description"})
MAX_PROBLEMS = 20  # a report broken everywhere: the first few say enough

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,), "array": (list,), "string": (str,), "boolean": (bool,),
    "null": (type(None),), "number": (int, float)}

# (path, keyword, the keyword's value, the offending instance, the schema it failed)
Found = tuple[list[str | int], str, Any, Any, dict[str, Any]]


@functools.lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """The schema, read once from the package (do not modify the returned dict)."""
    text = resources.files("edgekd.report").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)  # type: ignore[no-any-return]


def validate_report(data: Any) -> list[str]:
    """What is wrong with ``data`` as a build report (``[]``: it is valid)."""
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(version, str) and not version.startswith("1."):
        return [f"schema_version: {version!r} is not 1.x: written by another major version "
                "of edgekd; read it with that version"]
    return validate(data, report_schema())


def validate(data: Any, schema: dict[str, Any]) -> list[str]:
    """What is wrong with ``data`` against ``schema`` (the report's or a smaller one)."""
    try:
        found = list(_with_jsonschema(data, schema) if _has_jsonschema()
                     else _walk(data, schema, [], schema))
    except RecursionError:
        return ["(top level): nested too deeply to be a report"]
    return [f"{field_path(at) or '(top level)'}: {_message(kw, value, inst, sch)}"
            for at, kw, value, inst, sch in found[:MAX_PROBLEMS]]


@functools.lru_cache(maxsize=1)
def _has_jsonschema() -> bool:
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        return False
    return True


def _with_jsonschema(data: Any, schema: dict[str, Any]) -> Iterator[Found]:
    from jsonschema import Draft202012Validator

    for e in Draft202012Validator(schema).iter_errors(data):
        at = list(e.absolute_path)
        if e.validator == "required":  # one error per missing key; say which, where it goes
            key = next(k for k in e.validator_value if e.message.startswith(repr(k)))
            yield [*at, key], "required", key, e.instance, e.schema
        else:
            yield at, str(e.validator), e.validator_value, e.instance, e.schema


def _is(v: Any, t: str | list[str]) -> bool:
    for name in [t] if isinstance(t, str) else t:
        if isinstance(v, bool):  # JSON has no 1 == true: a bool is never a number
            if name == "boolean":
                return True
        elif name == "integer":  # 2020-12: a number with no fractional part, 3.0 too
            if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
                return True
        elif isinstance(v, _JSON_TYPES[name]):
            return True
    return False


def _walk(v: Any, schema: dict[str, Any], at: list[str | int], root: dict[str, Any]
          ) -> Iterator[Found]:
    """The fallback: the keywords of :data:`KEYWORDS`, as JSON Schema 2020-12 defines them."""
    if "$ref" in schema:  # only local references: "#/$defs/name"
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        yield from _walk(v, target, at, root)
    if "type" in schema and not _is(v, schema["type"]):
        yield at, "type", schema["type"], v, schema
        return  # the other keywords would only repeat it
    yield from _checks(v, schema, at)
    if isinstance(v, dict):
        yield from _object(v, schema, at, root)
    if isinstance(v, list) and "items" in schema:
        for i, x in enumerate(v):
            yield from _walk(x, schema["items"], [*at, i], root)
    for kw in ("anyOf", "oneOf"):
        if kw in schema:
            ok = sum(not any(True for _ in _walk(v, s, at, root)) for s in schema[kw])
            if ok == 0 or (kw == "oneOf" and ok > 1):
                yield at, kw, schema[kw], v, schema


def _checks(v: Any, schema: dict[str, Any], at: list[str | int]) -> Iterator[Found]:
    if "enum" in schema and not any(v == e and type(v) is type(e) or
                                    _is(v, "number") and _is(e, "number") and v == e
                                    for e in schema["enum"]):
        yield at, "enum", schema["enum"], v, schema
    if isinstance(v, str):
        if "pattern" in schema and not re.search(schema["pattern"], v):
            yield at, "pattern", schema["pattern"], v, schema
        if len(v) < schema.get("minLength", 0):
            yield at, "minLength", schema["minLength"], v, schema
    if _is(v, "number"):
        if "minimum" in schema and v < schema["minimum"]:
            yield at, "minimum", schema["minimum"], v, schema
        if "maximum" in schema and v > schema["maximum"]:
            yield at, "maximum", schema["maximum"], v, schema
    if isinstance(v, list):
        if len(v) < schema.get("minItems", 0):
            yield at, "minItems", schema["minItems"], v, schema
        if "maxItems" in schema and len(v) > schema["maxItems"]:
            yield at, "maxItems", schema["maxItems"], v, schema


def _object(v: dict[str, Any], schema: dict[str, Any], at: list[str | int],
            root: dict[str, Any]) -> Iterator[Found]:
    for key in schema.get("required", []):
        if key not in v:
            yield [*at, key], "required", key, v, schema
    props, extra = schema.get("properties", {}), schema.get("additionalProperties", True)
    for key, x in v.items():
        if key in props:
            yield from _walk(x, props[key], [*at, key], root)
        elif isinstance(extra, dict):
            yield from _walk(x, extra, [*at, key], root)
    if extra is False and any(k not in props for k in v):
        yield at, "additionalProperties", False, v, schema


def _a(t: str | list[str]) -> str:
    names = {"object": "an object", "array": "an array", "string": "a string",
             "boolean": "true or false", "null": "null", "number": "a number",
             "integer": "an integer"}
    return " or ".join(names.get(n, n) for n in ([t] if isinstance(t, str) else t))


def _got(v: Any) -> str:
    """The offending value, short: a report can hold 2,000-sample lists."""
    if v is None or isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return f"a string ({v[:40]!r}{'…' if len(v) > 40 else ''})"
    return "an object" if isinstance(v, dict) else "an array" if isinstance(v, list) else \
        type(v).__name__


def _form(s: dict[str, Any]) -> str:
    if set(s) == {"required"}:
        return "keys " + ", ".join(s["required"])
    return _a(s["type"]) if "type" in s else "another form"


def _message(kw: str, value: Any, inst: Any, schema: dict[str, Any]) -> str:
    """One wording per keyword, whichever validator found it."""
    if kw == "required":
        return "missing"
    if kw == "type":
        return f"must be {_a(value)}, got {_got(inst)}"
    if kw == "additionalProperties":
        extra = [k for k in inst if k not in schema.get("properties", {})]
        return "unknown key(s) " + ", ".join(map(repr, extra))
    if kw == "enum":
        return f"must be one of {', '.join(map(json.dumps, value))}, got {_got(inst)}"
    if kw in ("minimum", "maximum"):
        return f"must be {'>=' if kw == 'minimum' else '<='} {value}, got {_got(inst)}"
    if kw in ("minItems", "maxItems"):
        most = "least" if kw == "minItems" else "most"
        return f"must have at {most} {value} item(s), got {len(inst)}"
    if kw == "pattern":
        return f"{_got(inst)} does not match {value}"
    if kw == "minLength":
        return "must not be empty"
    if kw in ("anyOf", "oneOf"):
        return ("must have " if kw == "anyOf" else "must be exactly one of: ") + " or ".join(
            map(_form, value))
    return f"does not satisfy {kw}"
