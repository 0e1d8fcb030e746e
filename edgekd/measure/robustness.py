"""Robustness: test accuracy under input corruptions, for PyTorch models and shipped artifacts.

Every corruption works on *raw* pixels (digits: 0..16), is clipped back to that range, and
only then goes through the data set's preprocessing, so a noise sigma means something
physical (sigma 2 = an eighth of the pixel range) rather than something in normalised
units. Each condition is drawn once from a seed and the condition's name; every model sees
the very same corrupted inputs. A model is anything that maps preprocessed float32 inputs
to logits (:data:`Predict`): the pipeline wraps its PyTorch models, and
:func:`artifact_predictor` loads an artifact in its real runtime. Imports no torch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import get_backend, predict_batches
from edgekd.common.quiet import quiet
from edgekd.inputs.dataset import Dataset, Preprocessing
from edgekd.inputs.digits import DIGITS_PIXEL_MAX, load_digits_raw
from edgekd.settings.config import CORRUPTIONS, RobustnessConfig

Predict = Callable[[np.ndarray], np.ndarray]  # preprocessed float32 [N, ...] -> logits [N, C]

# Fixed severities: one named corruption is one condition, so results compare across builds.
DROPOUT_FRACTION = 0.25
SALT_PEPPER_FRACTION = 0.10
SHIFT_PIXELS = 1
CONTRAST_FACTOR = 0.5
BLUR_SIGMA = 0.7
DESCRIPTIONS = {
    "dropout": f"{DROPOUT_FRACTION:.0%} of pixels set to 0 (dead pixels)",
    "salt_pepper": f"{SALT_PEPPER_FRACTION:.0%} of pixels set to 0 or the maximum, half each",
    "shift": f"image moved {SHIFT_PIXELS} pixel right, the vacated column filled with 0",
    "contrast": f"contrast scaled by {CONTRAST_FACTOR} around each image's mean",
    "blur": f"Gaussian blur, sigma {BLUR_SIGMA} pixels",
}


def gaussian_noise(raw: np.ndarray, sigma: float, rng: np.random.Generator,
                   pixel_max: float = DIGITS_PIXEL_MAX) -> np.ndarray:
    """Additive N(0, sigma^2) noise in raw pixel units, clipped to ``0..pixel_max``."""
    x = raw.astype(np.float64)
    if sigma > 0:
        x = x + rng.normal(0.0, sigma, size=x.shape)
    return np.clip(x, 0.0, pixel_max)


def dropout(raw: np.ndarray, rng: np.random.Generator,
            fraction: float = DROPOUT_FRACTION) -> np.ndarray:
    """Each pixel independently set to 0 with probability ``fraction``."""
    return np.where(rng.random(raw.shape) < fraction, 0.0, raw.astype(np.float64))


def salt_pepper(raw: np.ndarray, rng: np.random.Generator,
                fraction: float = SALT_PEPPER_FRACTION,
                pixel_max: float = DIGITS_PIXEL_MAX) -> np.ndarray:
    """Each pixel independently replaced with probability ``fraction``, by 0 or the maximum."""
    hit = rng.random(raw.shape) < fraction
    salt = rng.random(raw.shape) < 0.5
    return np.where(hit, np.where(salt, pixel_max, 0.0), raw.astype(np.float64))


def shifted(raw: np.ndarray, pixels: int = SHIFT_PIXELS) -> np.ndarray:
    """Every image ``[N, H, W]`` moved ``pixels`` to the right; nothing wraps around."""
    from scipy import ndimage  # library shift with constant fill (np.roll would wrap)

    return ndimage.shift(raw.astype(np.float64), (0, 0, pixels), order=0, mode="constant",
                         cval=0.0)


def contrast(raw: np.ndarray, factor: float = CONTRAST_FACTOR) -> np.ndarray:
    """Each image ``[N, H, W]`` pulled towards its own mean: ``mean + factor * (x - mean)``."""
    x = raw.astype(np.float64)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return mean + factor * (x - mean)


def blur(raw: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur within each image ``[N, H, W]`` (the border is background, 0)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(raw.astype(np.float64), sigma=(0, sigma, sigma),
                                   mode="constant", cval=0.0)


def _apply(name: str, raw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fns: dict[str, Callable[[], np.ndarray]] = {
        "dropout": lambda: dropout(raw, rng), "salt_pepper": lambda: salt_pepper(raw, rng),
        "shift": lambda: shifted(raw), "contrast": lambda: contrast(raw), "blur": lambda: blur(raw),
    }
    if name not in fns:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")
    return fns[name]()


@dataclass(frozen=True)
class Condition:
    name: str  # "clean", "noise_sigma_2", "dropout", ...
    description: str
    raw: np.ndarray  # corrupted raw pixels [N, H, W], float64, clipped to 0..pixel max
    sigma: float | None = None  # raw pixel units, for the noise conditions


def _rng(seed: int, name: str) -> np.random.Generator:
    # Seeded by the condition's own name: adding a condition never changes another one.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def conditions(raw: np.ndarray, config: RobustnessConfig, *, seed: int) -> list[Condition]:
    """The clean images, then one condition per noise sigma and per named corruption."""
    out = [Condition("clean", "no corruption", raw.astype(np.float64))]
    for sigma in config.noise_sigmas:
        name = f"noise_sigma_{sigma:g}"
        out.append(Condition(name, f"Gaussian noise, sigma {sigma:g} raw pixel units "
                                   f"(pixels 0..{DIGITS_PIXEL_MAX:g}), clipped",
                             gaussian_noise(raw, sigma, _rng(seed, name)), sigma=sigma))
    for name in config.corruptions:
        corrupted = np.clip(_apply(name, raw, _rng(seed, name)), 0.0, DIGITS_PIXEL_MAX)
        out.append(Condition(name, DESCRIPTIONS[name], corrupted))
    return out


def raw_test_images(data: Dataset) -> np.ndarray:
    """The raw test images ``[N, 8, 8]`` (0..16) behind ``data.test``."""
    images, _ = load_digits_raw()
    return images[data.test.index]


def accuracy_under(predict: Predict, conds: Sequence[Condition], prep: Preprocessing,
                   y: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy of one model on every condition."""
    out = {}
    for c in conds:
        logits = predict(prep.apply(c.raw)[:, None])
        out[c.name] = round(float((logits.argmax(1) == y).mean()), 6)
    return out


def artifact_predictor(path: Path, runtime: str, threads: int,
                       providers: tuple[Any, ...] = ("CPUExecutionProvider",)) -> Predict:
    """An artifact loaded in its real runtime (as verification loads it), as a :data:`Predict`."""
    with quiet(f"loading {path.name}"):
        runner = get_backend(runtime).load(path, threads, providers)
    return lambda x: predict_batches(runner, x)


def _points(a: float, b: float) -> float:
    return round(100 * (a - b), 2)


def summarize(acc: dict[str, dict[str, float]], conds: Sequence[Condition],
              scratch: str = "student_scratch", distilled: str = "student_distilled"
              ) -> dict[str, Any]:
    """Distilled vs scratch over the corrupted conditions, and one sentence that says it."""
    names = [c.name for c in conds if c.name != "clean"]
    gaps = {n: _points(acc[distilled][n], acc[scratch][n]) for n in names}
    more = sum(g > 0 for g in gaps.values())
    less = sum(g < 0 for g in gaps.values())
    mean_gap = round(sum(gaps.values()) / len(names), 2) if names else 0.0
    clean_gap = _points(acc[distilled]["clean"], acc[scratch]["clean"])

    def drop(model: str) -> float:
        return round(sum(_points(acc[model]["clean"], acc[model][n]) for n in names)
                     / len(names), 2) if names else 0.0

    verdict = ("more" if more > less else "less" if less > more else "no more and no less")
    finding = (f"Under corruption the distilled student is {verdict} robust than the scratch "
               f"student: more accurate in {more} of {len(names)} conditions, less accurate in "
               f"{less}, tied in {len(names) - more - less}; mean gap {mean_gap:+.2f} points "
               f"(clean: {clean_gap:+.2f}); mean drop from clean accuracy "
               f"{drop(distilled):.2f} points distilled vs {drop(scratch):.2f} scratch.")
    return {"conditions": len(names), "distilled_more_accurate": more,
            "distilled_less_accurate": less, "tied": len(names) - more - less,
            "mean_gap_points": mean_gap, "clean_gap_points": clean_gap,
            "mean_drop_points": {distilled: drop(distilled), scratch: drop(scratch)},
            "finding": finding}


def measure_robustness(data: Dataset, config: RobustnessConfig, models: Mapping[str, Predict], *,
            seed: int) -> dict[str, Any]:
    """The report's ``robustness`` section: accuracy per condition per model, distilled minus
    scratch per condition, and a summary (when both students are among ``models``)."""
    labels = data.test.y
    if labels is None:  # robustness runs on the built-in digits, which always have labels
        raise ValueError("measure_robustness needs a labelled test split")
    conds = conditions(raw_test_images(data), config, seed=seed)
    acc = {name: accuracy_under(fn, conds, data.preprocessing, labels)
           for name, fn in models.items()}
    both = "student_scratch" in acc and "student_distilled" in acc
    prep = data.preprocessing
    # The corrupted images have one channel, so a per-channel std has one entry.
    std = prep.std[0] if isinstance(prep.std, tuple) else prep.std
    rows = []
    for c in conds:
        row: dict[str, Any] = {"name": c.name, "description": c.description}
        if c.sigma is not None:
            # The same sigma in the models' input units, for readers who think in those.
            row["sigma_raw"] = c.sigma
            row["sigma_normalised"] = round(c.sigma * prep.scale / std, 4)
        row["accuracy"] = {m: acc[m][c.name] for m in models}
        if both:
            row["distilled_minus_scratch_points"] = _points(acc["student_distilled"][c.name],
                                                            acc["student_scratch"][c.name])
        rows.append(row)
    out: dict[str, Any] = {
        "pixel_units": f"raw pixels 0..{DIGITS_PIXEL_MAX:g}; corrupted, clipped to that range, "
                       "then preprocessed",
        "seed": seed, "samples": len(data.test), "models": list(models), "conditions": rows}
    if both:
        out["summary"] = summarize(acc, conds)
    return out
