"""Fuzz the real CLI with random and malformed input; count how each case ends.

Three families, each case one real ``python -m edgekd`` subprocess in a fresh temp project
(a finished 64->8->10 MLP on digits, ``--target x86-cpu``, so an accepted case finishes in
seconds):

* ``settings``: every key edgekd accepts (enumerated from the dataclasses, never by hand), set
  via ``--set key=value`` or in ``edgekd.toml``, to a malformed value;
* ``check``: ``edgekd check`` on a real report.json / ``edgekd bench --json`` file with one
  field path mutated, or with a malformed ``--budget`` file;
* ``data``: broken ``.npz`` / ``.npy`` files, image folders, symlinks, FIFOs and Dataset
  factories as a data split.

Each outcome is one class: ``ok`` (exit 0, accepted legitimately), ``good-error`` (exit 1 or 2,
stderr is exactly one ``error:`` line), ``traceback``, ``hang`` (past ``--timeout``; the whole
process group is killed), ``bad-exit`` (another exit code, error output not one line, or a
child process left behind), ``touched-outside`` (a file created or changed outside the output
folder, or a new entry in ``~``), ``silent-accept`` (exit 0 on a value that is clearly
invalid: NaN/inf, a wrong type, a negative count, a path out of the project).

    python benchmarks/fuzz_bad_input.py --seed 0 --cases 150 --timeout 120
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
import types
import typing
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ("ok", "good-error", "traceback", "hang", "bad-exit", "touched-outside",
           "silent-accept")
BAD = ("traceback", "hang", "bad-exit", "touched-outside", "silent-accept")
FAMILIES = ("settings", "check", "data")
MEMORY_LIMIT = 8 << 30  # address space per case: reading /dev/zero must not take the machine
NOTHING = object()  # "delete this key"


@dataclass
class Outcome:
    family: str
    name: str  # what was fuzzed, e.g. "--set distill.alpha=NaN"
    command: list[str]
    outcome: str
    rc: int | None
    stderr: str
    note: str = ""


@dataclass
class Case:
    """One fuzz case: writes its files into the project folder ``p`` and returns the CLI
    arguments after ``python -m edgekd``. ``invalid``: exit 0 would be a silent accept."""

    family: str
    name: str
    setup: Callable[[Path], list[str]]
    invalid: bool
    verdict_ok: bool = False  # `edgekd check`: exit 1 without an error line is a verdict
    out_also: list[str] = field(default_factory=list)  # more folders the tool may write


# ---------------------------------------------------------------- the keys edgekd accepts

def _kinds(hint: Any) -> set[str]:
    """The value kinds a field annotation accepts: int, float, bool, str, list, dict, none."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        return _kinds(typing.get_args(hint)[0])
    if origin in (typing.Union, types.UnionType):
        return set().union(*(_kinds(a) for a in typing.get_args(hint)))
    if hint is type(None):
        return {"none"}
    if hint is bool:
        return {"bool"}
    if hint is int:
        return {"int"}
    if hint is float:
        return {"int", "float"}
    if hint is str:
        return {"str"}
    if origin in (tuple, list) or hint in (tuple, list):
        return {"list"}
    if origin is dict or hint is dict:
        return {"dict"}
    if dataclasses.is_dataclass(hint):
        return {"dict"}
    return {"int", "float", "bool", "str", "list", "dict", "none"}  # Any


PATH_KEYS = {f"model.{k}" for k in ("student", "student_weights", "teacher", "teacher_weights",
                                    "onnx")} | {f"data.{k}" for k in ("train", "validation",
                                                                      "test", "calibration")}
COUNT_KEYS = ("epochs", "runs", "warmup", "batch_size", "calibration_samples", "frequency",
              "views", "finetune_epochs")


def setting_keys() -> dict[str, set[str]]:
    """Every key edgekd reads from a project file or ``--set``, with the kinds it accepts:
    the build sections from :func:`config_schema`, the project's own keys from the
    dataclasses in ``settings/project.py`` and ``settings/budgets.py``."""
    from edgekd.settings.budgets import Budget
    from edgekd.settings.config import BuildConfig, config_schema
    from edgekd.settings.project import DataSpec, ModelSpec, Project

    keys: dict[str, set[str]] = {}
    build = typing.get_type_hints(BuildConfig, include_extras=True)
    for section, names in config_schema().items():
        if not section:
            for name in names:
                keys[name] = _kinds(build[name])
            continue
        keys[section] = {"dict"}
        hints = typing.get_type_hints(type(getattr(BuildConfig(), section)), include_extras=True)
        for name in names:
            keys[f"{section}.{name}"] = _kinds(hints[name])
    project = typing.get_type_hints(Project, include_extras=True)
    for name in ("target", "out", "runtimes"):
        keys[name] = _kinds(project[name])
    for section, cls in (("model", ModelSpec), ("data", DataSpec), ("budget", Budget)):
        keys[section] = {"dict"}
        for name, hint in typing.get_type_hints(cls, include_extras=True).items():
            keys[f"{section}.{name}"] = _kinds(hint)
    return keys


# ---------------------------------------------------------------- malformed values

def malformed_values(rng: random.Random) -> list[tuple[str, Any]]:
    """(label, value) pairs: wrong types, non-finite and extreme numbers, odd strings and
    paths. Path values name files each case creates (``fifo.npz``) or system files."""
    long = "x" * rng.choice((300, 5000, 100_000))
    nested: Any = 1
    for _ in range(rng.choice((3, 50, 400))):
        nested = [nested]
    return [
        ("string", "abc"), ("numeric string", "5"), ("empty string", ""),
        ("unicode", "ünï©ødé ✓ \u202e 😀"), ("long string", long), ("newline", "a\nb"),
        ("bool", True), ("false", False), ("int", 3), ("zero", 0), ("negative", -1),
        ("negative float", -0.5), ("float", 2.5), ("huge", 10**30), ("huge float", 1e308),
        ("int64 max", 2**63 - 1), ("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf),
        ("list", [1, 2]), ("empty list", []), ("list of strings", ["a", "b"]),
        ("nested list", nested), ("list with nan", [1.0, math.nan]), ("table", {"a": 1}),
        ("empty table", {}), ("null", None),
        ("dotdot path", "../outside/data.npz"), ("etc", "/etc/passwd"),
        ("dev zero", "/dev/zero"), ("fifo", "fifo.npz"), ("folder", "."),
        ("module dotdot", "../outside/m.py:f"),
    ]


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    for kind, cls in (("bool", bool), ("int", int), ("float", float), ("str", str),
                      ("list", list), ("dict", dict)):
        if isinstance(value, cls):
            return kind
    return "other"


def _nonfinite(value: Any) -> bool:
    """Whether a NaN or infinity hides anywhere in ``value`` (a loop, not recursion: the
    malformed values include lists nested 400 deep)."""
    todo = [value]
    while todo:
        v = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            return True
        if isinstance(v, list):
            todo.extend(v)
        elif isinstance(v, dict):
            todo.extend(v.values())
    return False


def clearly_invalid(key: str, kinds: set[str], value: Any) -> bool:
    """Whether exit 0 with ``key = value`` is a silent accept."""
    kind = _kind(value)
    if kind not in kinds or _nonfinite(value):
        return True
    leaf = key.rsplit(".", 1)[-1]
    if kind in ("int", "float") and value < 0 and (leaf in COUNT_KEYS or key.startswith(
            "budget.")):
        return True
    if kind == "str" and key in PATH_KEYS and (value.startswith("/") or ".." in value
                                                 or value in ("", ".")):
        return True
    return kind == "str" and value == "" and key != "out"


# ---------------------------------------------------------------- TOML writing

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise TypeError(value)


def dump_toml(raw: dict[str, Any]) -> str:
    """A TOML document: top-level values, then one ``[table]`` per dict (values ``None``
    are left out: TOML has no null)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))  # the deeply nested lists
    lines = [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in raw.items()
             if v is not None and not isinstance(v, dict)]
    for k, v in raw.items():
        if isinstance(v, dict):
            lines.append(f"\n[{json.dumps(k)}]")
            lines += [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()
                      if vv is not None]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- family (a): settings

def _make_fifo(p: Path, name: str = "fifo.npz") -> None:
    os.mkfifo(p / name)


def _prepare_paths(p: Path, value: Any) -> None:
    if value == "fifo.npz":
        _make_fifo(p)
    outside = p.parent / "outside"
    outside.mkdir(exist_ok=True)
    shutil.copy(p / "data.npz", outside / "data.npz")
    (outside / "m.py").write_text("def f():\n    return None\n")


def settings_case(rng: random.Random, keys: dict[str, set[str]]) -> Case:
    key = rng.choice(sorted(keys))
    label, value = rng.choice(malformed_values(rng))
    via_file = rng.random() < 0.5 or value is NOTHING
    out_also = []
    if key == "out":
        if isinstance(value, str) and value.startswith("/"):
            value = "../elsewhere"  # never let a fuzz case write into /etc
        if isinstance(value, str):
            out_also = [value or "."]
    if via_file and value is None:
        via_file = False  # TOML has no null
    text = json.dumps(value) if not (isinstance(value, str) and rng.random() < 0.5) else \
        str(value)  # a bare --set value that is not JSON is taken as a string
    seen = value  # what edgekd reads: a bare --set value is JSON when it parses ("5" is 5)
    if not via_file:
        try:
            seen = json.loads(text)
        except json.JSONDecodeError:
            seen = text
    invalid = clearly_invalid(key, keys[key], seen)

    def setup(p: Path) -> list[str]:
        _prepare_paths(p, value)
        if not via_file:
            return ["build", "--target", "x86-cpu", "--out", "out", "--set", f"{key}={text}"]
        raw = tomllib.loads((p / "edgekd.toml").read_text())
        *section, leaf = key.split(".")
        node = raw.setdefault(section[0], {}) if section else raw
        if not isinstance(node, dict):
            node = raw[section[0]] = {}
        node[leaf] = value
        (p / "edgekd.toml").write_text(dump_toml(raw))
        args = ["build", "--out", "out"]
        return args if key == "target" else [*args, "--target", "x86-cpu"]

    how = "edgekd.toml" if via_file else "--set"
    return Case("settings", f"{how} {key} = {label} {_short(value)}", setup, invalid,
                out_also=out_also)


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- family (b): edgekd check

def _paths(node: Any, at: tuple = ()) -> Iterator[tuple]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _mutated(doc: Any, path: tuple, value: Any) -> Any:
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    node = doc
    for k in path[:-1]:
        node = node[k]
    if value is NOTHING:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


DEEP = "DEEP"  # replaced by deeply nested brackets in the JSON text
MUTATIONS: list[tuple[str, Any]] = [
    ("delete", NOTHING), ("null", None), ("string", "fast"), ("negative", -1),
    ("nan", math.nan), ("inf", math.inf), ("huge", 1e308), ("huge int", 10**400),
    ("bool", True), ("list", []), ("table", {}), ("deep nesting", DEEP),
]
BUDGET_VALUES: list[tuple[str, str]] = [
    ("nan", "nan"), ("inf", "inf"), ("negative", "-1"), ("string", '"fast"'),
    ("list", "[1, 2]"), ("table", "{a = 1}"), ("bool", "true"), ("huge", "1e308"),
    ("huge int", "9223372036854775807"), ("zero", "0"),
]
GOOD_BUDGET = "[budget]\nmax_size_kb = 1000\nmax_p95_ms = 1000\nmax_accuracy_drop = 50\n"


def _write_json(path: Path, doc: Any, depth: int) -> None:
    text = json.dumps(doc, allow_nan=True)
    if DEEP in text:
        text = text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)
    path.write_text(text)


# The mutations that keep a field's kind (a number stays a number, ...): any other is a
# wrong type. null is left out: optional fields are null in real reports.
SAME_KIND = {"number": {"negative", "huge", "huge int", "null", "delete"},
             "bool": {"bool", "null", "delete"}, "str": {"string", "null", "delete"},
             "list": {"list", "null", "delete"}, "dict": {"table", "null", "delete"}}


def _wrong_kind(original: Any, label: str) -> bool:
    kind = ("bool" if isinstance(original, bool) else "number"
            if isinstance(original, int | float) else "str" if isinstance(original, str)
            else "list" if isinstance(original, list) else "dict"
            if isinstance(original, dict) else None)
    return kind is not None and label not in SAME_KIND[kind]


def check_case(rng: random.Random, report: dict, bench: dict) -> Case:
    kind = rng.choices(("report", "bench", "budget", "file"), (5, 2, 2, 1))[0]
    if kind in ("report", "bench"):
        doc = report if kind == "report" else bench
        path = rng.choice(list(_paths(doc)))
        label, value = rng.choice(MUTATIONS)
        depth = rng.choice((100, 2000, 100_000))
        if not path and value is NOTHING:
            value = {}
        original = doc
        for k in path:
            original = original[k]
        invalid = label in ("nan", "inf") or path == () or _wrong_kind(original, label)

        def setup(p: Path) -> list[str]:
            _write_json(p / "r.json", _mutated(doc, path, value), depth)
            (p / "budget.toml").write_text(GOOD_BUDGET)
            return ["check", "r.json", "--budget", "budget.toml"]

        where = "/".join(str(k) for k in path) or "<root>"
        return Case("check", f"{kind}.json {where}: {label}", setup, invalid, verdict_ok=True)
    if kind == "budget":
        key = rng.choice(["max_size_kb", "max_p95_ms", "max_peak_rss_mb", "max_accuracy_drop",
                          "min_int8_speedup", "unknown_key"])
        label, text = rng.choice(BUDGET_VALUES)

        def setup(p: Path) -> list[str]:
            (p / "r.json").write_text(json.dumps(report))
            (p / "budget.toml").write_text(f"[budget]\n{key} = {text}\n")
            return ["check", "r.json", "--budget", "budget.toml"]

        invalid = label not in ("huge", "huge int", "zero") or key == "unknown_key"
        return Case("check", f"--budget {key} = {label}", setup, invalid, verdict_ok=True)
    files = {
        "empty report": (b"", "r"), "garbage report": (os.urandom(64), "r"),
        "non-utf8 report": (b'{"a": "\xff\xfe"}', "r"), "json list": (b"[1, 2]", "r"),
        "json string": (b'"report"', "r"), "empty budget": (b"", "b"),
        "garbage budget": (os.urandom(64), "b"), "budget no table": (b"max_p95_ms = 1\n", "b"),
        "budget not a table": (b"budget = 5\n", "b"), "fifo report": (None, "r"),
        "fifo budget": (None, "b"), "folder report": (b"dir", "r"),
        "dev zero budget": (b"/dev/zero", "b"), "missing report": (b"missing", "r"),
    }
    label = rng.choice(sorted(files))
    data, which = files[label]

    def setup(p: Path) -> list[str]:
        (p / "r.json").write_text(json.dumps(report))
        (p / "budget.toml").write_text(GOOD_BUDGET)
        target = p / ("r.json" if which == "r" else "budget.toml")
        target.unlink()
        name = target.name
        if data is None:
            os.mkfifo(target)
        elif data == b"dir":
            target.mkdir()
        elif data == b"/dev/zero":
            name = "/dev/zero"
        elif data != b"missing":
            target.write_bytes(data)
        report_arg, budget_arg = ("r.json", name) if which == "b" else (name, "budget.toml")
        return ["check", report_arg, "--budget", budget_arg]

    return Case("check", f"file: {label}", setup, True, verdict_ok=True)


# ---------------------------------------------------------------- family (c): data sources

def _npz(p: Path, name: str, **arrays: Any) -> str:
    import numpy as np

    np.savez(p / name, **arrays)
    return name


def _png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "L") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size).save(path)


def _huge_png(path: Path) -> None:
    """A PNG whose header claims 100000 x 100000 pixels (a few hundred bytes on disk)."""
    import struct
    import zlib

    path.parent.mkdir(parents=True, exist_ok=True)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(
            ">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                     chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def _images(p: Path, bad: Callable[[Path], None]) -> str:
    """A folder of two classes of good 8x8 gray images, plus one bad entry from ``bad``."""
    for c in ("a", "b"):
        for i in range(6):
            _png(p / "imgs" / c / f"{i}.png")
    bad(p / "imgs" / "a")
    return "imgs"


def _npz_cases() -> dict[str, tuple[Callable[[Path], str], bool]]:
    import numpy as np

    def x(n: int = 40) -> Any:
        from tests.projects import digits

        return digits(n)

    def trunc(p: Path) -> str:
        _npz(p, "t.npz", x=x()[0], y=x()[1])
        data = (p / "t.npz").read_bytes()
        (p / "t.npz").write_bytes(data[:len(data) // 3])
        return "t.npz"

    def trunc_npy(p: Path) -> str:
        np.save(p / "t.npy", x()[0])
        data = (p / "t.npy").read_bytes()
        (p / "t.npy").write_bytes(data[:len(data) // 2])
        return "t.npy"

    def npy(arr: Any) -> Callable[[Path], str]:
        def make(p: Path) -> str:
            np.save(p / "a.npy", arr, allow_pickle=True)
            return "a.npy"
        return make

    def nan_x(p: Path) -> str:
        xs, ys = x()
        xs[3, 0, 2, 2] = np.nan
        return _npz(p, "n.npz", x=xs, y=ys)

    def raw(data: bytes, name: str = "r.npz") -> Callable[[Path], str]:
        def make(p: Path) -> str:
            (p / name).write_bytes(data)
            return name
        return make

    xs, ys = x()
    obj = np.empty(4, dtype=object)
    obj[:] = [np.zeros((1, 8, 8)), "a", None, {"x": 1}]
    return {
        "npz x int8": (lambda p: _npz(p, "d.npz", x=xs.astype(np.int8), y=ys), False),
        "npz x complex": (lambda p: _npz(p, "d.npz", x=xs.astype(np.complex64), y=ys), True),
        "npz x strings": (lambda p: _npz(p, "d.npz", x=xs.astype(str), y=ys), True),
        "npz x bool": (lambda p: _npz(p, "d.npz", x=xs > 4, y=ys), False),
        "npz x object": (lambda p: _npz(p, "d.npz", x=obj, y=ys[:4]), True),
        "npz y float": (lambda p: _npz(p, "d.npz", x=xs, y=ys + 0.5), True),
        "npz y negative": (lambda p: _npz(p, "d.npz", x=xs, y=-ys - 1), True),
        "npz y huge": (lambda p: _npz(p, "d.npz", x=xs, y=ys + 10**12), True),
        "npz y 2-D": (lambda p: _npz(p, "d.npz", x=xs, y=np.stack([ys, ys], 1)), True),
        "npz y short": (lambda p: _npz(p, "d.npz", x=xs, y=ys[:5]), True),
        "npz x 1-D": (lambda p: _npz(p, "d.npz", x=xs.reshape(-1), y=ys), True),
        "npz x scalar": (lambda p: _npz(p, "d.npz", x=np.float32(1), y=ys), True),
        "npz x wrong shape": (lambda p: _npz(p, "d.npz", x=np.zeros((40, 3, 5, 5), np.float32),
                                             y=ys), True),
        "npz x 6-D": (lambda p: _npz(p, "d.npz", x=xs[:, None, None], y=ys), False),  # Flatten
        "npz x nan": (nan_x, True),
        "npz x inf": (lambda p: _npz(p, "d.npz", x=np.full_like(xs, np.inf), y=ys), True),
        "npz empty": (lambda p: _npz(p, "d.npz", x=xs[:0], y=ys[:0]), True),
        "npz no x": (lambda p: _npz(p, "d.npz", images=xs, y=ys), True),
        "npz no arrays": (lambda p: _npz(p, "d.npz"), True),
        "npz truncated": (trunc, True),
        "npz zero bytes": (raw(b""), True),
        "npz garbage": (raw(os.urandom(300)), True),
        "npz is a npy": (lambda p: (np.save(p / "d.npy", xs), (p / "d.npy").rename(
            p / "d.npz"), "d.npz")[-1], False),
        "npy truncated": (trunc_npy, True),
        "npy object": (npy(obj), True),
        "npy strings": (npy(np.array(["a", "b"])), True),
        "npy empty": (npy(np.zeros((0, 1, 8, 8), np.float32)), True),
        "npy nan": (npy(np.full((10, 1, 8, 8), np.nan, np.float32)), True),
        "npy float16": (npy(xs.astype(np.float16)), False),
        "npy uint64": (npy(xs.astype(np.uint64)), False),
        "npy huge header": (raw(b"\x93NUMPY\x01\x00" + b"\xff\xff" + b" " * 100, "h.npy"),
                            True),
        "npy zero bytes": (raw(b"", "z.npy"), True),
        "npy claims huge shape": (raw(b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', "
                                      b"'fortran_order': False, 'shape': (100000000000, 1, 8,"
                                      b" 8), }" + b" " * 40 + b"\n", "big.npy"), True),
        "wrong suffix": (raw(b"hello", "d.csv"), True),
    }


def _image_cases() -> dict[str, tuple[Callable[[Path], str], bool]]:
    def text_png(d: Path) -> None:
        (d / "x.png").write_text("not an image")

    def zero_png(d: Path) -> None:
        (d / "z.png").write_bytes(b"")

    def trunc_png(d: Path) -> None:
        _png(d / "t.png", (32, 32))
        data = (d / "t.png").read_bytes()
        (d / "t.png").write_bytes(data[:len(data) // 2])

    def mode(m: str, suffix: str = ".png") -> Callable[[Path], None]:
        return lambda d: _png(d / f"m{suffix}", (8, 8), m)

    def link_etc(d: Path) -> None:
        (d / "passwd.png").symlink_to("/etc/passwd")

    def fifo_png(d: Path) -> None:
        os.mkfifo(d / "f.png")

    def subdir(d: Path) -> None:
        _png(d / "deeper" / "x.png")

    def link_loop(d: Path) -> None:
        (d / "loop").symlink_to(d)

    def dangling(d: Path) -> None:
        (d / "gone.png").symlink_to(d / "missing.png")

    def link_outside(p: Path) -> str:
        outside = p.parent / "outside"
        _images(outside, lambda d: None)
        (p / "linked").symlink_to(outside / "imgs")
        return "linked"

    def empty(p: Path) -> str:
        (p / "empty").mkdir()
        return "empty"

    def one_class(p: Path) -> str:
        for i in range(4):
            _png(p / "one" / "only" / f"{i}.png")
        return "one"

    def flat(p: Path) -> str:
        for i in range(4):
            _png(p / "flat" / f"{i}.png")
        return "flat"

    def img(bad: Callable[[Path], None]) -> Callable[[Path], str]:
        return lambda p: _images(p, bad)

    return {
        "image: text named .png": (img(text_png), True),
        "image: zero-byte png": (img(zero_png), True),
        "image: truncated png": (img(trunc_png), True),
        "image: huge dimensions": (img(lambda d: _huge_png(d / "huge.png")), True),
        "image: CMYK jpeg": (img(mode("CMYK", ".jpg")), False),
        "image: 16-bit": (img(mode("I;16")), False),
        "image: RGBA": (img(mode("RGBA")), False),
        "image: palette": (img(mode("P")), False),
        "image: 1-bit": (img(mode("1")), False),
        "image: float tiff": (img(mode("F", ".tif")), False),
        "image: other size": (img(lambda d: _png(d / "big.png", (40, 13))), False),
        "image: symlink to /etc/passwd": (img(link_etc), True),
        "image: fifo named .png": (img(fifo_png), True),
        "image: nested folder": (img(subdir), False),
        "image: symlink loop": (img(link_loop), False),
        "image: dangling symlink": (img(dangling), True),
        "image folder: symlink out of project": (link_outside, False),
        "image folder: empty": (empty, True),
        "image folder: one class": (one_class, False),
        "image folder: no class folders": (flat, False),
    }


FACTORIES = {
    "raises": ("def f():\n    raise RuntimeError('boom')\n", True),
    "returns None": ("def f():\n    return None\n", True),
    "returns int": ("def f():\n    return 5\n", True),
    "returns strings": ("def f():\n    return ['a', 'b']\n", True),
    "getitem raises": ("class D:\n    def __len__(self):\n        return 10\n"
                       "    def __getitem__(self, i):\n        raise KeyError(i)\n"
                       "def f():\n    return D()\n", True),
    "wrong shape": ("import torch\ndef f():\n    return [(torch.zeros(3, 5), 0)] * 20\n", True),
    "empty": ("def f():\n    return []\n", True),
    "dict samples": ("import torch\ndef f():\n    return [{'x': torch.zeros(1, 8, 8)}] * 20\n",
                     True),
    "nan samples": ("import torch\ndef f():\n    return [(torch.full((1, 8, 8), float('nan')),"
                    " 0)] * 20\n", True),
    "label out of range": ("import torch\ndef f():\n    return [(torch.zeros(1, 8, 8), 99)] "
                           "* 20\n", True),
    "negative len": ("class D:\n    def __len__(self):\n        return -1\n"
                     "    def __getitem__(self, i):\n        raise IndexError(i)\n"
                     "def f():\n    return D()\n", True),
    "not callable": ("f = 5\n", True),
    "takes arguments": ("def f(a, b):\n    return []\n", True),
    "syntax error": ("def f(:\n", True),
    "exits": ("import sys\ndef f():\n    sys.exit(0)\n", True),
}


def data_case(rng: random.Random) -> Case:
    kind = rng.choices(("npz", "image", "factory", "path"), (4, 3, 2, 1))[0]
    split = rng.choice(("test", "calibration", "train"))
    if kind == "npz":
        label = rng.choice(sorted(_npz_cases()))
        make, invalid = _npz_cases()[label]
    elif kind == "image":
        label = rng.choice(sorted(_image_cases()))
        make, invalid = _image_cases()[label]
    elif kind == "factory":
        label = rng.choice(sorted(FACTORIES))
        code, invalid = FACTORIES[label]

        def make(p: Path) -> str:
            (p / "data_factory.py").write_text(code)
            return "data_factory.py:f"
        label = f"factory {label}"
    else:
        which = rng.choice(("fifo", "dev zero", "etc", "dotdot", "dotdot symlink", "folder"))

        def make(p: Path) -> str:
            if which == "fifo":
                _make_fifo(p)
                return "fifo.npz"
            if which == "dotdot symlink":
                (p / "escape.npz").symlink_to(p.parent / "outside" / "data.npz")
                return "escape.npz"
            return {"dev zero": "/dev/zero", "etc": "/etc/passwd",
                    "dotdot": "../outside/data.npz", "folder": "."}[which]
        invalid = which != "dotdot symlink"
        label = f"path {which}"

    def setup(p: Path) -> list[str]:
        _prepare_paths(p, None)
        source = make(p)
        raw = tomllib.loads((p / "edgekd.toml").read_text())
        if split == "train":
            raw["data"] = {"train": source}
        else:
            raw["data"][split] = source
        if source.endswith(("imgs", "linked", "empty", "one", "flat")) and split != "train":
            raw["data"]["image_size"] = [8, 8]
        (p / "edgekd.toml").write_text(dump_toml(raw))
        return ["build", "--target", "x86-cpu", "--out", "out"]

    return Case("data", f"data.{split} = {label}", setup, invalid)


# ---------------------------------------------------------------- running one case

def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _snapshot(root: Path, skip: list[Path]) -> dict[str, tuple]:
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        for name in [*dirnames, *filenames]:
            path = here / name
            try:
                st = path.lstat()
            except OSError:
                continue
            kind = "d" if path.is_dir() and not path.is_symlink() else "f"
            found[str(path.relative_to(root))] = (kind, st.st_size if kind == "f" else 0,
                                                  st.st_mtime_ns if kind == "f" else 0)
    return found


def _home() -> set[str]:
    home = Path.home()
    return {p.name for p in home.iterdir()} if home.is_dir() else set()


def run_case(case: Case, template: Path, work: Path, timeout: float) -> Outcome:
    """Run one case in a fresh copy of the template project under ``work``."""
    folder = Path(tempfile.mkdtemp(prefix="case-", dir=work))
    p = folder / "p"
    shutil.copytree(template, p, symlinks=True)
    args = case.setup(p)
    command = [sys.executable, "-m", "edgekd", *args]
    skip = [p / "out", *(((p / o).resolve()) for o in case.out_also)]
    before, home_before = _snapshot(folder, skip), _home()
    env = {**os.environ, "COLUMNS": "200", "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS",
                                                                          "")}
    proc = subprocess.Popen(command, cwd=p, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env,
                            preexec_fn=_limit_memory)
    note = ""
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        timed_out = True
    try:  # anything still in the group outlived the command
        os.killpg(proc.pid, 0)
        os.killpg(proc.pid, signal.SIGKILL)
        note = "a child process was left behind"
    except ProcessLookupError:
        pass
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    changed = _diff(before, _snapshot(folder, skip))
    changed += [f"~/{n}" for n in sorted(_home() - home_before)]
    outcome = classify(case, proc.returncode, stdout, stderr, timed_out, changed, note)
    if changed:
        note = (note + "; " if note else "") + "touched: " + ", ".join(changed[:5])
    shutil.rmtree(folder, ignore_errors=True)
    return Outcome(case.family, case.name, command[2:], outcome,
                   None if timed_out else proc.returncode, stderr or stdout[-2000:], note)


def _diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return sorted(k for k in after.keys() | before.keys() if before.get(k) != after.get(k))


def classify(case: Case, rc: int, stdout: str, stderr: str, timed_out: bool,
             changed: list[str], note: str = "") -> str:
    if timed_out:
        return "hang"
    if changed:
        return "touched-outside"
    if "Traceback (most recent call last)" in stdout + stderr:
        return "traceback"
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    verdict = case.verdict_ok and rc == 1 and not errors
    if note or rc not in (0, 1, 2) or (rc != 0 and not verdict and lines != errors[:1]) or \
            (rc != 0 and not verdict and len(errors) != 1) or (rc == 0 and errors):
        return "bad-exit"
    if rc == 0 or verdict:
        return "silent-accept" if case.invalid else "ok"
    return "good-error"


# ---------------------------------------------------------------- the run

def make_template(work: Path) -> Path:
    from tests.test_bad_input import finished

    template = work / "template"
    finished(template)
    return template


def build_reports(template: Path, work: Path) -> tuple[dict, dict]:
    """A real report.json of the tiny project and a real ``edgekd bench --json`` file."""
    p = work / "reports"
    shutil.copytree(template, p)
    run = [sys.executable, "-m", "edgekd"]
    subprocess.run([*run, "build", "--target", "x86-cpu", "--out", "out"], cwd=p, check=True,
                   capture_output=True, timeout=600)
    subprocess.run([*run, "bench", "out/x86-cpu/student_int8.onnx", "--json", "bench.json",
                    "--warmup", "1", "--runs", "10", "--seconds", "0.1"], cwd=p, check=True,
                   capture_output=True, timeout=600)
    return (json.loads((p / "out" / "x86-cpu" / "report.json").read_text()),
            json.loads((p / "bench.json").read_text()))


def generate(family: str, n: int, seed: int, reports: tuple[dict, dict] | None = None
             ) -> list[Case]:
    rng = random.Random(f"{seed}-{family}")
    if family == "settings":
        keys = setting_keys()
        return [settings_case(rng, keys) for _ in range(n)]
    if family == "check":
        assert reports is not None
        return [check_case(rng, *reports) for _ in range(n)]
    return [data_case(rng) for _ in range(n)]


def fuzz(families: tuple[str, ...] = FAMILIES, cases: int = 40, seed: int = 0,
         timeout: float = 120.0, work: Path | None = None,
         progress: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Run ``cases`` cases of each family; every outcome, in order."""
    own = work is None
    work = Path(tempfile.mkdtemp(prefix="edgekd-fuzz-")) if work is None else work
    try:
        template = make_template(work)
        reports = build_reports(template, work) if "check" in families else None
        outcomes = []
        planned = [generate(f, cases, seed, reports) for f in families]
        for i in range(cases):  # round-robin: the first n rounds are the same for every n
            for family in planned:
                outcomes.append(run_case(family[i], template, work, timeout))
                if progress:
                    progress(outcomes[-1])
        return outcomes
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)


def table(outcomes: list[Outcome]) -> str:
    counts = Counter((o.family, o.outcome) for o in outcomes)
    families = [f for f in FAMILIES if any(o.family == f for o in outcomes)]
    rows = [f"| family | {' | '.join(CLASSES)} | total |",
            "|---" * (len(CLASSES) + 2) + "|"]
    for f in [*families, "all"]:
        cells = [sum(v for (fam, c), v in counts.items() if c == cls and f in (fam, "all"))
                 for cls in CLASSES]
        rows.append(f"| {f} | {' | '.join(map(str, cells))} | {sum(cells)} |")
    return "\n".join(rows)


def describe(o: Outcome, lines: int = 4) -> str:
    tail = "\n".join("    " + line for line in o.stderr.strip().splitlines()[-lines:])
    extra = f"\n    ({o.note})" if o.note else ""
    return (f"[{o.outcome}] {o.family}: {o.name}\n  $ edgekd {' '.join(o.command[1:])}"
            f"  (exit {o.rc})\n{tail}{extra}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", type=int, default=40, help="cases per family")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    parser.add_argument("--family", choices=FAMILIES, action="append",
                        help="only this family (repeatable)")
    parser.add_argument("--all-bad", action="store_true", help="print every bad case, not "
                                                               "only the first of each class")
    args = parser.parse_args()
    start = time.monotonic()

    def progress(o: Outcome) -> None:
        mark = "!" if o.outcome in BAD else "."
        print(f"{mark} {o.outcome:15s} {o.family}: {o.name}", flush=True)

    outcomes = fuzz(tuple(args.family or FAMILIES), args.cases, args.seed, args.timeout,
                    progress=progress)
    print(f"\n{len(outcomes)} cases, seed {args.seed}, {time.monotonic() - start:.0f} s\n")
    print(table(outcomes))
    shown: set[str] = set()
    for o in outcomes:
        if o.outcome in BAD and (args.all_bad or o.outcome not in shown):
            shown.add(o.outcome)
            print("\n" + describe(o))


if __name__ == "__main__":
    main()
