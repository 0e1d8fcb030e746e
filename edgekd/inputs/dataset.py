"""The data a build runs on, preprocessed: :class:`Dataset` of train / test / calibration
(/ validation) :class:`Split` s and the :class:`Preprocessing` that made them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekd.common.cache import digest_of


@dataclass(frozen=True)
class Preprocessing:
    """How raw samples become model inputs: ``x = (raw * scale - mean) / std``, as float32.

    ``mean`` and ``std`` are one number, or one per channel (axis 1 of ``[N, C, ...]``).
    ``raw`` describes the raw input for the report (what a third party feeds).
    """

    scale: float
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    layout: str = "NCHW"
    raw: str = "8x8 grayscale digit, integer pixels 0..16 (scikit-learn digits)"

    def _per_channel(self, value: float | tuple[float, ...], ndim: int) -> np.ndarray:
        v = np.asarray(value, dtype=np.float32)
        return v.reshape((1, -1) + (1,) * (ndim - 2)) if v.ndim == 1 else v

    def apply(self, raw: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # an overflow is inf, refused by name in resolve
            x = raw.astype(np.float32) * np.float32(self.scale)
            return ((x - self._per_channel(self.mean, x.ndim))
                    / self._per_channel(self.std, x.ndim)).astype(np.float32)


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # preprocessed, float32, [N, ...] (NCHW for images)
    y: np.ndarray | None  # int64 class labels, float32 targets (regression), None: unlabeled
    index: np.ndarray  # positions in the source data set

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    calibration: Split
    preprocessing: Preprocessing
    num_classes: int | None  # None: not a classifier (outputs are compared numerically)
    seed: int
    # Accuracy-aware quantization judges INT8 here (never on the test split); None: the
    # calibration split when it is labeled.
    validation: Split | None = None
    sources: dict[str, str] | None = None  # where each split came from (config values)
    classes: tuple[str, ...] | None = None  # class names (image folders): label i is classes[i]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, *self.train.x.shape[1:])

    def fingerprint(self) -> str:
        """The data's content digest: every split's inputs and labels, by split name.
        Changes whenever the data does (or a sample moves to another split)."""
        return digest_of(self._split_fingerprints())

    def _split_fingerprints(self) -> dict[str, str]:
        return {name: split_fingerprint(s) for name, s in (
            ("train", self.train), ("test", self.test), ("calibration", self.calibration),
            ("validation", self.validation)) if s is not None}

    def summary(self) -> dict[str, object]:
        splits = {"train": len(self.train), "test": len(self.test),
                  "calibration": len(self.calibration)}
        if self.validation is not None:
            splits["validation"] = len(self.validation)
        per_split = self._split_fingerprints()  # each split's arrays hashed once
        summary: dict[str, object] = {
            "name": self.name, "seed": self.seed, "num_classes": self.num_classes,
            "splits": splits, "fingerprint": digest_of(per_split),
            "split_fingerprints": per_split,
        }
        if self.sources:
            summary["sources"] = self.sources
        if self.classes:
            summary["classes"] = list(self.classes)
        return summary


def split_fingerprint(split: Split) -> str:
    """The content digest of one split's inputs and labels (dtype, shape and values)."""
    return digest_of(split.x, split.y)
