from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.errors import UsageError
from edgekd.inputs.digits import load_digits, load_digits_raw, make_digits_calibration
from edgekd.settings.resources import default_calibration_file


def test_splits_are_disjoint_and_cover_the_data(digits) -> None:
    train, test, calib = (set(s.index.tolist()) for s in (digits.train, digits.test,
                                                           digits.calibration))
    assert not train & test and not train & calib and not test & calib
    assert len(train | test | calib) == 1797
    assert digits.input_shape == (1, 1, 8, 8)
    assert digits.train.x.dtype == np.float32


def test_preprocessing_is_what_the_report_says(digits) -> None:
    images, labels = load_digits_raw()
    prep = digits.preprocessing
    i = int(digits.test.index[0])
    np.testing.assert_allclose(digits.test.x[0, 0], (images[i] * prep.scale - prep.mean) / prep.std,
                               rtol=1e-6)
    assert digits.test.y[0] == labels[i]
    assert abs(digits.train.x.mean()) < 1e-3 and abs(digits.train.x.std() - 1) < 1e-3


def test_shipped_calibration_file_is_reproducible(tmp_path: Path) -> None:
    again = tmp_path / "digits.npz"
    make_digits_calibration(again)
    with np.load(default_calibration_file()) as shipped, np.load(again) as made:
        np.testing.assert_array_equal(shipped["x"], made["x"])
        np.testing.assert_array_equal(shipped["index"], made["index"])


def test_missing_or_foreign_calibration_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        load_digits(tmp_path / "nope.npz")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UsageError, match="not a valid .npz"):
        load_digits(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", x=np.zeros((5, 8, 8), np.uint8), index=np.arange(5))
    with pytest.raises(UsageError, match="does not match"):
        load_digits(tmp_path / "other.npz")
