"""``edgekd search``: the most accurate student within the budget.

Rule: search sits between the CLI and the pipeline. It runs whole builds
(:func:`edgekd.pipeline.run.build`) for each candidate and imports Optuna, torch and the
pipeline lazily (inside functions), so that loading the CLI stays cheap; it never prints
(progress goes through :mod:`edgekd.common.progress`).

- :mod:`.space`: a candidate from the ``[search]`` table (:mod:`edgekd.settings.search`),
  and the project that builds it;
- :mod:`.trial`: one candidate measured: untrained first (latency and size do not depend on
  the weights, so a candidate over the latency or size budget is never trained), then
  trained by a real build that shares the stage cache (the teacher trains once);
- :mod:`.study`: the Optuna study, its storage and resuming after a kill;
- :mod:`.outcome`: figures, budget checks, the Pareto front, the winner and why it won;
- :mod:`.api`: :func:`~edgekd.search.api.search`, all of the above, then the winner built
  into ``OUT/<target>`` with the summary in its report and in ``OUT/<target>/search/``.
"""
