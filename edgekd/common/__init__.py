"""Small helpers every room may use: quieting third-party output (:mod:`.quiet`), and the
one digest and cache-entry helper (:mod:`.cache`: ``Digest`` / ``digest_of`` for content
keys, ``CacheDir`` for atomic, evictable cache entries, used by the stage, INT8 and
teacher-output caches), progress events (:mod:`.progress`) and the units numbers are
written in (:mod:`.units`).

Rule: standard library and NumPy only; imports nothing from edgekd but :mod:`edgekd.errors`."""
