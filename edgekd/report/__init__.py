"""What a build writes: one typed report (:mod:`.model`: :func:`~.model.assemble`), its JSON
Schema (``report.schema.json``, checked by :mod:`.schema`), strict JSON with non-finite numbers
as explained nulls (:mod:`.nulls`), rendered as Markdown (:mod:`.markdown`) and HTML
(:mod:`.html`, plots in :mod:`.plots`) through shared formatters (:mod:`.format`); the
manifest (:mod:`.manifest`), the budget gate that CI runs on a report (:mod:`.gate`), and the
staged output folder (:mod:`.staging`).

Rule: no torch, no runtime. Takes measured values, never measures."""
