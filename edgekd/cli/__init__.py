"""The ``edgekd`` command line: commands (:mod:`.commands`) and what they print
(:mod:`.display`). The only room that prints. It may import every other room; it imports
torch only through the pipeline, when a build runs."""

from edgekd.cli.commands import app, main

__all__ = ["app", "main"]
