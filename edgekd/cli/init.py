"""``edgekd init``: a starter project."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.app import app, fail
from edgekd.cli.display import console
from edgekd.errors import UsageError


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the project file.")]
    = Path("edgekd.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter project file (edgekd.toml) to fill in."""
    from edgekd.settings.project import STARTER

    if path.exists() and not force:
        raise fail(UsageError(f"{path} already exists: edit it, or pass --force to replace it"),
                    False)
    try:
        path.write_text(STARTER, encoding="utf-8")
    except OSError as exc:
        raise fail(UsageError(f"cannot write {path} ({exc.strerror}): choose another path"),
                    False) from exc
    console.print(f"wrote {path}: name your model and data in it, then run `edgekd build`")
