"""edgekd: distill, prune, quantize, export and verify PyTorch models for edge runtimes.

``import edgekd`` stays light (no torch): running and benchmarking artifacts must work on a
device that has only a runtime installed. :func:`build` is imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "build"]


def __getattr__(name: str) -> Any:
    if name == "build":
        from edgekd.pipeline.api import build

        return build
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
