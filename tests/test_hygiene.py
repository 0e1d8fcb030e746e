"""Input hygiene of the torch-free commands and the rendered reports (issue 12):
``edgekd check`` refuses any odd file in one line (FIFOs without hanging), a budget at its
limit holds, broken target files are named without breaking the others, report.md escapes
what users and machines write, and every file of a build folder has the same mode."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edgekd.errors import UsageError
from edgekd.report.gate import Check, budget_checks
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.settings.budgets import Budget
from edgekd.settings.targets import all_targets, load_target, load_targets, target_names
from tests.test_budget import REPORT

ROOT = Path(__file__).resolve().parents[1]


def _cli(*args: str) -> tuple[int, list[str]]:
    """The real ``edgekd`` in its own process; a hang fails the test instead of the suite."""
    done = subprocess.run([sys.executable, "-m", "edgekd", *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    return done.returncode, done.stderr.strip().splitlines()


def _json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def _report(change: str) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(REPORT)
    art = data["artifacts"][1]
    if change == "no path":
        del art["path"]
    elif change == "p95 null":
        art["latency_ms"]["p95"] = None
    elif change == "size as string":
        art["size_bytes"] = "1000"
    elif change == "budget as list":
        data["budget"] = [1]
    return data


# (case, setup(tmp) -> (report, budget or None), a fragment of the one line)
def _report_case(change: str, says: str) -> tuple[str, Any, str]:
    return change, lambda d: (_json(d / "r.json", _report(change)), None), says


def _fifo(d: Path) -> Path:
    os.mkfifo(d / "fifo")
    return d / "fifo"


def _budget(d: Path, text: str) -> Path:
    (d / "b.toml").write_text(text)
    return d / "b.toml"


CASES = [
    _report_case("no path", "artifacts[1].path: missing"),
    _report_case("p95 null", "artifacts[1].latency_ms.p95: must be a number, got null"),
    _report_case("size as string", "artifacts[1].size_bytes: must be an integer, got a string"),
    _report_case("budget as list", "budget: must be an object, got an array"),
    ("bench entry {}", lambda d: (_json(d / "b.json", {"benchmarks": [{}]}), None),
     "benchmarks[0].artifact: missing"),
    ("100000 nested lists", lambda d: (_write(d / "deep.json", "[" * 100_000 + "]" * 100_000),
                                       None), "nested too deeply"),
    ("a JSON list", lambda d: (_json(d / "l.json", [REPORT]), None), "not an edgekd report"),
    ("a JSON number", lambda d: (_json(d / "n.json", 3), None), "not an edgekd report"),
    ("NaN in the report", lambda d: (_write(d / "nan.json", json.dumps(REPORT).replace(
        "1024000", "NaN")), None), "NaN is not a JSON number"),
    ("a folder", lambda d: ((d / "dir.json").mkdir() or d / "dir.json", None),
     "is a folder without a report.json"),
    ("not UTF-8", lambda d: (_write(d / "l1.json", '{"x": "\xe9"}', "latin-1"), None),
     "is not UTF-8 text (byte 0xe9"),
    ("a FIFO", lambda d: (_fifo(d), None), "is not a regular file"),
    ("budget nan", lambda d: (_json(d / "r.json", REPORT),
                              _budget(d, "[budget]\nmax_size_kb = nan\n")),
     "budget.max_size_kb: expected a finite number, got nan"),
    ("budget as string", lambda d: (_json(d / "r.json", REPORT),
                                    _budget(d, '[budget]\nmax_size_kb = "64"\n')),
     "budget.max_size_kb: expected a number, got '64'"),
    ("budget a FIFO", lambda d: (_json(d / "r.json", REPORT), _fifo(d)),
     "is not a regular file"),
    ("budget a folder", lambda d: (_json(d / "r.json", REPORT), d), "is a folder, not a file"),
]


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


@pytest.mark.parametrize(("case", "setup", "says"), CASES, ids=[c[0] for c in CASES])
def test_check_refuses_odd_input_in_one_line(tmp_path: Path, case: str, setup: Any,
                                             says: str) -> None:
    report, budget = setup(tmp_path)
    args = ["check", str(report), "--budget", str(budget or _budget(
        tmp_path, "[budget]\nmax_size_kb = 2000\n"))]
    code, err = _cli(*args)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: ") and says in err[0], err


def test_a_budget_exactly_at_its_limit_holds(tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(REPORT)
    data["stages"] = [{"name": "teacher", "accuracy": 0.034}]
    data["artifacts"][1]["accuracy"] = 0.014
    assert 100 * (0.034 - 0.014) == 2.0000000000000004  # what float subtraction gives
    (check,) = budget_checks(data, Budget(max_accuracy_drop=2.0))
    assert check.ok and check.margin == 0.0
    assert not Check("max_accuracy_drop", "m", 2.0001, 2.0).ok  # over is still over
    assert Check("min_int8_speedup", "m", 1.4999999999999998, 1.5).ok
    code, _ = _cli("check", str(_json(tmp_path / "r.json", data)), "--budget",
                   str(_budget(tmp_path, "[budget]\nmax_accuracy_drop = 2.0\n")))
    assert code == 0


GOOD = 'description = "ok"\nruntimes = ["onnxruntime"]\nthreads = 1\n'


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    d = tmp_path / "targets"
    d.mkdir()
    (d / "good.toml").write_text(GOOD)
    (d / "folder.toml").mkdir()
    (d / "dangling.toml").symlink_to(d / "gone.toml")
    (d / "latin.toml").write_bytes(b'description = "caf\xe9"\nruntimes = ["onnxruntime"]\n')
    return d


@pytest.mark.parametrize(("name", "says"), [
    ("folder", "is a folder, not a file"),
    ("dangling", "is a link to"),
    ("latin", "is not UTF-8 text (byte 0xe9"),
])
def test_a_broken_target_file_is_named_and_breaks_no_other(targets: Path, name: str,
                                                           says: str) -> None:
    with pytest.raises(UsageError) as info:
        load_target(name, targets)
    message = str(info.value)
    assert message.startswith(f"target file {targets / name}.toml {says}"), message
    assert "\n" not in message
    assert load_target("good", targets).description == "ok"
    found, broken = load_targets(targets)
    assert [t.name for t in found] == ["good"] and len(broken) == 3
    with pytest.raises(UsageError, match=r"and 2 more broken target file\(s\)"):
        all_targets(targets)
    assert target_names(targets) == ["dangling", "folder", "good", "latin"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file of mode 0000")
def test_an_unreadable_target_file_is_named(targets: Path) -> None:
    (targets / "secret.toml").write_text(GOOD)
    (targets / "secret.toml").chmod(0)
    with pytest.raises(UsageError, match=re.escape(
            f"target file {targets}/secret.toml cannot be opened: Permission denied: make it "
            "a UTF-8 TOML file or remove it")):
        load_target("secret", targets)
    assert load_target("good", targets).description == "ok"


EVIL = "a|b <script>alert(1)</script> & `tick` *star* _under_ [link](x) ~~s~~\n# line two"


def _evil(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with EVIL in every string a user or a machine chose."""
    r: dict[str, Any] = json.loads(json.dumps(report))
    r["target"] = r["target_description"] = r["dataset"]["name"] = EVIL
    r["host"]["machine"] = EVIL
    r["model"] = {"student": f"models.py:{EVIL}", "onnx": EVIL}
    r["flags"] = [EVIL]
    r["nulls"] = [{"field": EVIL, "why": EVIL}]
    for a in r["artifacts"] + r.get("references", []):
        a["path"] = EVIL + a["path"]
        a["runtime_version"] = EVIL
        a["placement"]["how"] = EVIL
        a["placement"]["not_as_intended"] = [{"node": EVIL, "op": EVIL, "ran": EVIL}]
    r["artifacts"][1]["remote"] = [{**copy.deepcopy({k: r["artifacts"][1][k] for k in
                                                     ("latency_ms", "memory")}),
                                    "remote": EVIL, "device": {"model": EVIL}}]
    for row in r.get("payoff", []):
        row["detail"] = EVIL
    r["budget"]["source"] = EVIL
    for c in r["budget"]["checks"]:
        c["subject"] = EVIL
    r["quantization"]["float_layers"] = [EVIL]
    for w in r["quantization"].get("by_runtime", {}).values():
        w["tool"] = w["when"] = EVIL
        w["ignored"] = [EVIL]
    return r


@pytest.mark.parametrize("finished", [False, True], ids=["trained", "finished model"])
def test_report_md_escapes_every_user_string(digits: Any, finished: bool) -> None:
    from tests.test_report import _assemble

    report = _evil(dict(_assemble(digits)))
    if finished:
        report["stages"] = []
    md = render_markdown(report)
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert not any(line.startswith("# line two") for line in md.splitlines())
    assert md.count("\\*star\\*") >= 10  # EVIL was in all of those places
    tables = _table_widths(md)
    assert len(tables) >= 5
    for widths in tables:
        assert set(widths) == {widths[0]}, (widths, md)
    page = render_html(report)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_every_file_of_a_build_folder_has_the_same_mode(tmp_path: Path) -> None:
    """student.safetensors too: safetensors' own writer made it 0600."""
    from tests.test_bad_input import finished

    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--config",
                           str(finished(tmp_path / "p")), "--target", "x86-cpu", "--out",
                           str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    mask = os.umask(0o022)
    os.umask(mask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (out / "x86-cpu").iterdir()
             if p.is_file()}
    assert "student.safetensors" in modes and "report.md" in modes
    assert set(modes.values()) == {oct(0o666 & ~mask)}, modes


def _table_widths(md: str) -> list[list[int]]:
    """For each table in ``md``, the number of cells of each row."""
    tables: list[list[int]] = []
    previous = ""
    for line in md.splitlines():
        if line.startswith("|"):
            cells = len(re.findall(r"(?<!\\)\|", line)) - 1
            if not previous.startswith("|"):
                tables.append([])
            tables[-1].append(cells)
        previous = line
    return tables


def test_every_public_name_is_what_it_names_even_after_every_room_is_imported() -> None:
    """``edgekd.<name>`` is the object ``_PUBLIC`` points at, also once every folder of edgekd
    was imported: importing a sub-package sets an attribute of the same name on ``edgekd``,
    which would hide a public function so named (``edgekd.train`` was the folder, not the
    training loop)."""
    import importlib
    import pkgutil

    import edgekd

    for info in pkgutil.walk_packages(edgekd.__path__, "edgekd."):
        if "._examples" not in info.name and not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    for name in edgekd.__all__:
        if name == "__version__":
            continue
        value = getattr(edgekd, name)
        assert not isinstance(value, type(edgekd)), f"edgekd.{name} is a module"
        module = importlib.import_module(edgekd._PUBLIC[name])
        assert value is getattr(module, edgekd._ALIASES.get(name, name)), name


def test_the_documented_public_api_is_edgekd_all() -> None:
    """docs/python-api.md's "Public API" list names exactly ``edgekd.__all__``."""
    import re

    import edgekd

    text = (Path(__file__).parent.parent / "docs" / "python-api.md").read_text()
    section = text.split("## Public API", 1)[1]
    listed = {n for n in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", section)}
    public = set(edgekd.__all__) - {"__version__"}
    assert public - listed == set(), "public but not documented"
    fields = {"path", "runtime", "precision", "verification", "passed", "problem", "on_progress",
              "checked_on", "reference_accuracy"}
    assert listed - public - fields == set(), "documented but not public"
