"""Example projects shipped with edgekd, one folder each: ``edgekd init`` copies
``starter`` and ``edgekd init --example NAME`` any other (see :mod:`edgekd.cli.init`).

Each folder is a complete project as a user would lay it out: ``edgekd.toml``, the models
(``models.py``) and ``make_data.py``, which writes the project's ``data/`` and runs when the
project is copied. These files are package data; the ``__init__.py`` files only let tools
tell the folders' ``models.py`` apart and are not copied."""
