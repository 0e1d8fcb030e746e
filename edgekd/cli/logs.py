"""How the ``edgekd`` command line logs: one line per record on stderr, edgekd's own from
the chosen ``--log-level``; other libraries' warnings (optional kernels at import, "no
triton", deprecations) only with ``--log-level debug``, unless edgekd rephrases one the user
must act on (:data:`REPHRASED`); any error always. Python warnings go the same way."""

from __future__ import annotations

import logging
import os
import re
import sys
import sysconfig
import warnings
from pathlib import Path
from typing import Any, TextIO

import edgekd

# Loggers of the libraries a build imports (converters, runtimes, their dependencies): their
# warnings at import ("Failed to load ..._C_mxfp8.so", "no triton", a torch deprecation)
# are about optional kernels edgekd never uses, and read like a broken install. Every logger
# outside edgekd is treated so (these are the ones known to attach handlers of their own);
# their warnings show with --log-level debug only; edgekd's own warnings (and any error)
# always do.
THIRD_PARTY = ("torch", "torchao", "absl", "jax", "litert_torch", "ai_edge_litert",
               "onnxscript", "onnx_ir", "transformers", "openvino", "root")
LOG_LEVELS = ("debug", "info", "warning", "error")
# Third-party warnings that are the user's to act on, in edgekd's words: (pattern of the
# library's message, what edgekd says instead). The rest are the library's own business.
REPHRASED = (
    (re.compile(r"This DataLoader will create (\d+) worker processes in total\. Our suggested "
                r"max number of worker in current system is (\d+)"),
     r"the DataLoader given as data starts \1 worker processes on a machine with \2 usable "
     r"cores: lower its num_workers to at most \2 (more only contend for the cores)"),
)


def _library_file(filename: str) -> bool:
    """A file of Python itself or of an installed package: not edgekd's, not the user's."""
    if filename.startswith("<"):  # <frozen importlib._bootstrap>; <string> is python -c
        return filename.startswith("<frozen")
    path = Path(filename).resolve()
    if path.is_relative_to(Path(edgekd.__file__).resolve().parent):
        return False
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(path.is_relative_to(Path(r).resolve()) for r in roots)


def _show_warning(message: Warning | str, category: type[Warning], filename: str,
                  lineno: int, file: Any = None, line: str | None = None) -> None:
    """Python warnings (``warnings.warn``) into logging: those raised in edgekd's or the
    user's own code (their models.py) and those :data:`REPHRASED` as edgekd's warnings, a
    library's own as ``py.warnings`` (shown with --log-level debug)."""
    text = str(message)
    for pattern, ours in REPHRASED:
        if pattern.search(text):
            logging.getLogger("edgekd.warnings").warning("%s", pattern.sub(ours, text))
            return
    if _library_file(filename):
        logging.getLogger("py.warnings").warning("%s:%d: %s: %s", filename, lineno,
                                                 category.__name__, text)
    else:
        logging.getLogger("edgekd.warnings").warning("%s (%s, %s:%d)", text,
                                                     category.__name__, filename, lineno)


class _Shown(logging.Filter):
    """edgekd's records at the chosen level; other libraries' warnings only at debug; any
    error always."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        if record.name == "edgekd" or record.name.startswith("edgekd."):
            return record.levelno >= self.level
        return self.level <= logging.DEBUG and record.levelno >= logging.WARNING


def own_stream(stream: TextIO) -> TextIO:
    """A stream of our own on ``stream``'s file descriptor (a duplicate): converters that
    silence descriptors 1 and 2 while they run (:func:`edgekd.common.quiet.quiet`) do not
    silence edgekd's progress and warnings. ``stream`` itself where it has no descriptor (a
    test's captured output)."""
    try:
        fd = stream.fileno()
        stream.flush()
    except (AttributeError, OSError, ValueError):
        return stream
    return open(os.dup(fd), "w", encoding=getattr(stream, "encoding", None) or "utf-8",
                errors="replace", buffering=1)


class _Plain(logging.Formatter):
    """``warning: <message>`` for edgekd's records, as the CLI words its errors (yellow, or red
    for errors, on a terminal); other libraries' records keep their logger's name."""

    _COLORS = {logging.WARNING: "\033[33m", logging.ERROR: "\033[31m"}

    def __init__(self, color: bool) -> None:
        super().__init__()
        self.color = color

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        level = record.levelname.lower()
        if not (record.name == "edgekd" or record.name.startswith("edgekd.")):
            level = f"{level} {record.name}"
        color = self._COLORS.get(min(record.levelno, logging.ERROR), "") if self.color else ""
        label = f"{color}{level}:\033[0m" if color else f"{level}:"
        return f"{label} {text}"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and "NO_COLOR" not in os.environ
    except (AttributeError, ValueError):
        return False


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler edgekd's command line installs (replaced, not added, on each call)."""

    owned = False  # its stream is a duplicate made for it (closed when it is replaced)


def mute_third_party(debug: bool) -> None:
    """Other libraries' loggers at ERROR (WARNING with ``debug``). Again after a library is
    imported: torch sets the levels of its loggers, and gives them a handler of their own
    (writing "W1201 ... torchvision is not installed" to stderr), when it loads."""
    level = logging.WARNING if debug else logging.ERROR
    for name in (*THIRD_PARTY, *logging.root.manager.loggerDict):
        # "root" is the root logger (litert's logging.info calls): its records are filtered
        # by the handler; its level is every logger's default, edgekd's included.
        if name.split(".")[0] not in ("edgekd", "root", "py"):
            logger = logging.getLogger(name)
            if logger.level < level:
                logger.setLevel(level)


def setup_logging(level: str = "warning") -> None:
    """Log records to stderr, one line each: edgekd's from ``level`` (``debug``, ``info``,
    ``warning``, ``error``); other libraries' warnings and Python warnings raised inside
    them with ``debug`` only; any error always."""
    if level not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: choose from {', '.join(LOG_LEVELS)}")
    number = getattr(logging, level.upper())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, LogHandler)]:
        root.removeHandler(old)
        if old.owned:
            old.stream.close()
    stream = own_stream(sys.stderr)
    handler = LogHandler(stream)
    handler.owned = stream is not sys.stderr
    # --log-level debug is for finding where a record came from: it keeps the logger's name.
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s")
                         if number <= logging.DEBUG else _Plain(_is_terminal(stream)))
    handler.addFilter(_Shown(number))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if number <= logging.DEBUG else min(number, logging.WARNING))
    logging.getLogger("edgekd").setLevel(number)
    mute_third_party(number <= logging.DEBUG)  # some attach handlers of their own
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.showwarning = _show_warning
