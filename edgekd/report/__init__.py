"""What a build writes: one typed report (its parts in :mod:`.types`, assembled by
:func:`~.model.assemble` in :mod:`.model`), its JSON Schema (``report.schema.json``, checked by
:mod:`.schema`), strict JSON with non-finite numbers as explained nulls (:mod:`.nulls`),
rendered through shared formatters (:mod:`.format`) as Markdown (:mod:`.markdown`; its
compression sections in :mod:`.markdown_compression`) and HTML (:mod:`.html`; plots in
:mod:`.plots` and :mod:`.latency_plot`; the compression sections both pages share in
:mod:`.compression`); the manifest (:mod:`.manifest`), the deploy package beside the artifacts
(:mod:`.package`, its scripts' templates in ``templates/``), the budget gate that CI runs on a
report (:mod:`.gate`, reading the report with :mod:`.reading`), and the staged output folder
(:mod:`.staging`).

Rule: no torch, no runtime. Takes measured values, never measures."""
