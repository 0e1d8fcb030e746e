"""Corruptions do what they say, deterministically; artifacts are measured in real ONNX Runtime."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from edgekd import Dataset, verify_artifact
from edgekd.measure.robustness import (
    DESCRIPTIONS,
    accuracy_under,
    artifact_predictor,
    blur,
    conditions,
    contrast,
    dropout,
    gaussian_noise,
    measure_robustness,
    raw_test_images,
    salt_pepper,
    shifted,
    summarize,
)
from edgekd.settings.config import CORRUPTIONS, BuildConfig, RobustnessConfig
from edgekd.train.loop import predictor


@pytest.fixture(scope="module")
def raw(digits: Dataset) -> np.ndarray:
    return raw_test_images(digits)


def test_raw_test_images_are_what_the_test_split_was_made_from(digits: Dataset,
                                                               raw: np.ndarray) -> None:
    assert raw.shape == (len(digits.test), 8, 8) and raw.min() == 0 and raw.max() == 16
    np.testing.assert_array_equal(digits.preprocessing.apply(raw)[:, None], digits.test.x)


def test_noise_has_the_asked_std_in_raw_pixel_units_and_is_seeded() -> None:
    flat = np.full((400, 8, 8), 8.0)  # mid-grey: sigma 1 almost never reaches 0 or 16
    a = gaussian_noise(flat, 1.0, np.random.default_rng(0))
    assert abs((a - flat).std() - 1.0) < 0.03 and abs((a - flat).mean()) < 0.03
    np.testing.assert_array_equal(a, gaussian_noise(flat, 1.0, np.random.default_rng(0)))
    assert not np.array_equal(a, gaussian_noise(flat, 1.0, np.random.default_rng(1)))


def test_noise_is_clipped_to_the_pixel_range(raw: np.ndarray) -> None:
    noisy = gaussian_noise(raw, 8.0, np.random.default_rng(0))
    assert noisy.min() == 0.0 and noisy.max() == 16.0
    assert (noisy == 0.0).mean() > 0.1 and (noisy == 16.0).mean() > 0.05  # clipping happened


def test_sigma_zero_is_the_identity(raw: np.ndarray) -> None:
    np.testing.assert_array_equal(gaussian_noise(raw, 0.0, np.random.default_rng(0)), raw)
    conds = {c.name: c for c in conditions(raw, RobustnessConfig(noise_sigmas=(0.0,),
                                                                 corruptions=()), seed=0)}
    assert list(conds) == ["clean", "noise_sigma_0"]
    np.testing.assert_array_equal(conds["noise_sigma_0"].raw, conds["clean"].raw)


def test_shift_moves_every_pixel_one_column_right(raw: np.ndarray) -> None:
    moved = shifted(raw)
    np.testing.assert_array_equal(moved[:, :, 1:], raw[:, :, :-1])
    assert (moved[:, :, 0] == 0).all()  # vacated column is background, nothing wraps


def test_dropout_zeroes_a_quarter_of_the_pixels(raw: np.ndarray) -> None:
    out = dropout(raw, np.random.default_rng(0))
    lit = raw > 0
    assert abs((out[lit] == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(out[out > 0], raw[out > 0])  # the rest is untouched


def test_salt_pepper_sets_a_tenth_of_the_pixels_to_the_extremes(raw: np.ndarray) -> None:
    out = salt_pepper(raw, np.random.default_rng(0))
    changed = out != raw
    assert set(np.unique(out[changed])) <= {0.0, 16.0}
    assert 0.05 < changed.mean() < 0.10  # ~10 % hit, some already had that value


def test_contrast_keeps_the_mean_and_halves_the_spread(raw: np.ndarray) -> None:
    out = contrast(raw)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), raw.mean(axis=(1, 2)))
    np.testing.assert_allclose(out.std(axis=(1, 2)), 0.5 * raw.std(axis=(1, 2)))


def test_blur_smooths_within_each_image(raw: np.ndarray) -> None:
    out = blur(raw)
    assert out.shape == raw.shape and out.min() >= 0 and out.max() <= 16
    assert (np.abs(np.diff(out, axis=2)).mean() < 0.7 * np.abs(np.diff(raw, axis=2)).mean())


def test_conditions_are_deterministic_and_every_corruption_is_known(raw: np.ndarray) -> None:
    cfg = RobustnessConfig(noise_sigmas=(2.0, 4.0), corruptions=CORRUPTIONS)
    first, again = conditions(raw, cfg, seed=3), conditions(raw, cfg, seed=3)
    assert [c.name for c in first] == ["clean", "noise_sigma_2", "noise_sigma_4", *CORRUPTIONS]
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.raw, b.raw)
        assert a.raw.min() >= 0 and a.raw.max() <= 16
    assert set(DESCRIPTIONS) == set(CORRUPTIONS)
    other = {c.name: c.raw for c in conditions(raw, cfg, seed=4)}
    assert not np.array_equal(other["noise_sigma_2"], first[1].raw)
    np.testing.assert_array_equal(other["shift"], first[-3].raw)  # shift draws nothing


def test_int8_artifact_in_onnx_runtime_keeps_clean_accuracy_at_sigma_0_and_drops_under_noise(
        onnx_pair, digits: Dataset, raw: np.ndarray) -> None:  # type: ignore[no-untyped-def]
    path = onnx_pair["int8"]
    predict = artifact_predictor(path, "onnxruntime", threads=1)
    conds = conditions(raw, RobustnessConfig(noise_sigmas=(0.0, 16.0), corruptions=("shift",)),
                       seed=0)
    acc = accuracy_under(predict, conds, digits.preprocessing, digits.test.y)
    verified = verify_artifact(path, "onnxruntime", x=digits.test.x, y=digits.test.y,
                               reference_logits=predict(digits.test.x), threads=1)
    assert acc["clean"] == verified.accuracy > 0.8
    assert acc["noise_sigma_0"] == acc["clean"]
    assert acc["noise_sigma_16"] < acc["clean"] - 0.3
    assert acc["shift"] < acc["clean"]


def test_measure_reports_every_model_and_the_distilled_minus_scratch_gap(
        onnx_pair, trained_student, digits: Dataset) -> None:  # type: ignore[no-untyped-def]
    # The PyTorch student and its own FP32 ONNX export see the same corrupted inputs, so
    # they must agree condition by condition (within a sample or two of rounding).
    models = {"student_scratch": predictor(trained_student),
              "student_distilled": artifact_predictor(onnx_pair["fp32"], "onnxruntime", 1)}
    out = measure_robustness(digits, RobustnessConfig(), models, seed=0)
    json.dumps(out)  # goes into report.json as is
    names = [c["name"] for c in out["conditions"]]
    assert names == ["clean", "noise_sigma_2", "noise_sigma_4", "noise_sigma_8", "dropout",
                     "shift"]
    for c in out["conditions"]:
        assert set(c["accuracy"]) == set(models)
        assert abs(c["distilled_minus_scratch_points"]) <= 100 * 2 / len(digits.test)
    noise = {c["name"]: c for c in out["conditions"] if "sigma_raw" in c}
    assert noise["noise_sigma_2"]["sigma_normalised"] == pytest.approx(
        2 * digits.preprocessing.scale / digits.preprocessing.std, abs=1e-4)
    clean = out["conditions"][0]["accuracy"]["student_scratch"]
    assert noise["noise_sigma_8"]["accuracy"]["student_scratch"] < clean
    assert out["summary"]["conditions"] == 5 and out["summary"]["finding"].startswith("Under")


def test_summary_sentence_is_computed_from_the_numbers_either_way() -> None:
    conds = conditions(np.zeros((1, 8, 8)), RobustnessConfig(noise_sigmas=(2.0, 4.0),
                                                             corruptions=("shift",)), seed=0)
    scratch = {"clean": 0.95, "noise_sigma_2": 0.90, "noise_sigma_4": 0.80, "shift": 0.70}
    better = {"clean": 0.95, "noise_sigma_2": 0.92, "noise_sigma_4": 0.85, "shift": 0.69}
    s = summarize({"student_scratch": scratch, "student_distilled": better}, conds)
    assert (s["distilled_more_accurate"], s["distilled_less_accurate"], s["tied"]) == (2, 1, 0)
    assert s["mean_gap_points"] == pytest.approx((2 + 5 - 1) / 3, abs=0.01)
    assert "is more robust" in s["finding"] and "in 2 of 3 conditions" in s["finding"]
    s = summarize({"student_scratch": better, "student_distilled": scratch}, conds)
    assert "is less robust" in s["finding"] and "less accurate in 2" in s["finding"]


def test_robustness_config_round_trips_through_json() -> None:
    config = BuildConfig(robustness=RobustnessConfig(noise_sigmas=(1, 3.5), corruptions=("blur",)))
    again = BuildConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.robustness.noise_sigmas == (1.0, 3.5)


@pytest.mark.parametrize("kwargs, message, from_file", [
    ({"noise_sigmas": (-1.0,)}, "noise_sigmas must be finite and >= 0", None),
    ({"noise_sigmas": (float("nan"),)}, "noise_sigmas must be finite",
     "robustness.noise_sigmas[0]: expected a finite number, got nan (float)"),
    ({"noise_sigmas": 2.0}, "noise_sigmas must be a list",
     "robustness.noise_sigmas: expected a list of numbers, got 2.0 (float)"),
    ({"noise_sigmas": (2.0, 2.0)}, "duplicates", None),
    ({"corruptions": ("fog",)}, "unknown corruption 'fog'; allowed: dropout, salt_pepper", None),
    ({"corruptions": "shift"}, "corruptions must be a list of names",
     "robustness.corruptions: expected a list of strings, got 'shift' (str)"),
])
def test_bad_robustness_config_says_what_is_allowed(kwargs, message: str,  # type: ignore[no-untyped-def]
                                                    from_file: str | None) -> None:
    """In Python the config checks itself; from a file (or JSON) the typed check names the
    key and the expected type first."""
    with pytest.raises(ValueError, match=message):
        RobustnessConfig(**kwargs)
    with pytest.raises(ValueError, match=re.escape(from_file) if from_file else message):
        BuildConfig.from_dict({"robustness": {k: list(v) if isinstance(v, tuple) else v
                                              for k, v in kwargs.items()}})


def test_robustness_module_imports_no_torch() -> None:
    code = "import sys, edgekd.measure.robustness; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
