"""Training: the loop (:mod:`.loop`), distillation objectives (:mod:`.distill`),
augmented views (:mod:`.augment`), the teacher-output cache (:mod:`.teacher_cache`), the stage
cache (:mod:`.stage_cache`) and the built-in models (:mod:`.models`).

Rule: torch lives here. Imports :mod:`edgekd.inputs` and :mod:`edgekd.settings`; writes only
into the build's cache folder."""
