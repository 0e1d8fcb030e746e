"""Verification: run an artifact in its real runtime on the whole test split and compare it
with the PyTorch model it was made from. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import get_backend, predict_batches
from edgekd.errors import VerificationError
from edgekd.quiet import quiet


@dataclass(frozen=True)
class Verification:
    accuracy: float
    top1_agreement: float
    max_abs_diff: float  # largest |artifact logit - PyTorch logit| over the test split
    samples: int


def verify_artifact(path: Path, runtime: str, *, x: np.ndarray, y: np.ndarray,
                    reference_logits: np.ndarray, threads: int,
                    providers: tuple[Any, ...] = ("CPUExecutionProvider",)) -> Verification:
    with quiet(f"loading {path.name}"):  # runtimes log delegate creation to stderr
        runner = get_backend(runtime).load(path, threads, providers)
    logits = predict_batches(runner, x)
    if logits.shape != reference_logits.shape:
        raise ValueError(f"{path.name}: output shape {logits.shape} differs from PyTorch's "
                         f"{reference_logits.shape}")
    pred = logits.argmax(1)
    return Verification(
        accuracy=round(float((pred == y).mean()), 6),
        top1_agreement=round(float((pred == reference_logits.argmax(1)).mean()), 6),
        max_abs_diff=round(float(np.abs(logits - reference_logits).max()), 6),
        samples=len(y),
    )


def require_agreement(name: str, runtime: str, precision: str, result: Verification,
                      min_agreement: float) -> None:
    """Fail the build, naming the artifact, when it disagrees with its PyTorch model."""
    if result.top1_agreement < min_agreement:
        raise VerificationError(
            f"{name} ({runtime}, {precision}) agrees with the PyTorch model on only "
            f"{result.top1_agreement:.2%} of the test split (< {min_agreement:.2%}); check the "
            "calibration data, or lower --min-agreement to accept it")
