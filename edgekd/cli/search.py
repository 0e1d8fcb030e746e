"""``edgekd search``: the most accurate student within the budget (:mod:`edgekd.search`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgekd.cli.app import (
    AcceptNewHostKey,
    LogLevel,
    LogLevelOption,
    RemotePython,
    SshConfig,
    app,
    fail,
    interrupted,
    log_level,
    os_error,
    output_root,
)
from edgekd.cli.display import console, print_summary
from edgekd.cli.logs import mute_third_party, setup_logging
from edgekd.cli.progress import BuildProgress
from edgekd.common.interrupts import catch_interrupts
from edgekd.errors import EdgekdError, UsageError


def _candidate_line(record: dict[str, Any]) -> None:
    if record.get("error"):
        console.print(f"candidate #{record['number']} ({record['label']}): failed: "
                      f"{record['error']} ({record.get('seconds', 0):.0f} s)", soft_wrap=True,
                      markup=False)
        return
    f = record.get("figures") or {}
    acc = f.get("accuracy")
    figures = ", ".join(p for p in (
        f"{100 * acc:.2f}%" if acc is not None else "",
        f"p50 {f['p50_ms']:.3f} ms" if f.get("p50_ms") is not None else "",
        f"{f['size_bytes'] / 1024:.1f} KiB" if f.get("size_bytes") is not None else "") if p)
    over = f" — over {', '.join(record['broken'])}" if record.get("broken") else ""
    console.print(f"candidate #{record['number']} ({record['label']}): {record['state']}, "
                  f"{figures}{over} ({record.get('seconds', 0):.0f} s)", soft_wrap=True,
                  markup=False)


@app.command()
def search(
    target: Annotated[str | None, typer.Option("--target", "-t", help="Target name (edgekd "
                                               "targets); default: the project file's, else "
                                               "raspberrypi.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Project file with a "
                                                "[search] table (default: ./edgekd.toml).")]
    = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output root; the winner is "
                                             "built into OUT/<target>, the search summary "
                                             "into OUT/<target>/search.")] = None,
    trials: Annotated[int | None, typer.Option(help="Candidates to measure (default: "
                                               "search.trials); each is trained at most "
                                               "once.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL that several "
                                                "machines can share, e.g. "
                                                "postgresql://user@host/db (default: a SQLite "
                                                "file in OUT/.cache/search).")] = None,
    study: Annotated[str | None, typer.Option(help="Study name in the storage (default: the "
                                              "target and a digest of the space and "
                                              "project: the same search resumes).")] = None,
    budget: Annotated[Path | None, typer.Option(help="TOML file with a [budget] table; "
                                                "replaces the project's and target's.")]
    = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Any setting, section.key=value (repeatable), applied to every "
        "candidate and to the winner's build, e.g. distill.epochs=5.")] = None,
    remote: Annotated[list[str] | None, typer.Option(help="Also benchmark every candidate on "
                                                     "user@host over SSH (repeatable).")]
    = None,
    remote_python: RemotePython = "python3",
    ssh_config: SshConfig = None,
    accept_new_host_key: AcceptNewHostKey = False,
    trust_pickle: Annotated[bool, typer.Option(help="Allow weights files that are full "
                                               "pickles (they can run code when loaded).")]
    = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress; the candidates "
                                        "and the summary only.")] = False,
    log_level_: LogLevelOption = LogLevel.warning,
    debug: Annotated[bool, typer.Option(help="Show tracebacks (implies --log-level debug).")]
    = False,
) -> None:
    """Find the most accurate student within the budget: explore the project's [search]
    space (student size, structured pruning, precision), then build the winner."""
    level = log_level(log_level_, debug)
    setup_logging(level)
    progress = BuildProgress(target or "the target", quiet=quiet, debug=level == "debug")
    try:
        from edgekd.measure.remote import Remote

        remotes = [Remote(h, remote_python, ssh_config, accept_new_host_key)
                   for h in remote or []]
    except ValueError as exc:
        raise fail(UsageError(f"bad option: {exc}"), debug) from exc
    try:
        with catch_interrupts(), progress:
            from edgekd.pipeline.api import DEFAULT_TARGET, load
            from edgekd.search.api import search as run_search
            from edgekd.settings.budgets import load_budget_file

            mute_third_party(level == "debug")
            project = load(config, target=target, budget=budget, settings=settings or [],
                           origins={s: f"--set {s}" for s in settings or []})
            name = target or project.target or DEFAULT_TARGET
            result = run_search(
                name, project=project, out=output_root(out, config), trials=trials,
                storage=storage, study=study,
                budget=load_budget_file(budget) if budget else None,
                budget_source=str(budget) if budget else None, remotes=remotes,
                trust_pickle=trust_pickle, on_progress=progress.progress,
                on_candidate=_candidate_line)
    except EdgekdError as exc:
        raise fail(exc, debug) from exc
    except KeyboardInterrupt:
        raise interrupted("the finished candidates are kept in the study; run the same "
                          "command again to resume") from None
    except OSError as exc:
        raise fail(os_error(exc), debug) from exc
    print_summary(result.report, result.out_dir)
    console.print(f"search: {result.section['why']}", soft_wrap=True, markup=False)
    console.print(f"search summary: {result.out_dir / 'search' / 'search.html'}",
                  soft_wrap=True, markup=False)
