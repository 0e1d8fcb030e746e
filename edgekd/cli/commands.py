"""The ``edgekd`` command line: :data:`app` with every command registered. The commands are
one module each in this folder; they, :mod:`edgekd.cli.display` and :mod:`edgekd.cli.progress`
are the only modules that print."""

from __future__ import annotations

from rich.table import Table

from edgekd.cli import bench, build, check, init, steps  # noqa: F401  (each registers its command)
from edgekd.cli import search as _search  # noqa: F401  (registers `edgekd search`)
from edgekd.cli.app import app, fail
from edgekd.cli.display import console
from edgekd.errors import EdgekdError

__all__ = ["app", "main"]


@app.command()
def targets() -> None:
    """List the deployment targets."""
    from edgekd.settings.targets import all_targets

    try:
        found = all_targets()
    except EdgekdError as exc:
        raise fail(exc, False) from exc
    table = Table("target", "runtimes", "threads", "description")
    for t in found:
        table.add_row(t.name, ", ".join(t.runtimes), str(t.threads), t.description)
    console.print(table)


def main() -> None:
    app()
