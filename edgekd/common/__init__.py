"""Small helpers every room may use: quieting third-party output (:mod:`.quiet`), the
one cache-entry and digest helper (:mod:`.cache`).

Rule: standard library and NumPy only; imports nothing from edgekd but :mod:`edgekd.errors`."""
