"""Versions of edgekd and of everything that shapes its artifacts (for the manifest)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = ("edgekd", "torch", "numpy", "onnx", "onnxscript", "onnxruntime", "openvino",
            "ai-edge-litert", "tflite-runtime", "litert-torch", "torchao", "scikit-learn",
            "safetensors")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found
