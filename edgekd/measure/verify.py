"""Verification: run an artifact in its real runtime on the whole test split and compare it
with the PyTorch model it was made from. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import get_backend, predict_batches
from edgekd.common.quiet import quiet
from edgekd.errors import VerificationError


@dataclass(frozen=True)
class Verification:
    accuracy: float | None  # None: no labels, or not a classifier
    top1_agreement: float | None  # None: not a classifier
    max_abs_diff: float  # largest |artifact output - PyTorch output| over the test split
    max_rel_error: float  # worst sample's ||artifact - reference|| / ||reference||
    cosine_min: float  # worst sample's cosine similarity with the reference outputs
    cosine_mean: float
    samples: int

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "top1_agreement": self.top1_agreement,
                "max_abs_diff": self.max_abs_diff, "max_rel_error": self.max_rel_error,
                "cosine_min": self.cosine_min, "cosine_mean": self.cosine_mean}


def compare_outputs(outputs: np.ndarray, reference: np.ndarray, y: np.ndarray | None,
            classifier: bool) -> Verification:
    """How closely ``outputs`` follow ``reference`` (same shape, any rank), per sample."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norm_b = np.linalg.norm(b, axis=1)
    tiny = np.finfo(np.float64).tiny
    rel = np.linalg.norm(a - b, axis=1) / np.maximum(norm_b, tiny)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * norm_b, tiny)
    cos[(norm_b == 0) & (np.linalg.norm(a, axis=1) == 0)] = 1.0  # both all-zero: identical
    acc = agree = None
    if classifier:
        pred = a.argmax(1)
        agree = round(float((pred == b.argmax(1)).mean()), 6)
        if y is not None:
            acc = round(float((pred == y).mean()), 6)
    return Verification(accuracy=acc, top1_agreement=agree,
                        max_abs_diff=round(float(np.abs(a - b).max()), 6),
                        max_rel_error=round(float(rel.max()), 6),
                        cosine_min=round(float(cos.min()), 6),
                        cosine_mean=round(float(cos.mean()), 6), samples=len(a))


def verify_artifact(path: Path, runtime: str, *, x: np.ndarray, y: np.ndarray | None,
                    reference_logits: np.ndarray, threads: int,
                    providers: tuple[Any, ...] = ("CPUExecutionProvider",),
                    classifier: bool = True) -> Verification:
    with quiet(f"loading {path.name}"):  # runtimes log delegate creation to stderr
        runner = get_backend(runtime).load(path, threads, providers)
    outputs = predict_batches(runner, x)
    if outputs.shape != reference_logits.shape:
        raise VerificationError(f"{path.name}: output shape {list(outputs.shape)} differs from "
                                f"the reference model's {list(reference_logits.shape)}; the "
                                "export changed the model, report this with --debug output")
    _require_finite(reference_logits, "the reference model's", path.name)
    _require_finite(outputs, f"{path.name}'s", path.name)
    return compare_outputs(outputs, reference_logits, y, classifier)


def _require_finite(outputs: np.ndarray, whose: str, name: str) -> None:
    """NaN compares false with everything: a cosine or agreement of NaN outputs would pass
    (or fail) for no reason, so non-finite outputs fail verification by name."""
    bad = ~np.isfinite(outputs.astype(np.float64)).reshape(len(outputs), -1).all(1)
    if bad.any():
        raise VerificationError(f"{name}: {whose} outputs on the test split are not finite "
                                f"(NaN or inf in {int(bad.sum())} of {len(outputs)} samples): "
                                "check the model's weights, the training (did it diverge?) and "
                                "the preprocessing")


def require_agreement(name: str, runtime: str, precision: str, result: Verification,
                      min_agreement: float, min_cosine: float = -1.0) -> None:
    """Fail the build, naming the artifact, when it disagrees with its reference model: on
    top-1 for classifiers, on the worst sample's cosine similarity otherwise."""
    if result.top1_agreement is not None and result.top1_agreement < min_agreement:
        raise VerificationError(
            f"{name} ({runtime}, {precision}) agrees with the PyTorch model on only "
            f"{result.top1_agreement:.2%} of the test split (< {min_agreement:.2%}); check the "
            "calibration data, or lower --min-agreement to accept it")
    if result.top1_agreement is None and result.cosine_min < min_cosine:
        raise VerificationError(
            f"{name} ({runtime}, {precision}): the worst test sample's outputs have cosine "
            f"similarity {result.cosine_min:.4f} with the reference model's (< min_cosine "
            f"{min_cosine}); check the calibration data, or lower --set min_cosine=... to "
            "accept it")
