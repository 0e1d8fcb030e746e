"""Errors a user can act on.

An :class:`EdgekdError` carries one line that names what is wrong and how to fix it; the
CLI prints that line and exits with ``exit_code``. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class EdgekdError(Exception):
    """A problem the user can fix. ``str(err)`` is one line: what is wrong, and the fix."""

    exit_code = 1


class UsageError(EdgekdError):
    """Bad flags, unknown target names, malformed target or config files (exit 2)."""

    exit_code = 2


class BuildError(EdgekdError):
    """A build step could not produce a valid result (exit 1)."""


class RuntimeMissingError(BuildError):
    """A runtime, converter or execution provider the target needs is not available."""


class VerificationError(BuildError):
    """An artifact disagrees with the PyTorch model it was made from."""
