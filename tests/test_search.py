"""`edgekd search`: the most accurate student within the budget, on a tiny 3-channel project
with a residual teacher, built in the test. Real builds, real runtimes, a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.projects import QUICK, RESIDUAL_BLOCK
from tests.rgb_data import shapes, write_npz

MODELS = '''
"""A residual teacher and a student whose width is a factory argument."""
''' + RESIDUAL_BLOCK + '''


class Teacher(nn.Module):
    def __init__(self, num_classes=6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU())
        self.block = Block(16, 24)
        self.head = nn.Linear(24, num_classes)

    def forward(self, x):
        return self.head(self.block(self.stem(x)).mean((2, 3)))


def teacher(num_classes=6):
    return Teacher(num_classes)


class Student(nn.Module):
    def __init__(self, num_classes, width):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, width, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def student(num_classes=6, width=8):
    return Student(num_classes, width)
'''

# Widths 4 and 12 fit in 40 KiB; width 96 (83k conv weights, ~85 KiB in INT8) does not.
SEARCH = """
[search]
trials = 3
student_args = { width = [4, 12, 96] }
prune_sparsity = [0.0]
precision = ["int8"]
"""


def project(root: Path, search: str = SEARCH) -> Path:
    x, y = shapes(24, seed=0)
    root.mkdir(parents=True, exist_ok=True)
    write_npz(root / "shapes.npz", x, y)
    (root / "models.py").write_text(MODELS)
    body = textwrap.dedent("""
        target = "x86-cpu"
        [model]
        teacher = "models.py:teacher"
        student = "models.py:student"
        [data]
        train = "shapes.npz"
        mean = [0.2, 0.2, 0.2]
        std = [0.3, 0.3, 0.3]
        scale = 0.00392156862745098
        [budget]
        max_size_kb = 40
        """)
    (root / "edgekd.toml").write_text(body + search + QUICK)
    return root / "edgekd.toml"


def edgekd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgekd", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


def _by_width(section: dict) -> dict[int, dict]:
    return {c["params"]["student_args"]["width"]: c for c in section["candidates"]}


def _check_outcome(section: dict, out: Path) -> None:
    found = _by_width(section)
    assert set(found) == {4, 12, 96}
    wide = found[96]
    # Over the size budget untrained: stopped early, never trained, no training build.
    assert wide["state"] == "stopped early" and wide["trained"] is False
    assert wide["broken"] == ["max_size_kb"] and wide["figures"]["accuracy"] is None
    assert wide["untrained"]["size_bytes"] > 40 * 1024
    assert not (out / ".search" / section["study"] / f"trial-{wide['number']:03d}"
                / "train").exists()
    feasible = [c for c in section["candidates"] if c["state"] == "feasible"]
    assert {c["params"]["student_args"]["width"] for c in feasible} == {4, 12}
    assert all(c["trained"] and c["figures"]["size_bytes"] <= 40 * 1024 for c in feasible)
    best = max(feasible, key=lambda c: (c["figures"]["accuracy"], -c["figures"]["p50_ms"]))
    assert section["winner"] == best["number"]
    assert section["trainings"] == 2 and section["trainings_saved"] == 1
    assert section["why"].startswith("most accurate of the 2 feasible candidates")
    assert "untrained and never trained" in section["why"]
    assert set(section["pareto"]) <= {c["number"] for c in feasible}
    assert best["number"] in section["pareto"]
    # The winner is built into OUT/<target> as a normal build, the summary in its report.
    report = json.loads((out / "x86-cpu" / "report.json").read_text())
    assert report["search"]["winner"] == best["number"]
    search_dir = out / "x86-cpu" / "search"
    assert json.loads((search_dir / "search.json").read_text()) == section
    assert "<svg" in (search_dir / "search.html").read_text()
    assert "Winner: #" in (search_dir / "search.md").read_text()


@pytest.mark.slow
def test_search_stops_the_oversized_candidate_and_builds_the_best(tmp_path: Path) -> None:
    from edgekd.pipeline.api import load
    from edgekd.report.schema import validate_report
    from edgekd.search.api import search

    config = project(tmp_path / "p")
    out = tmp_path / "out"
    result = search("x86-cpu", project=load(config), out=out)
    _check_outcome(result.section, out)
    assert validate_report(json.loads((out / "x86-cpu" / "report.json").read_text())) == []
    # The teacher trained once for the whole search: one teacher stage in the shared cache.
    stages = list((out / ".cache" / "stages").glob("teacher*"))
    assert len(stages) <= 1


def _finished(storage: str, study: str) -> list:
    import optuna
    from optuna.trial import TrialState

    try:
        s = optuna.load_study(study_name=study, storage=storage)
    except KeyError:  # not created yet
        return []
    return [t for t in s.get_trials(states=(TrialState.COMPLETE,)) if "record" in t.user_attrs]


@pytest.mark.slow
def test_search_killed_with_sigkill_resumes_without_retraining(tmp_path: Path) -> None:
    import optuna

    root = tmp_path / "p"
    config = project(root)
    out = tmp_path / "out"
    args = ["search", "-c", str(config), "-o", str(out), "--study", "s",
            "--storage", f"sqlite:///{tmp_path / 'study.db'}", "-q"]
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", *args], cwd=root,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not _finished(storage, "s") and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
            time.sleep(0.2)
        first = _finished(storage, "s")
        assert len(first) == 1
        assert proc.poll() is None  # killed while the next candidate runs
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    study = optuna.load_study(study_name="s", storage=storage)
    assert sum(t.state.name == "RUNNING" for t in study.trials) == 1  # the one it was running

    again = edgekd(*args, cwd=root)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="s", storage=storage)
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and states.count("FAIL") == 1  # the killed one, retried
    kept = [t for t in _finished(storage, "s") if "duplicate_of" not in t.user_attrs]
    # The first trial is kept as it was (measured by the killed process), not retrained.
    assert first[0].number in [t.number for t in kept]
    survivor = next(t for t in kept if t.number == first[0].number)
    assert survivor.user_attrs["pid"] == proc.pid
    assert survivor.user_attrs["record"] == first[0].user_attrs["record"]
    # Three distinct candidates, each measured once.
    keys = [json.dumps(t.params, sort_keys=True) for t in kept]
    assert len(keys) == len(set(keys)) == 3
    section = json.loads((out / "x86-cpu" / "search" / "search.json").read_text())
    _check_outcome(section, out)


# -- bad input: one line, exit 2, nothing written -----------------------------------------------


@pytest.mark.parametrize(("search", "expected"), [
    ("[search]\ntrails = 3\nstudent_args = { width = [4, 8] }\n",
     "unknown key 'search.trails' (did you mean 'trials'?)"),
    ("[search]\nstudent_args = { width = [] }\n",
     "search.student_args.width is an empty list"),
    ("[search]\nstudent_args = { width = [4, 8] }\nprecision = []\n",
     "search.precision is an empty list"),
    ("[search]\nstudent_args = { widht = [4, 8] }\n",
     "takes no argument 'widht' (did you mean 'width'?)"),
    ("", "no [search] table"),
])
def test_search_bad_input(tmp_path: Path, search: str, expected: str) -> None:
    root = tmp_path / "p"
    config = project(root, search)
    before = sorted(p.name for p in root.iterdir())
    done = edgekd("search", "-c", str(config), "-o", str(tmp_path / "out"), cwd=root)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in root.iterdir()) == before


def test_search_space_ranges_and_size() -> None:
    from edgekd.settings.search import parse_search

    space = parse_search({"student_args": {"width": {"low": 8, "high": 32, "step": 8},
                                           "depth": [1, 2]},
                          "prune_sparsity": [0.0, 0.5], "precision": ["int8", "fp32"]})
    assert space is not None
    assert space.student_args["width"] == (8, 16, 24, 32)
    assert space.size == 4 * 2 * 2 * 2
    with pytest.raises(ValueError, match="needs a step"):
        parse_search({"student_args": {"w": {"low": 0.1, "high": 0.5}}})
    with pytest.raises(ValueError, match="explores nothing"):
        parse_search({"student_args": {"w": [8]}})
    with pytest.raises(ValueError, match="unknown precision 'int4'"):
        parse_search({"precision": ["int4", "int8"]})


def test_winner_pareto_and_why() -> None:
    from edgekd.search.outcome import pareto, winner

    def cand(n: int, state: str, acc: float | None, p50: float, size: int,
             broken: list[str] | None = None) -> dict:
        return {"number": n, "label": f"width={n}", "state": state, "broken": broken or [],
                "trained": acc is not None,
                "figures": {"accuracy": acc, "p50_ms": p50, "size_bytes": size}}

    found = [cand(0, "feasible", 0.90, 1.0, 1000), cand(1, "feasible", 0.85, 0.5, 800),
             cand(2, "feasible", 0.80, 0.6, 900),  # beaten by #1 on all three
             cand(3, "infeasible", 0.95, 3.0, 5000, ["max_p95_ms"]),
             cand(4, "stopped early", None, 9.0, 90000, ["max_size_kb"])]
    assert sorted(pareto(found)) == [0, 1]
    best, why = winner(found)
    assert best is not None and best["number"] == 0
    assert why.startswith("most accurate of the 3 feasible candidates (90.00%)")
    assert "the more accurate #3 (width=3, 95.00%) was over max_p95_ms" in why
    assert "1 candidate (width=4) was over max_size_kb untrained and never trained" in why
    none, why = winner(found[3:])
    assert none is None and why.startswith("no candidate is within the budget")


# -- a candidate's precision, a failed candidate, --storage, Ctrl-C ------------------------------


def _report(shipped: str) -> dict:
    """A build's report.json as the checks read it: both files of one runtime, the ship
    policy's choice marked."""
    def art(precision: str, size: int, p50: float) -> dict:
        return {"path": f"student_{precision}.onnx", "runtime": "onnxruntime",
                "precision": precision, "size_bytes": size, "accuracy": 0.9,
                "shipped": precision == shipped,
                "latency_ms": {"p50": p50, "p95": p50}, "memory": {"peak_rss_mb": 50.0}}
    return {"stages": [{"name": "teacher", "accuracy": 0.95}],
            "artifacts": [art("fp32", 40 * 1024, 1.0), art("int8", 12 * 1024, 0.5)]}


@pytest.mark.parametrize("policy", ["int8", "fp32"])
def test_checks_hold_the_candidates_precision_whatever_the_ship_policy(policy: str) -> None:
    from edgekd.search.outcome import broken, checks
    from edgekd.settings.budgets import Budget

    budget = Budget(max_size_kb=16, max_accuracy_drop=10, min_int8_speedup=1.5)
    report = _report(policy)  # what the build's ship policy chose does not matter
    fp32 = checks(report, "fp32", budget, machine="x86_64")
    assert {c["subject"] for c in fp32} == {"student_fp32.onnx"}
    assert broken(fp32) == ["max_size_kb"]  # 40 KiB; the INT8 speed-up is not FP32's budget
    int8 = checks(report, "int8", budget, machine="x86_64")
    assert {c["subject"] for c in int8} == {"student_int8.onnx"}
    assert broken(int8) == []
    speedup = next(c for c in int8 if c["budget"] == "min_int8_speedup")
    assert speedup["measured"] == pytest.approx(2.0)  # against the FP32 file beside it
    untrained = checks(report, "fp32", budget, machine="x86_64", untrained=True)
    assert {c["budget"] for c in untrained} == {"max_size_kb"}


def test_winner_project_ships_the_candidates_precision() -> None:
    from edgekd.search.space import Candidate, ship_policy, winner_project
    from edgekd.settings.config import SHIP_POLICIES
    from edgekd.settings.project import Project, parse_project

    project = parse_project({"model": {"student": "m.py:s", "teacher": "m.py:t"},
                             "data": {"train": "d.npz"}, "ship": "fastest"}, Path("."),
                            "edgekd.toml")
    assert isinstance(project, Project)
    int8 = winner_project(project, Candidate({"width": 4}, 0.0, "int8"))
    assert int8.build.ship == "int8"
    fp32 = winner_project(project, Candidate({"width": 4}, 0.0, "fp32"))
    assert fp32.build.ship == ("fp32" if "fp32" in SHIP_POLICIES else "fastest")
    assert ship_policy("fp32", None) == ("fp32" if "fp32" in SHIP_POLICIES else None)


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:////nonexistent/dir/x.db", "cannot open the SQLite file /nonexistent/dir/x.db"),
    ("foo://bar", "unknown database 'foo'"),
    ("search.db", "is not a database URL"),
    ("postgresql://me@localhost/db", "install psycopg2"),
])
def test_bad_storage_is_one_line(url: str, expected: str) -> None:
    from edgekd.errors import UsageError
    from edgekd.search.study import open_study

    with pytest.raises(UsageError, match="sqlite:///|psycopg2") as caught:
        open_study(url, "s", 0)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


ODD = """
[search]
trials = 2
student_args = { width = [5, 7] }
precision = ["int8"]
"""


def test_failed_candidates_are_recorded_once_and_not_retried(tmp_path: Path) -> None:
    root = tmp_path / "p"
    config = project(root, ODD)
    (root / "models.py").write_text(MODELS + textwrap.dedent('''
        def student(num_classes=6, width=8):
            if width % 2:
                raise ValueError(f"width must be even, got {width}")
            return Student(num_classes, width)
        '''))
    out = tmp_path / "out"
    done = edgekd("search", "-c", str(config), "-o", str(out), "-q", cwd=root)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: search: no candidate"), done.stderr
    assert "2 candidates" in lines[0] and "failed to build" in lines[0]
    # Each candidate measured (and failed) once, however often the sampler proposes it.
    shown = [line for line in done.stdout.splitlines() if ": failed: " in line]
    assert len(shown) == 2 and all("width must be even" in line for line in shown)
    (folder,) = (out / ".search").iterdir()
    section = json.loads((folder / "search.json").read_text())
    assert section["candidates"] == [] and section["winner"] is None
    assert sorted(f["params"]["student_args"]["width"] for f in section["failed"]) == [5, 7]
    assert all("width must be even" in f["error"] for f in section["failed"])
    assert "failed to build" in section["why"]
    # Run again: read back from the study, nothing measured again.
    again = edgekd("search", "-c", str(config), "-o", str(out), "-q", cwd=root)
    assert again.returncode == 1 and ": failed: " not in again.stdout, again.stdout


def test_bad_storage_cli_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "p"
    config = project(root)
    before = sorted(p.name for p in root.iterdir())
    done = edgekd("search", "-c", str(config), "-o", str(tmp_path / "out"), "--storage",
                  "sqlite:////nonexistent/dir/x.db", cwd=root)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --storage "), done.stderr
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in root.iterdir()) == before


@pytest.mark.slow
def test_ctrl_c_ends_the_search_promptly_and_leaves_nothing(tmp_path: Path) -> None:
    root = tmp_path / "p"
    config = project(root)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "search", "-c", str(config),
                             "-o", str(out), "-q"], cwd=root, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob(".search/*/trial-000")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
            time.sleep(0.1)
        time.sleep(1.0)  # inside the first candidate's build
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the whole foreground group
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
    assert proc.returncode == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:"), err
    assert "run the same command again to resume" in lines[0]
    with pytest.raises(ProcessLookupError):  # no child left (the benchmark worker, ...)
        os.killpg(proc.pid, 0)
    # Nothing recorded yet: no study file, no candidate folder, nothing in OUT/<target>.
    assert not list(out.glob(".cache/search/*")) and not (out / ".search").exists()
    assert not (out / "x86-cpu").exists()
