"""``search(...)``: the whole search, top to bottom, for the CLI and for Python.

    the [search] space, checked against the project (before anything is written)
      -> the study (resumed if a search of the same space and project ran before)
      -> each candidate: untrained figures -> trained build if within the budget
      -> outcome: Pareto front, winner, why
      -> the winner built into OUT/<target> as a normal build, report["search"] added
      -> OUT/<target>/search/search.json, search.md, search.html
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekd.common.progress import ProgressCallback
from edgekd.errors import BuildError, UsageError
from edgekd.search.outcome import section as summary
from edgekd.search.space import check_space, from_params, ship_policy, winner_project
from edgekd.search.study import (
    CandidateCallback,
    default_storage,
    need_space,
    run_search,
    search_dir,
    study_name,
)
from edgekd.search.trial import SEARCH_DIR, Run
from edgekd.settings.budgets import Budget
from edgekd.settings.project import Project
from edgekd.settings.search import SearchSpace
from edgekd.settings.targets import Target


@dataclass(frozen=True)
class SearchResult:
    out_dir: Path  # OUT/<target>: the winner's build
    section: dict[str, Any]  # what search.json holds
    report: dict[str, Any]  # the winner's report.json


def search(target: str | Target, *, project: Project, out: Path, trials: int | None = None,
           storage: str | None = None, study: str | None = None,
           budget: Budget | None = None, budget_source: str | None = None,
           remotes: Sequence[Any] = (), trust_pickle: bool = False,
           on_progress: ProgressCallback | None = None,
           on_candidate: CandidateCallback | None = None) -> SearchResult:
    """Search the project's ``[search]`` space for ``target``; build the winner into
    ``out/<target>``. ``budget`` replaces the project's and the target's. Raises
    :class:`UsageError` for a bad space (nothing written), :class:`BuildError` when no
    candidate fits (the candidates' records stay in the study and ``OUT/.search``)."""
    space = need_space(project.search, project.source)
    if trials is not None and trials < 1:
        raise UsageError(f"--trials must be >= 1, got {trials}")
    from edgekd.pipeline.run import target_for  # lazy: torch only once a search runs

    target = target_for(target, project)
    check_space(project, space)
    budget = budget if budget is not None else (project.budget_for(target.name)
                                                or target.budget)
    source = budget_source or (project.source if project.budget_for(target.name)
                               else f"target {target.name}")
    limits = None if budget.empty else budget
    run = Run(project=project, target=target, out=out, study="", budget=limits,
              remotes=remotes, trust_pickle=trust_pickle, on_progress=on_progress)
    run = replace(run, study=study or study_name(run, space))
    candidates = _searched(run, space, storage, trials, on_candidate)
    url = storage or default_storage(out, run.study)
    found = summary(candidates, study=run.study, storage=url, space=space.to_dict(),
                    budget=limits, budget_source=source if limits else None)
    if found["winner"] is None:
        where = search_dir(out, run.study)
        _write(where, found)
        raise BuildError(f"search: {found['why']}; every candidate is in {where}/search.json: "
                         "widen the [search] space or relax the budget")
    best = next(c for c in candidates if c["number"] == found["winner"])
    cand = from_params({**{f"student_args.{k}": v
                           for k, v in best["params"]["student_args"].items()},
                        "prune_sparsity": best["params"]["prune_sparsity"],
                        "precision": best["params"]["precision"]})
    if ship_policy(cand.precision, None) is None:  # no policy of the pipeline ships FP32
        found["why"] += ("; it ships FP32: its FP32 files were measured and hold the budget "
                         "(the build marks its ship policy's file \"shipped\": deploy the "
                         "FP32 one)")
    from edgekd.pipeline.run import build

    result = build(target, out=out, project=winner_project(project, cand), remotes=remotes,
                   trust_pickle=trust_pickle, on_progress=on_progress, budget=budget,
                   budget_source=budget_source, search=found)
    _write(result.out_dir / "search", found)
    return SearchResult(result.out_dir, found, result.report)


def _searched(run: Run, space: SearchSpace, storage: str | None, trials: int | None,
              on_candidate: CandidateCallback | None) -> list[dict[str, Any]]:
    """:func:`run_search`; when it ends (an error, an interrupt) before recording a
    candidate, nothing it made is left behind: not the default SQLite study it created, nor
    the folders it made for it or for the candidates' builds (the stage cache stays)."""
    db = default_storage(run.out, run.study, create=False) if storage is None else None
    made = [d for d in (run.out, run.out / ".cache", run.out / ".cache" / "search",
                        run.out / SEARCH_DIR, search_dir(run.out, run.study)) if not d.exists()]
    fresh = db is not None and not Path(db.removeprefix("sqlite:///")).exists()
    recorded = []

    def heard(record: dict[str, Any]) -> None:
        recorded.append(record["number"])
        if on_candidate:
            on_candidate(record)

    try:
        return run_search(run, space, storage or default_storage(run.out, run.study),
                          trials=trials, on_candidate=heard)
    except BaseException:
        if not recorded:
            if fresh and db is not None:
                file = Path(db.removeprefix("sqlite:///"))
                for leftover in (file, file.with_name(file.name + "-journal")):
                    leftover.unlink(missing_ok=True)
            if search_dir(run.out, run.study) in made:
                shutil.rmtree(search_dir(run.out, run.study), ignore_errors=True)
            for folder in reversed(made):
                with contextlib.suppress(OSError):  # not empty: the stage cache, say
                    folder.rmdir()
        raise


def _write(folder: Path, section: dict[str, Any]) -> None:
    from edgekd.report.search import page_html, page_markdown

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "search.json").write_text(json.dumps(section, indent=2) + "\n",
                                        encoding="utf-8")
    (folder / "search.md").write_text(page_markdown(section), encoding="utf-8")
    (folder / "search.html").write_text(page_html(section), encoding="utf-8")
