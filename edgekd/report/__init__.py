"""What a build writes: one typed report (:mod:`.model`, schema in ``report.schema.json``),
rendered as Markdown (:mod:`.markdown`) and HTML (:mod:`.html`) through shared formatters
(:mod:`.format`), the manifest, the budget gate that CI runs on a report (:mod:`.gate`), and
the staged output folder (:mod:`.staging`).

Rule: no torch, no runtime. Takes measured values, never measures."""
