"""The ``edgekd`` Typer app and what its commands share: one-line errors, output paths checked
before any work, the interrupt message, the SSH options. Each command lives in its own module
of this folder (build, check, bench, init, steps), registered on :data:`app` when
:mod:`edgekd.cli.commands` imports them."""

from __future__ import annotations

import enum
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

import edgekd
from edgekd.cli.display import console, err_console
from edgekd.common.interrupts import interrupt_exit_code
from edgekd.errors import EdgekdError, UsageError


class _OneLineErrors(TyperGroup):
    """The ``edgekd`` group: a usage error (unknown option, bad choice, missing argument) is
    one line, ``error: No such option: --epoch (did you mean --epochs?)``, exit 2, like every
    other bad input; click's own form is four (usage, "Try --help", a blank, the error)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode,
                                windows_expand_args, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args,
                                **extra)
        except typer.Abort:
            err_console.print("[bold red]aborted[/]", soft_wrap=True)
            sys.exit(1)
        except TyperException as exc:  # click's exceptions (typer ships its own click)
            if type(exc).__name__ == "NoArgsIsHelpError":  # `edgekd` alone: the help
                exc.show()  # type: ignore[attr-defined]
            else:
                err_console.print(f"[bold red]error:[/] {escape(_one_line(exc))}",
                                  soft_wrap=True)
            sys.exit(getattr(exc, "exit_code", 2))
        # Not standalone, click returns typer.Exit's code, or the command's return value
        # (None: success).
        sys.exit(code if isinstance(code, int) else 0)


def _one_line(exc: TyperException) -> str:
    """click's message on one line, its "Did you mean" suggestion kept in brackets; an error
    that is not about one option or value points to the command's --help."""
    format_message = getattr(exc, "format_message", None)
    text = " ".join((format_message() if format_message else str(exc)).split())
    text = re.sub(r"\.? Did you mean (.*?)\??$", r" (did you mean \1?)", text)
    text = re.sub(r"\(Possible options: ([^,()]*)\)", r"(did you mean \1?)", text)
    text = re.sub(r"\(Possible options: ([^()]*)\)", r"(did you mean one of \1?)", text)
    text = text.replace("Value error, ", "")  # typer's validation wording
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and type(exc).__name__ in ("UsageError", "BadArgumentUsage",
                                                  "MissingParameter"):
        text = f"{text.rstrip('.')}; see {ctx.command_path} --help"
    return text


# Help text is plain text: with rich markup, "[budget]" in a help string vanished ("a  table")
# and every bracket in a help string would have to be escaped by hand.
app = typer.Typer(cls=_OneLineErrors, add_completion=False, no_args_is_help=True,
                  rich_markup_mode=None,
                  help="Distill, prune, INT8-quantize, export and verify PyTorch models for "
                       "edge runtimes.")


def fail(exc: EdgekdError, debug: bool) -> typer.Exit:
    if debug:
        err_console.print_exception()
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgekd {edgekd.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True, help="Print the version.")]
          = False) -> None:
    """edgekd: one command from PyTorch to verified ONNX Runtime, OpenVINO and LiteRT models."""


def output_file(path: Path | None, flag: str, creates: Path | None = None) -> None:
    """Refuse, before any work, a file that could not be written at the end. Folders are not
    created: a typo in a path should not leave new folders behind. The one exception is a
    folder inside ``creates``, the output root the build itself makes (``--junit
    build/budgets.xml`` beside the build)."""
    if path is None:
        return
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder: give the path of a file")
    inside = creates is not None and (folder.resolve() == creates.resolve()
                                      or creates.resolve() in folder.resolve().parents)
    if inside:
        return
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist: create it "
                         "first or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                   and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {path} is not writable: choose another path or fix its "
                         "permissions")


def output_root(out: Path | None, config: Path | None) -> Path:
    """Where a build writes: --out, else the project file's ``out``, else ./build."""
    if out is not None:
        return out
    from edgekd.settings.project import PROJECT_FILE, load_project

    try:
        project = load_project(config, cwd=Path.cwd()) if (
            config or Path(PROJECT_FILE).is_file()) else None
    except EdgekdError:  # a broken project file is reported by the build itself
        project = None
    return project.root / project.out if project and project.out else Path("build")


def interrupted(what: str) -> typer.Exit:
    """SIGINT, SIGTERM or SIGHUP: one line, exit 128 + the signal (130, 143, 129)."""
    err_console.print(f"[bold red]interrupted:[/] {what}", soft_wrap=True)
    return typer.Exit(interrupt_exit_code())


def os_error(exc: OSError) -> EdgekdError:
    """A failed write (full disk, quota, permissions) as one line; the staging folder is gone
    by now and an earlier build is untouched."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return EdgekdError(f"no space left on the device{where}: free some disk space or "
                           "choose another --out; nothing was written and the previous build "
                           "is untouched")
    return EdgekdError(f"{exc.strerror or exc}{where}: check the path and its permissions "
                       "(--debug shows where it happened)")


# Options shared by `bench --remote` and `build --remote`.
RemotePython = Annotated[str, typer.Option(help="Python on the remote device.")]
SshConfig = Annotated[Path | None, typer.Option(help="ssh -F FILE.")]
AcceptNewHostKey = Annotated[bool, typer.Option(
    help="Trust a host key seen for the first time (ssh accept-new).")]


class LogLevel(enum.StrEnum):
    """``--log-level`` (build, bench): edgekd's log records from this level on, on stderr."""

    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


LogLevelOption = Annotated[LogLevel, typer.Option(
    "--log-level", case_sensitive=False,
    help="edgekd's log records from this level on (stderr). debug also shows other "
    "libraries' warnings and the converters' output; --debug implies it.")]


def log_level(level: LogLevel, debug: bool) -> str:
    """The level to log at: ``debug`` with --debug, else ``level``."""
    return "debug" if debug else level.value
