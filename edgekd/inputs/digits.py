"""The built-in demonstration data: scikit-learn's bundled handwritten digits, split and
preprocessed.

Splits are fixed by a seed and the shipped calibration file (``calibration/digits.npz``):
the calibration samples are taken out first, then the rest is split into train and test,
so calibration and test never share a sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, Preprocessing, Split

DIGITS_PIXEL_MAX = 16.0  # sklearn's digits are 8x8 images with integer pixels in 0..16
TEST_FRACTION = 0.2
CALIBRATION_SAMPLES = 200
CALIBRATION_SEED = 0


def load_digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as uint8 images ``[N, 8, 8]`` (0..16) and int64 labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.uint8), bunch.target.astype(np.int64)


def make_digits_calibration(path: Path, *, samples: int = CALIBRATION_SAMPLES,
                            seed: int = CALIBRATION_SEED) -> None:
    """Write the default calibration file: a stratified sample of raw digits and their index."""
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_raw()
    index = np.arange(len(labels))
    _, calib = train_test_split(index, test_size=samples, stratify=labels, random_state=seed)
    calib = np.sort(calib)
    np.savez_compressed(path, x=images[calib], index=calib)


def load_calibration_file(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a calibration ``.npz``: ``x`` (raw samples) and, optionally, ``index``."""
    if not path.is_file():
        raise UsageError(f"calibration file {path} does not exist: pass an existing .npz "
                         "(see calibration/README.md for the format)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            x = npz["x"]
            index = npz["index"] if "index" in npz.files else None
    except (OSError, ValueError, KeyError) as exc:
        raise UsageError(f"calibration file {path} is not a valid .npz with an 'x' array "
                         f"({exc}): see calibration/README.md for the format") from exc
    if len(x) == 0:
        raise UsageError(f"calibration file {path} holds no samples: add at least one")
    return x, index


def load_digits(calibration_file: Path, *, seed: int = 0) -> Dataset:
    """Digits split into train / test / calibration, preprocessed to ``[N, 1, 8, 8]``."""
    from sklearn.model_selection import train_test_split

    images, labels = load_digits_raw()
    calib_raw, calib_index = load_calibration_file(calibration_file)
    if calib_index is None or calib_raw.shape[1:] != images.shape[1:]:
        raise UsageError(f"{calibration_file} is not a digits calibration file (it needs 'x' "
                         "of shape [N, 8, 8] and 'index'): restore it from the repository")
    if not np.array_equal(images[calib_index], calib_raw):
        raise UsageError(f"{calibration_file} does not match scikit-learn's digits: restore "
                         "it from the repository")

    rest = np.setdiff1d(np.arange(len(labels)), calib_index)
    train_idx, test_idx = train_test_split(rest, test_size=TEST_FRACTION, stratify=labels[rest],
                                           random_state=seed)
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)

    scale = 1.0 / DIGITS_PIXEL_MAX
    train_scaled = images[train_idx].astype(np.float64) * scale
    prep = Preprocessing(scale=scale, mean=round(float(train_scaled.mean()), 6),
                         std=round(float(train_scaled.std()), 6))

    def split(idx: np.ndarray) -> Split:
        return Split(x=prep.apply(images[idx])[:, None], y=labels[idx], index=idx)

    return Dataset(name="sklearn-digits", train=split(train_idx), test=split(test_idx),
                   calibration=split(np.asarray(calib_index)), preprocessing=prep,
                   num_classes=10, seed=seed)
