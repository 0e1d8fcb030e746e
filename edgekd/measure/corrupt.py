"""Input corruptions per input kind, in *raw* units, each drawn once from a seed.

A data input's preprocessing is undone (:func:`raw_of`), the raw values corrupted, and the
preprocessing redone (:func:`model_input`), so a noise sigma or a gain means something
physical rather than something in normalised units. Images (``[N, ..., H, W]`` float): Gaussian
noise, dead pixels, salt and pepper, shift, contrast, blur, clipped to the images' pixel range.
Signals (``[N, T]`` or ``[N, C, T]`` float, time last): noise at an SNR, gain, a zero-padded
delay. Token ids (integers): dropout to a pad id, random replacement within the ids seen.
Masks, plain values and fixed or state inputs are never corrupted. Each condition's random
draws come from the seed and the condition's own name, so adding a condition never changes
another one, and every model sees the very same corrupted inputs. Imports no torch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.inputs.dataset import InputSpec, Preprocessing
from edgekd.inputs.digits import DIGITS_PIXEL_MAX
from edgekd.settings.config import CORRUPTIONS, RobustnessConfig

# Fixed severities: one named image corruption is one condition, so results compare across builds.
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
# The kinds that have corruptions; every other kind (mask, values) is fed clean.
CORRUPTIBLE = ("image", "signal", "tokens")
# Default image noise when ``noise_sigmas`` is None: these fractions of the pixel range.
NOISE_FRACTIONS = (1 / 8, 1 / 4, 1 / 2)


# -- images ([N, ..., H, W], raw pixels) ----------------------------------------------------


def gaussian_noise(raw: np.ndarray, sigma: float, rng: np.random.Generator,
                   pixel_max: float = DIGITS_PIXEL_MAX, pixel_min: float = 0.0) -> np.ndarray:
    """Additive N(0, sigma^2) noise in raw pixel units, clipped to ``pixel_min..pixel_max``."""
    x = raw.astype(np.float64)
    if sigma > 0:
        x = x + rng.normal(0.0, sigma, size=x.shape)
    return np.clip(x, pixel_min, pixel_max)


def dropout(raw: np.ndarray, rng: np.random.Generator,
            fraction: float = DROPOUT_FRACTION) -> np.ndarray:
    """Each pixel value independently set to 0 with probability ``fraction``."""
    return np.where(rng.random(raw.shape) < fraction, 0.0, raw.astype(np.float64))


def salt_pepper(raw: np.ndarray, rng: np.random.Generator,
                fraction: float = SALT_PEPPER_FRACTION,
                pixel_max: float = DIGITS_PIXEL_MAX) -> np.ndarray:
    """Each pixel value independently replaced with probability ``fraction``, by 0 or the
    maximum."""
    hit = rng.random(raw.shape) < fraction
    salt = rng.random(raw.shape) < 0.5
    return np.where(hit, np.where(salt, pixel_max, 0.0), raw.astype(np.float64))


def shifted(raw: np.ndarray, pixels: int = SHIFT_PIXELS) -> np.ndarray:
    """Every image moved ``pixels`` to the right (the last axis); nothing wraps around."""
    from scipy import ndimage  # library shift with constant fill (np.roll would wrap)

    return ndimage.shift(raw.astype(np.float64), (0,) * (raw.ndim - 1) + (pixels,), order=0,
                         mode="constant", cval=0.0)


def contrast(raw: np.ndarray, factor: float = CONTRAST_FACTOR) -> np.ndarray:
    """Each image pulled towards its own mean (over all its channels and pixels):
    ``mean + factor * (x - mean)``."""
    x = raw.astype(np.float64)
    mean = x.mean(axis=tuple(range(1, x.ndim)), keepdims=True)
    return mean + factor * (x - mean)


def blur(raw: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    """Gaussian blur within each image and channel (the last two axes; the border is 0)."""
    from scipy import ndimage

    return ndimage.gaussian_filter(raw.astype(np.float64),
                                   sigma=(0,) * (raw.ndim - 2) + (sigma, sigma),
                                   mode="constant", cval=0.0)


def _apply(name: str, raw: np.ndarray, rng: np.random.Generator,
           pixel_max: float) -> np.ndarray:
    fns: dict[str, Callable[[], np.ndarray]] = {
        "dropout": lambda: dropout(raw, rng),
        "salt_pepper": lambda: salt_pepper(raw, rng, pixel_max=pixel_max),
        "shift": lambda: shifted(raw), "contrast": lambda: contrast(raw), "blur": lambda: blur(raw),
    }
    if name not in fns:
        raise ValueError(f"unknown corruption {name!r}; allowed: {', '.join(CORRUPTIONS)}")
    return fns[name]()


# -- signals ([N, T] or [N, C, T], time last) -----------------------------------------------


def signal_noise(raw: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise at ``snr_db`` against each sample's (and channel's) RMS about
    its mean; a constant signal gets none."""
    x = raw.astype(np.float64)
    rms = np.sqrt(((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True))
    return x + rng.normal(0.0, 1.0, size=x.shape) * rms / 10 ** (snr_db / 20)


def gain(raw: np.ndarray, factor: float) -> np.ndarray:
    """The signal multiplied by ``factor``."""
    return raw.astype(np.float64) * factor


def delayed(raw: np.ndarray, samples: int) -> np.ndarray:
    """The signal delayed by ``samples`` along time (the last axis), the start zero-padded;
    nothing wraps around."""
    x = raw.astype(np.float64)
    out = np.zeros_like(x)
    if samples <= 0:
        return x
    out[..., samples:] = x[..., :-samples] if samples < x.shape[-1] else 0.0
    return out


# -- token ids (integers) -------------------------------------------------------------------


def token_dropout(raw: np.ndarray, fraction: float, pad_id: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Each token that is not already ``pad_id`` replaced by it with probability ``fraction``."""
    hit = (rng.random(raw.shape) < fraction) & (raw != pad_id)
    return np.where(hit, pad_id, raw).astype(raw.dtype)


def token_replace(raw: np.ndarray, fraction: float, pad_id: int, low: int, high: int,
                  rng: np.random.Generator) -> np.ndarray:
    """Each token that is not ``pad_id`` replaced, with probability ``fraction``, by an id
    drawn uniformly from ``low..high`` (the ids the data uses)."""
    hit = (rng.random(raw.shape) < fraction) & (raw != pad_id)
    ids = rng.integers(low, high, size=raw.shape, endpoint=True)
    return np.where(hit, ids, raw).astype(raw.dtype)


# -- raw units ------------------------------------------------------------------------------


def _per_channel(value: float | tuple[float, ...], ndim: int) -> np.ndarray:
    # The same broadcasting as Preprocessing.apply: one number, or one per channel (axis 1).
    v = np.asarray(value, dtype=np.float64)
    return v.reshape((1, -1) + (1,) * (ndim - 2)) if v.ndim == 1 else v


def raw_of(x: np.ndarray, prep: Preprocessing | None) -> np.ndarray:
    """The raw values behind preprocessed ``x`` (``None``: ``x`` is raw). Integers stay as
    they are; raw values that were integers (8-bit pixels) come back as exact integers."""
    if prep is None or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        return x
    raw = (x.astype(np.float64) * _per_channel(prep.std, x.ndim)
           + _per_channel(prep.mean, x.ndim)) / prep.scale
    snapped = np.round(raw)
    return snapped if np.allclose(raw, snapped, rtol=0, atol=1e-3) else raw


def model_input(raw: np.ndarray, prep: Preprocessing | None, dtype: np.dtype[Any]) -> np.ndarray:
    """Raw values preprocessed again, in the model's input dtype."""
    if prep is not None and np.issubdtype(dtype, np.floating):
        return prep.apply(raw).astype(dtype, copy=False)
    return np.ascontiguousarray(raw.astype(dtype, copy=False))


# -- conditions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    name: str  # "clean", "noise_sigma_2", "dropout", "snr_20db", "image/shift", ...
    description: str
    raw: np.ndarray  # the corrupted input in raw units (images: clipped to the pixel range)
    sigma: float | None = None  # raw pixel units, for the image noise conditions
    kind: str | None = None  # the input kind corrupted (None: clean)
    input: str | None = None  # the input corrupted (None: clean)
    fields: dict[str, Any] = field(default_factory=dict)  # severity, for the report


def rng_for(seed: int, name: str) -> np.random.Generator:
    # Seeded by the condition's own name: adding a condition never changes another one.
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def image_noise_sigmas(config: RobustnessConfig, low: float, high: float) -> tuple[float, ...]:
    """The configured sigmas, or by default 1/8, 1/4 and 1/2 of the pixel range."""
    if config.noise_sigmas is not None:
        return config.noise_sigmas
    return tuple(round(f * (high - low), 6) for f in NOISE_FRACTIONS)


def image_conditions(raw: np.ndarray, config: RobustnessConfig, *, seed: int,
                     low: float = 0.0, high: float = DIGITS_PIXEL_MAX, prefix: str = "",
                     input: str | None = None) -> list[Condition]:
    """One condition per noise sigma and per named corruption of raw images (pixels
    ``low..high``), each clipped back to that range."""
    out = []
    for sigma in image_noise_sigmas(config, low, high):
        name = f"{prefix}noise_sigma_{sigma:g}"
        out.append(Condition(name, f"Gaussian noise, sigma {sigma:g} raw pixel units "
                                   f"(pixels {low:g}..{high:g}), clipped",
                             gaussian_noise(raw, sigma, rng_for(seed, name), high, low),
                             sigma=sigma, kind="image", input=input))
    for corruption in config.corruptions:
        name = prefix + corruption
        corrupted = np.clip(_apply(corruption, raw, rng_for(seed, name), high), low, high)
        out.append(Condition(name, DESCRIPTIONS[corruption], corrupted, kind="image",
                             input=input))
    return out


def conditions(raw: np.ndarray, config: RobustnessConfig, *, seed: int, low: float = 0.0,
               high: float = DIGITS_PIXEL_MAX) -> list[Condition]:
    """The clean images, then one condition per noise sigma and per named corruption."""
    return [Condition("clean", "no corruption", raw.astype(np.float64)),
            *image_conditions(raw, config, seed=seed, low=low, high=high)]


def signal_conditions(raw: np.ndarray, config: RobustnessConfig, *, seed: int,
                      prefix: str = "", input: str | None = None) -> list[Condition]:
    """Noise at each SNR, each gain, each delay of raw signals (time on the last axis)."""
    out = []
    for snr in config.signal_snr_db:
        name = f"{prefix}snr_{snr:g}db"
        out.append(Condition(name, f"Gaussian noise at {snr:g} dB SNR (against each "
                                   "sample's RMS about its mean, per channel)",
                             signal_noise(raw, snr, rng_for(seed, name)), kind="signal",
                             input=input, fields={"snr_db": snr}))
    for factor in config.signal_gains:
        out.append(Condition(f"{prefix}gain_{factor:g}", f"signal multiplied by {factor:g}",
                             gain(raw, factor), kind="signal", input=input,
                             fields={"gain": factor}))
    length = raw.shape[-1]
    for fraction in config.signal_shifts:
        samples = int(round(fraction * length))
        out.append(Condition(f"{prefix}time_shift_{fraction:g}",
                             f"delayed by {samples} of {length} samples ({fraction:g} of the "
                             "length), the start filled with 0, nothing wraps",
                             delayed(raw, samples), kind="signal", input=input,
                             fields={"shift_samples": samples}))
    return out


def token_conditions(raw: np.ndarray, config: RobustnessConfig, *, seed: int,
                     prefix: str = "", input: str | None = None) -> list[Condition]:
    """Token dropout to the pad id and random replacement within the ids the data uses."""
    pad = config.token_pad_id
    low, high = (int(raw.min()), int(raw.max())) if raw.size else (0, 0)
    out = []
    for fraction in config.token_dropout:
        name = f"{prefix}token_dropout_{fraction:g}"
        out.append(Condition(name, f"{fraction:.0%} of the tokens (not already {pad}) "
                                   f"replaced by id {pad}",
                             token_dropout(raw, fraction, pad, rng_for(seed, name)),
                             kind="tokens", input=input, fields={"fraction": fraction}))
    for fraction in config.token_replace:
        name = f"{prefix}token_replace_{fraction:g}"
        out.append(Condition(name, f"{fraction:.0%} of the tokens (not {pad}) replaced by "
                                   f"random ids {low}..{high}",
                             token_replace(raw, fraction, pad, low, high, rng_for(seed, name)),
                             kind="tokens", input=input, fields={"fraction": fraction}))
    return out


def why_not_corruptible(spec: InputSpec, x: np.ndarray) -> str | None:
    """None when ``spec``'s kind has corruptions that fit ``x``; else why not."""
    if spec.role != "data":
        return f"{spec.name} is a {spec.role} input (never corrupted)"
    if spec.kind not in CORRUPTIBLE:
        return f"{spec.name} is a {spec.kind} input (no corruption is defined for it)"
    floating = np.issubdtype(x.dtype, np.floating)
    if spec.kind == "image" and not (floating and x.ndim >= 3):
        return f"{spec.name}: image corruptions need float [N, ..., H, W], got {x.dtype} " \
               f"{list(x.shape)}"
    if spec.kind == "signal" and not (floating and x.ndim in (2, 3)):
        return f"{spec.name}: signal corruptions need float [N, T] or [N, C, T], got " \
               f"{x.dtype} {list(x.shape)}"
    if spec.kind == "tokens" and not np.issubdtype(x.dtype, np.integer):
        return f"{spec.name}: token corruptions need integer ids, got {x.dtype}"
    return None


def for_input(spec: InputSpec, raw: np.ndarray, config: RobustnessConfig, *, seed: int,
              prefix: str = "") -> list[Condition]:
    """The conditions of one corruptible data input, from its raw values."""
    if spec.kind == "image":
        low, high = min(0.0, float(raw.min())), float(raw.max())
        return image_conditions(raw, config, seed=seed, low=low, high=high, prefix=prefix,
                                input=spec.name)
    if spec.kind == "signal":
        return signal_conditions(raw, config, seed=seed, prefix=prefix, input=spec.name)
    return token_conditions(raw, config, seed=seed, prefix=prefix, input=spec.name)
