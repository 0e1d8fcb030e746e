"""The search itself: an Optuna study over the ``[search]`` space, resumable.

Why Optuna, and not a home-made grid or another tuner:

- **Constraints**: each trial carries its budget overshoot (``Trial.set_constraint``,
  read by the TPE and NSGA-II samplers); a candidate over a budget is a constraint
  violation the sampler learns from (it proposes fewer candidates like it), not a made-up
  bad score. A grid would train every combination.
- **Several objectives**: accuracy up, p50 latency and size down, in one study; the
  Pareto front comes out of the same records.
- **Storage several machines share**: the study lives in a database (SQLite here by
  default, any SQLAlchemy URL with ``--storage``); every finished trial is committed as it
  ends, so a killed search loses only the candidate it was training, and two machines
  pointed at one PostgreSQL/MySQL study split the candidates between them.
- **Small and kept**: a pure-Python dependency with ask/tell, so edgekd keeps its own
  straight-line loop (untrained check, then training) around it. Ray Tune and Ax bring a
  cluster runtime or a Bayesian-optimisation stack (PyTorch + BoTorch services) for what is
  here a dozen trainings on one machine.

Resume: every trial records the host and process that runs it. On start, a RUNNING trial of
this host whose process is gone (killed, SIGKILL included) is marked FAIL and its candidate
queued again, so the next run retrains exactly that one; finished trials are read back, and
a candidate already measured is never trained twice (a sampler that proposes it again gets
the recorded result). Trials of other machines sharing the storage are left alone.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekd.common.progress import emit, reporting
from edgekd.errors import EdgekdError, UsageError
from edgekd.search.outcome import FEASIBLE
from edgekd.search.space import Candidate, from_params, suggest
from edgekd.search.trial import SEARCH_DIR, Run, evaluate, failed, overshoot
from edgekd.settings.search import EXAMPLE, SearchSpace

log = logging.getLogger(__name__)

CandidateCallback = Callable[[dict[str, Any]], None]
RECORD, DUPLICATE = "record", "duplicate_of"
# A sampler may keep proposing candidates already measured; past this many proposals per
# trial asked for, the search stops with what it has.
_MAX_PROPOSALS = 20


def need_space(space: SearchSpace | None, source: str) -> SearchSpace:
    if space is None:
        raise UsageError(f"{source}: no [search] table: edgekd search explores what it names; "
                         f"add one, e.g. {EXAMPLE}")
    return space


def study_name(run: Run, space: SearchSpace) -> str:
    """The default name: the target and a digest of what the candidates are built from (the
    space without ``trials``, the project's settings), so that a changed space or project
    starts a new study and the same ones resume."""
    what = {"space": {**space.to_dict(), "trials": None},
            "project": run.project.to_dict(), "target": run.target.name}
    digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode())
    return f"{run.target.name}-{digest.hexdigest()[:10]}"


def default_storage(out: Path, study: str, *, create: bool = True) -> str:
    """``sqlite:///OUT/.cache/search/<study>.db`` (``create``: its folder made)."""
    folder = out / ".cache" / "search"
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / f'{study}.db').resolve()}"


def open_study(storage: str, name: str, seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # edgekd reports the trials
    # The constraint is set on each trial (Trial.set_constraint, Optuna 5's core API, which
    # the sampler reads); the sampler-specific constraints_func is deprecated there.
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=4)
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.create_study(storage=storage, study_name=name, sampler=sampler,
                                   directions=["maximize", "minimize", "minimize"],
                                   load_if_exists=True)
    except (ImportError, ValueError, SQLAlchemyError) as exc:
        raise UsageError(storage_problem(storage, exc)) from exc


# The driver each database needs (what Optuna's "Failed to import DB access module" means).
_DRIVERS = {"postgresql": "psycopg2 (pip install psycopg2-binary)",
            "mysql": "a MySQL driver (pip install pymysql, then a mysql+pymysql:// URL)"}
_EXAMPLES = ("sqlite:///path/to/search.db (a SQLite file), postgresql://user@host/db or "
             "mysql+pymysql://user@host/db")


def storage_problem(storage: str, exc: BaseException) -> str:
    """One line: what is wrong with ``--storage`` and how to fix it."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    scheme, sep, rest = storage.partition("://")
    dialect, _, driver = scheme.partition("+")
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if not sep or (isinstance(exc, ArgumentError) and not isinstance(exc, NoSuchModuleError)):
        mine = f" (for this file: sqlite:///{Path(storage).resolve()})" if not sep else ""
        return f"--storage {storage} is not a database URL: give one like {_EXAMPLES}{mine}"
    if isinstance(exc, ImportError):  # a known database whose driver is missing
        need = _DRIVERS.get(dialect, f"the Python driver for {scheme}")
        return f"--storage {storage}: the database driver is not installed: install {need}"
    if isinstance(exc, NoSuchModuleError):
        what = f"driver {driver!r} for {dialect}" if driver else f"database {dialect!r}"
        return f"--storage {storage}: unknown {what}: give a URL like {_EXAMPLES}"
    if isinstance(exc, OperationalError) and dialect == "sqlite":
        path = rest[1:] if rest.startswith("/") else rest
        return (f"--storage {storage}: cannot open the SQLite file {path}: its folder must "
                "exist and be writable (e.g. sqlite:///path/to/search.db)")
    if isinstance(exc, OperationalError):
        return (f"--storage {storage}: cannot open the database ({first}): check that the "
                "server is reachable, the database exists and the user may write to it")
    return f"--storage {storage}: {first}: give a URL like {_EXAMPLES}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def recover(study: Any) -> list[int]:
    """RUNNING trials of this host whose process is gone: marked FAIL, their candidates
    queued to run again. Returns their numbers."""
    from optuna.trial import TrialState

    host, stale = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or (isinstance(pid, int) and _alive(pid)):
            continue
        study._storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
        stale.append(t.number)
    return stale


def records(study: Any) -> dict[str, dict[str, Any]]:
    """The candidates measured so far, by candidate key (not duplicates)."""
    from optuna.trial import TrialState

    found = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if RECORD in t.user_attrs and DUPLICATE not in t.user_attrs:
            found[from_params(t.params).key] = t.user_attrs[RECORD]
    return found


def run_search(run: Run, space: SearchSpace, storage: str, *, trials: int | None = None,
               on_candidate: CandidateCallback | None = None) -> list[dict[str, Any]]:
    """Measure up to ``trials`` (default the space's) distinct candidates; returns every
    candidate's record, in trial order, the ones of earlier runs included. A candidate
    whose build fails is recorded ``failed`` once, with its message, and never measured
    again in this study."""
    study = open_study(storage, run.study, space.seed)
    stale = recover(study)
    if stale:
        log.info("search %s: retrying trial(s) %s, interrupted earlier", run.study, stale)
    wanted = min(trials or space.trials, space.size)
    done = records(study)
    # The rate and time left count only what this run measures, not what it read back.
    before, started = len(done), time.perf_counter()
    todo = max(wanted - before, 0)
    with reporting(run.on_progress, "search"):
        proposals = 0
        while len(done) < wanted and proposals < _MAX_PROPOSALS * wanted:
            proposals += 1
            emit("candidates", len(done) - before, todo, "candidate",
                 seconds=time.perf_counter() - started)
            trial = study.ask()
            trial.set_user_attr("host", socket.gethostname())
            trial.set_user_attr("pid", os.getpid())
            candidate = suggest(trial, space)
            if candidate.key in done:  # proposed again: tell it what it measured
                _tell(study, trial, done[candidate.key], duplicate=True)
                continue
            record = _evaluate(study, trial, run, candidate)
            done[candidate.key] = record
            if on_candidate:
                on_candidate(record)
        emit("candidates", len(done) - before, todo, "candidate",
             seconds=time.perf_counter() - started)
    return sorted(records(study).values(), key=lambda r: r["number"])


def _evaluate(study: Any, trial: Any, run: Run, candidate: Candidate) -> dict[str, Any]:
    """One candidate measured and told to the study. A candidate whose build fails (a
    build step, a check of its settings) is a result too: recorded ``failed`` with its
    one-line message, told to the sampler as over every constraint so that it proposes
    fewer like it; the search goes on."""
    started = time.perf_counter()
    try:
        record = evaluate(run, candidate, trial.number)
    except EdgekdError as exc:
        log.info("search candidate #%d (%s) failed: %s", trial.number, candidate.label, exc)
        record = failed(candidate, trial.number, str(exc),
                        seconds=time.perf_counter() - started)
    _tell(study, trial, record)
    return record


def _tell(study: Any, trial: Any, record: dict[str, Any], *, duplicate: bool = False) -> None:
    f = record.get("figures") or {}
    values = [f["accuracy"] if f.get("accuracy") is not None else 0.0,
              f["p50_ms"] if f.get("p50_ms") is not None else float("inf"),
              float(f["size_bytes"] if f.get("size_bytes") is not None else float("inf"))]
    trial.set_constraint("budgets", overshoot(record))
    trial.set_user_attr(RECORD, record)
    if duplicate:
        trial.set_user_attr(DUPLICATE, record["number"])
    study.tell(trial, values)


def feasible_count(candidates: list[dict[str, Any]]) -> int:
    return sum(c["state"] == FEASIBLE for c in candidates)


def search_dir(out: Path, study: str) -> Path:
    return out / SEARCH_DIR / study
