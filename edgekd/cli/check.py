"""``edgekd check``: the CI gate, a report against its budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edgekd.cli.app import app, fail, os_error, output_file
from edgekd.cli.display import err_console, print_checks
from edgekd.errors import EdgekdError, UsageError


@app.command()
def check(
    report: Annotated[Path, typer.Argument(help="A build folder (OUT/<target>), its "
                                           "report.json, or edgekd bench --json output (with "
                                           "bench --target: checked against that target's "
                                           "budget).",
                                           show_default=False)],
    budget: Annotated[Path | None, typer.Option(help="TOML file with a [budget] table "
                                                "(default: the target's budget recorded "
                                                "in the report).")] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write JUnit XML here.")] = None,
    require_device: Annotated[bool, typer.Option(
        "--require-device", help="Exit 1 if a latency or memory budget of a device target "
        "was not measured on the device (run the build with --remote user@device).")]
    = False,
) -> None:
    """Compare a report against its budgets: exit 1 if any is broken, 0 if all hold.
    Latency and memory of a device target (raspberrypi, jetson-orin) measured only on the
    build host are "not measured on the target": a warning, an error with --require-device."""
    raise typer.Exit(run_check(report, budget, junit, require_device))


def run_check(report_path: Path, budget_path: Path | None, junit: Path | None,
              require_device: bool = False) -> int:
    """The gate's exit status (0 or 1) after printing its table; bad input exits 2."""
    from edgekd.report.gate import budget_checks, gate_fails, junit_xml
    from edgekd.report.reading import load_report
    from edgekd.settings.budgets import load_budget_file, parse_budget

    try:
        output_file(junit, "--junit")
        report = load_report(report_path)
        if budget_path:
            budget, source = load_budget_file(budget_path), str(budget_path)
        else:
            recorded = report.get("budget") or {}
            budget = parse_budget(recorded.get("limits", {}), str(report_path),
                                  "budget.limits")
            source = recorded.get("source", str(report_path))
        if budget.empty:
            raise UsageError(f"no budgets to check in {source}: add a [budget] table to the "
                             "target file or pass --budget FILE")
        notes: list[str] = []
        checks = budget_checks(report, budget, notes=notes)
    except EdgekdError as exc:
        raise fail(exc, False) from exc
    for note in notes:
        err_console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    rows = [c.to_dict() for c in checks]
    print_checks(rows, source, require_device)
    if junit:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)  # checked first: see _output_file
            junit.write_text(junit_xml(checks, source, require_device), encoding="utf-8")
        except OSError as exc:
            raise fail(os_error(exc), False) from exc
    return 1 if gate_fails(rows, require_device) else 0
