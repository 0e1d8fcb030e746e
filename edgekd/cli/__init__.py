"""The ``edgekd`` command line: the commands (one module each, registered by
:mod:`.commands` on the app of :mod:`.app`), what they print (:mod:`.display`: tables and
summaries; :mod:`.progress`: the live build display and its plain CI lines) and the logging
setup (:mod:`.logs`). The only room that prints. It may import every other room; it imports
torch only through the pipeline, when a build runs."""

from edgekd.cli.commands import app, main

__all__ = ["app", "main"]
