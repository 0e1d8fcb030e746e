"""One candidate measured: untrained first, then trained if it can fit.

Latency, size and memory of a model do not depend on its weights, so the untrained
candidate (the factory's model with the candidate's arguments, structured-pruned at its
ratio) is deployed as a finished model (quantized on a quick calibration, exported, run in
each runtime, benchmarked like any build) and checked against the weight-free budgets
(size, latency, memory). Only a candidate within them is trained: a real build
(:func:`edgekd.pipeline.run.build`) into ``OUT/.search/<study>/<trial>/train`` whose
``.cache`` is the project's ``OUT/.cache``, so the teacher and its outputs are trained and
computed once for the whole search, and a later build of the same candidate is cached.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekd.common.progress import ProgressCallback
from edgekd.search.outcome import (
    FAILED,
    FEASIBLE,
    INFEASIBLE,
    STOPPED,
    broken,
    checks,
    figures,
)
from edgekd.search.space import Candidate, candidate_project
from edgekd.settings.budgets import Budget
from edgekd.settings.project import Project
from edgekd.settings.targets import Target

# Where every trial's builds go, under the output root.
SEARCH_DIR = ".search"


@dataclass(frozen=True)
class Run:
    """What every trial of one search shares."""

    project: Project
    target: Target
    out: Path  # the output root (OUT)
    study: str
    budget: Budget | None
    remotes: Sequence[Any] = ()
    trust_pickle: bool = False
    on_progress: ProgressCallback | None = None

    def folder(self, number: int) -> Path:
        return self.out / SEARCH_DIR / self.study / f"trial-{number:03d}"


def _untrained(project: Project, candidate: Candidate, trust_pickle: bool) -> Any:
    """The candidate's model before training: the factory's, pruned to its shape."""
    import torch

    from edgekd.compress.structured import prune_channels
    from edgekd.inputs.resolve import resolve

    inputs = resolve(project, trust_pickle=trust_pickle)
    assert inputs.student is not None  # check_space: the project names a student factory
    model = inputs.student().eval()
    example = torch.from_numpy(inputs.data.train.x[:1])
    with torch.no_grad():
        model(example)  # lazy layers take their shapes
    if candidate.sparsity > 0:
        model = prune_channels(model, example, candidate.sparsity)
    return model


def _probe_project(project: Project) -> Project:
    """Settings for measuring an untrained model: its outputs are noise, so agreement and
    accuracy checks of the INT8 files mean nothing; latency, size and memory do."""
    build = project.build
    quant = replace(build.quant, max_accuracy_drop=None,
                    calibration_samples=min(build.quant.calibration_samples, 32))
    return replace(project, build=replace(build, min_agreement=0.0, min_cosine=-1.0,
                                          min_decision_agreement=0.0, quant=quant))


def _build(run: Run, project: Project, out: Path, **extra: Any) -> dict[str, Any]:
    from edgekd.pipeline.run import build

    result = build(run.target, out=out, project=project, remotes=run.remotes,
                   trust_pickle=run.trust_pickle, on_progress=run.on_progress,
                   budget=run.budget, **extra)
    return result.report


def probe(run: Run, candidate: Candidate, folder: Path) -> dict[str, Any]:
    """The untrained candidate's report (a finished-model build in ``folder/probe``, removed
    once read: only its figures are kept)."""
    from edgekd.inputs.objects import InMemory

    project = _probe_project(candidate_project(run.project, candidate))
    model = _untrained(project, candidate, run.trust_pickle)
    where = folder / "probe"
    try:
        return _build(run, project, where, objects=InMemory(student=model), fresh=True)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def train(run: Run, candidate: Candidate, folder: Path) -> dict[str, Any]:
    """The trained candidate's report: a real build sharing the project's stage cache."""
    where = folder / "train"
    where.mkdir(parents=True, exist_ok=True)
    shared = run.out / ".cache"
    shared.mkdir(parents=True, exist_ok=True)
    link = where / ".cache"
    if not link.is_symlink():
        if link.exists():
            shutil.rmtree(link)
        link.symlink_to(shared.resolve(), target_is_directory=True)
    return _build(run, candidate_project(run.project, candidate), where)


def _params(candidate: Candidate) -> dict[str, Any]:
    return {"student_args": candidate.student_args, "prune_sparsity": candidate.sparsity,
            "precision": candidate.precision}


def failed(candidate: Candidate, number: int, error: str, *, seconds: float
           ) -> dict[str, Any]:
    """The record of a candidate whose build failed: its one-line message, no figures."""
    return {"number": number, "label": candidate.label, "params": _params(candidate),
            "trained": False, "state": FAILED, "error": error,
            "figures": {"accuracy": None, "p50_ms": None, "size_bytes": None},
            "checks": [], "broken": [], "seconds": round(seconds, 1)}


def evaluate(run: Run, candidate: Candidate, number: int) -> dict[str, Any]:
    """One candidate's record: state (feasible, infeasible, stopped early), figures of the
    untrained and (if trained) trained model, budget checks, where its build is."""
    started = time.perf_counter()
    folder = run.folder(number)
    record: dict[str, Any] = {"number": number, "label": candidate.label,
                              "params": _params(candidate), "trained": False}
    machine = run.target.machine
    untrained = probe(run, candidate, folder)
    record["untrained"] = {k: v for k, v in figures(untrained, candidate.precision).items()
                           if k != "accuracy"}
    found = checks(untrained, candidate.precision, run.budget, machine=machine,
                   untrained=True)
    if broken(found):
        record |= {"state": STOPPED, "figures": dict(record["untrained"], accuracy=None),
                   "checks": found, "broken": broken(found)}
    else:
        report = train(run, candidate, folder)
        found = checks(report, candidate.precision, run.budget, machine=machine)
        record |= {"trained": True, "figures": figures(report, candidate.precision),
                   "checks": found, "broken": broken(found),
                   "state": INFEASIBLE if broken(found) else FEASIBLE,
                   "build": str(folder / "train" / run.target.name)}
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def overshoot(record: dict[str, Any]) -> float:
    """How far over its budgets a record is, as one Optuna constraint (<= 0: feasible): the
    sum of each broken check's excess relative to its limit."""
    if record["state"] == FAILED:  # no figures: as far over as a candidate can be told
        return 1.0
    total = 0.0
    for c in record.get("checks", []):
        if c["budget"] in record.get("broken", []) and c.get("margin", 0) < 0:
            total += -c["margin"] / max(abs(c["limit"]), 1e-9)
    return max(total, 1e-6) if record["state"] != FEASIBLE else 0.0
