"""A candidate of the search: the student's factory arguments, the structured pruning ratio
and the precision shipped, suggested by an Optuna trial from the ``[search]`` table, and the
project that builds it."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, replace
from typing import Any

from edgekd.errors import UsageError
from edgekd.settings.config import BuildConfig
from edgekd.settings.project import Project
from edgekd.settings.search import SearchSpace

# Optuna parameter names: one per student argument, then these two.
SPARSITY, PRECISION = "prune_sparsity", "precision"
ARG = "student_args."


@dataclass(frozen=True)
class Candidate:
    student_args: dict[str, Any]
    sparsity: float
    precision: str

    @property
    def params(self) -> dict[str, Any]:
        """As Optuna stores them (one flat name per choice)."""
        return {**{ARG + k: v for k, v in self.student_args.items()},
                SPARSITY: self.sparsity, PRECISION: self.precision}

    @property
    def label(self) -> str:
        """``width=16, sparsity 0.25, int8``."""
        args = ", ".join(f"{k}={v}" for k, v in self.student_args.items())
        return ", ".join(p for p in (args, f"sparsity {self.sparsity:g}", self.precision) if p)

    @property
    def key(self) -> str:
        """Identifies the candidate: two trials with the same key are one candidate."""
        return json.dumps(self.params, sort_keys=True)


def from_params(params: dict[str, Any]) -> Candidate:
    return Candidate({k[len(ARG):]: v for k, v in params.items() if k.startswith(ARG)},
                     float(params[SPARSITY]), str(params[PRECISION]))


def suggest(trial: Any, space: SearchSpace) -> Candidate:
    """The candidate an Optuna trial suggests (every choice categorical: the spaces are
    small and finite, and categorical choices keep each value exactly as written)."""
    args = {k: trial.suggest_categorical(ARG + k, list(v))
            for k, v in space.student_args.items()}
    return Candidate(args, float(trial.suggest_categorical(SPARSITY,
                                                           list(space.prune_sparsity))),
                     str(trial.suggest_categorical(PRECISION, list(space.precision))))


def check_space(project: Project, space: SearchSpace) -> None:
    """The space fits the project: a student factory that takes every ``student_args`` key.
    Raises :class:`UsageError` (one line) before anything is trained or written."""
    model = project.model
    if model is None or model.student is None or model.teacher is None:
        raise UsageError(f"{project.source}: edgekd search distills candidates of the "
                         "student: the project needs [model] student and teacher factories")
    if not space.student_args:
        return
    from edgekd.inputs.model_files import load_factory  # imports the user's module

    factory = load_factory(model.student, project.root, "model.student")
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C factory: the build will tell
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    takes = [n for n, p in params.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                           inspect.Parameter.KEYWORD_ONLY)]
    for key in space.student_args:
        if key not in takes:
            import difflib

            close = difflib.get_close_matches(key, takes, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{project.source}: search.student_args.{key}: the student "
                             f"factory {model.student} takes no argument {key!r}{hint}; its "
                             f"arguments: {', '.join(takes) or 'none'}")


def candidate_project(project: Project, candidate: Candidate) -> Project:
    """``project`` building ``candidate``: its factory arguments, structured pruning at its
    ratio, and without the extras a candidate does not need (the scratch baseline,
    robustness figures); the final build of the winner keeps the project's own settings
    but these three (:func:`winner_project`)."""
    base = winner_project(project, candidate)
    build = base.build
    robust = replace(build.robustness, noise_sigmas=(), corruptions=(), signal_snr_db=(),
                     signal_gains=(), signal_shifts=(), token_dropout=(), token_replace=())
    return replace(base, build=replace(build, baseline=False, robustness=robust))


def ship_policy(precision: str, policy: str | None) -> str | None:
    """The ``ship`` policy that ships ``precision`` (``policy``: the project's): ``int8``
    ships INT8 whatever the timing says; FP32 ships under a ``fp32`` policy where the
    pipeline has one, else the project's policy stays (the search measures and checks the
    FP32 files all the same, and its summary says which file ships)."""
    from edgekd.settings.config import SHIP_POLICIES

    return precision if precision in SHIP_POLICIES else policy


def winner_project(project: Project, candidate: Candidate) -> Project:
    """``project`` with the candidate's factory arguments, structured pruning ratio and the
    ship policy of its precision (:func:`ship_policy`)."""
    assert project.model is not None  # check_space refused projects without a model
    model = replace(project.model,
                    student_args={**project.model.student_args, **candidate.student_args})
    build: BuildConfig = project.build
    prune = replace(build.prune, method="structured", schedule="oneshot",
                    sparsity=candidate.sparsity)
    return replace(project, model=model, build=replace(
        build, prune=prune, ship=ship_policy(candidate.precision, build.ship)))
