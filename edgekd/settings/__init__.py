"""What a build is asked to do, checked before any work starts: build settings
(:mod:`.config`), project files (:mod:`.project`), targets (:mod:`.targets`), budgets
(:mod:`.budgets`) and the one annotation-driven check they share (:mod:`.typed`).

Rule: plain data and validation only. No torch, no runtime, no files written; imports nothing
from edgekd but :mod:`edgekd.errors` and :mod:`edgekd.common`."""
