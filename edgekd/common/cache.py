"""One helper for content digests and cache entries.

Every cache of a build (the training stages, the INT8 models, the teacher's outputs) keeps
one folder per key and makes it appear in one rename, so a build killed at any moment
leaves whole entries only.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
