"""``python -m edgekd`` runs the CLI."""

from edgekd.cli.commands import main

main()
