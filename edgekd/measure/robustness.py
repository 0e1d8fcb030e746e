"""Robustness: test figures under input corruptions, for PyTorch models and shipped artifacts,
for any project.

Every data input whose kind has corruptions (:mod:`edgekd.measure.corrupt`: images, 1-D
signals, token ids) is corrupted in raw units, one condition at a time, and every model sees
the very same corrupted inputs, the other inputs clean. A model (:data:`Predict`) maps the data
inputs by name to its first output ``[N, ...]``: the pipeline wraps its PyTorch models, and
:func:`artifact_predictor` loads an artifact in its real runtime. The figure per condition:
classifiers' top-1 accuracy against the labels (``accuracy``), or without labels the top-1
agreement with the model's own clean predictions (``agreement``); other models' RMSE against
the labels (``rmse``), or without labels the deviation from their own clean outputs relative
to those outputs' norm (``relative_deviation``). Where nothing can be corrupted the section is
``{"skipped": why}``. Imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import get_backend, predict_all, predict_batches
from edgekd.common.quiet import quiet
from edgekd.inputs.dataset import Dataset, InputSpec, Preprocessing
from edgekd.inputs.digits import load_digits_raw
from edgekd.measure.corrupt import (
    DESCRIPTIONS,
    Condition,
    blur,
    conditions,
    contrast,
    dropout,
    for_input,
    gaussian_noise,
    model_input,
    raw_of,
    salt_pepper,
    shifted,
    why_not_corruptible,
)
from edgekd.settings.config import RobustnessConfig

__all__ = ["DESCRIPTIONS", "Condition", "Predict", "accuracy_under", "artifact_predictor",
           "blur", "conditions", "contrast", "dropout", "gaussian_noise", "measure_robustness",
           "raw_test_images", "salt_pepper", "shifted", "summarize"]

# The data inputs by name -> the model's first output [N, ...]. A one-input model may also be
# a plain ``x -> output`` function (the form before models had several inputs).
Predict = Callable[[Mapping[str, np.ndarray]], np.ndarray]
# Figures that are fractions (higher is better) and the error figures (lower is better).
FRACTIONS = ("accuracy", "agreement")


def raw_test_images(data: Dataset) -> np.ndarray:
    """The built-in digits' raw test images ``[N, 8, 8]`` (0..16) behind ``data.test``."""
    images, _ = load_digits_raw()
    return images[data.test.index]


def accuracy_under(predict: Callable[[np.ndarray], np.ndarray], conds: Sequence[Condition],
                   prep: Preprocessing, y: np.ndarray) -> dict[str, float]:
    """Top-1 accuracy of a one-input image model on every condition of ``[N, H, W]`` images."""
    out = {}
    for c in conds:
        logits = predict(prep.apply(c.raw)[:, None])
        out[c.name] = round(float((logits.argmax(1) == y).mean()), 6)
    return out


def artifact_predictor(path: Path, runtime: str, threads: int,
                       providers: tuple[Any, ...] = ("CPUExecutionProvider",),
                       specs: Sequence[InputSpec] | None = None
                       ) -> Callable[[Mapping[str, np.ndarray] | np.ndarray], np.ndarray]:
    """An artifact loaded in its real runtime (as verification loads it), as a :data:`Predict`:
    its first output on the data inputs by name, with the fixed and state inputs of ``specs``
    fed alongside (``specs`` None: a one-input model). Also takes the one array of a one-input
    model."""
    with quiet(f"loading {path.name}"):
        runner = get_backend(runtime).load(path, threads, providers)

    def predict(arrays: Mapping[str, np.ndarray] | np.ndarray) -> np.ndarray:
        if specs is None:
            x = arrays if isinstance(arrays, np.ndarray) else _only(arrays)
            return predict_batches(runner, x)
        if isinstance(arrays, np.ndarray):
            names = [s.name for s in specs if s.role == "data"]
            arrays = {names[0]: arrays}
        return predict_all(runner, specs, arrays)[0]

    return predict


def _only(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    if len(arrays) != 1:
        raise ValueError(f"a one-input model was given {len(arrays)} inputs "
                         f"({', '.join(arrays)}): pass the model's input specs")
    return next(iter(arrays.values()))


def _points(a: float, b: float) -> float:
    return round(100 * (a - b), 2)


def summarize(acc: dict[str, dict[str, float]], conds: Sequence[Condition],
              scratch: str = "student_scratch", distilled: str = "student_distilled",
              metric: str = "accuracy") -> dict[str, Any]:
    """Distilled vs scratch over the corrupted conditions, and one sentence that says it
    (``metric``: a fraction, higher is better)."""
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
    word = "accurate" if metric == "accuracy" else "in agreement with its clean predictions"
    finding = (f"Under corruption the distilled student is {verdict} robust than the scratch "
               f"student: more {word} in {more} of {len(names)} conditions, less {word} in "
               f"{less}, tied in {len(names) - more - less}; mean gap {mean_gap:+.2f} points "
               f"(clean: {clean_gap:+.2f}); mean drop from clean {metric} "
               f"{drop(distilled):.2f} points distilled vs {drop(scratch):.2f} scratch.")
    return {"conditions": len(names), "distilled_more_accurate": more,
            "distilled_less_accurate": less, "tied": len(names) - more - less,
            "mean_gap_points": mean_gap, "clean_gap_points": clean_gap,
            "mean_drop_points": {distilled: drop(distilled), scratch: drop(scratch)},
            "finding": finding}


# -- any project ----------------------------------------------------------------------------


def _caller(fn: Callable[..., np.ndarray], arrays: Mapping[str, np.ndarray]
            ) -> tuple[Callable[[Mapping[str, np.ndarray]], np.ndarray], np.ndarray]:
    """``fn`` as a function of the inputs by name, and its output on the clean ``arrays``. A
    one-input model given as a plain ``x -> output`` function is told apart here, once."""
    def first(a: Mapping[str, np.ndarray]) -> np.ndarray:
        return _first(fn(a))

    if len(arrays) != 1:
        return first, first(arrays)
    try:
        return first, first(arrays)
    except (TypeError, AttributeError):
        # It did not take a mapping: it must take the one array (else this raises).
        def by_name(a: Mapping[str, np.ndarray]) -> np.ndarray:
            return _first(fn(next(iter(a.values()))))

        return by_name, by_name(arrays)


def _first(out: Any) -> np.ndarray:
    # A model that returns every output: the first one is measured.
    return np.asarray(out[0] if isinstance(out, list | tuple) else out)


def _metric(data: Dataset, classifier: bool, clean_shape: tuple[int, ...]) -> str:
    y = data.test.y
    if classifier:
        return "accuracy" if y is not None and np.issubdtype(y.dtype, np.integer) \
            else "agreement"
    n = clean_shape[0]
    if y is not None and y.size == int(np.prod(clean_shape)) and len(y) == n:
        return "rmse"
    return "relative_deviation"


def _figure(metric: str, out: np.ndarray, clean: np.ndarray, y: np.ndarray | None) -> float:
    if metric == "accuracy":
        assert y is not None
        return float((out.argmax(-1) == y).mean())
    if metric == "agreement":
        return float((out.argmax(-1) == clean.argmax(-1)).mean())
    a = out.reshape(len(out), -1).astype(np.float64)
    if metric == "rmse":
        assert y is not None
        return float(np.sqrt(((a - y.reshape(len(y), -1)) ** 2).mean()))
    b = clean.reshape(len(clean), -1).astype(np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), np.finfo(np.float64).tiny))


def _plan(data: Dataset, config: RobustnessConfig, *, seed: int
          ) -> tuple[list[Condition], dict[str, np.ndarray], list[str], dict[str, str]]:
    """Every condition (clean first), the clean model inputs, why each data input that is
    not corrupted is not, and the units each corrupted input was corrupted in."""
    specs = [s for s in data.input_specs if s.role == "data"]
    arrays = data.arrays(data.test)
    prep_of: dict[str, Preprocessing | None] = {
        s.name: data.preprocessing if i == 0 else None for i, s in enumerate(specs)}
    reasons, corruptible, units = [], [], {}
    for s in specs:
        why = why_not_corruptible(s, arrays[s.name])
        if why:
            reasons.append(why)
        else:
            corruptible.append(s)
    # Prefixed by the input's name only when several inputs are corrupted (the built-in
    # demonstration's names, and so its random draws, stay as they were).
    several = len(corruptible) > 1
    conds = [Condition("clean", "no corruption", arrays[specs[0].name] if specs else
                       np.zeros(0))]
    for s in corruptible:
        raw = raw_of(arrays[s.name], prep_of[s.name])
        units[s.name] = _units(s, raw, prep_of[s.name])
        made = for_input(s, raw, config, seed=seed, prefix=f"{s.name}/" if several else "")
        if not made:
            reasons.append(f"{s.name}: no {s.kind} corruption is configured ({_keys(s.kind)} "
                           "are empty)")
        conds += made
    return conds, arrays, reasons, units


def _keys(kind: str) -> str:
    return {"image": "robustness.noise_sigmas and robustness.corruptions",
            "signal": "robustness.signal_snr_db, signal_gains and signal_shifts",
            "tokens": "robustness.token_dropout and token_replace"}[kind]


def _inputs_under(c: Condition, data: Dataset, arrays: dict[str, np.ndarray]
                  ) -> dict[str, np.ndarray]:
    if c.input is None:
        return arrays
    first = next(s.name for s in data.input_specs if s.role == "data")
    prep = data.preprocessing if c.input == first else None
    return {**arrays, c.input: model_input(c.raw, prep, arrays[c.input].dtype)}


def _units(spec: InputSpec, raw: np.ndarray, prep: Preprocessing | None) -> str:
    how = (f"raw units ({prep.raw}), corrupted, then preprocessed" if prep is not None
           else "as fed (no preprocessing)")
    if spec.kind == "image":
        how = (f"raw pixels {min(0.0, float(raw.min())):g}..{float(raw.max()):g}; corrupted, "
               "clipped to that range, then preprocessed" if prep is not None else
               f"pixels {min(0.0, float(raw.min())):g}..{float(raw.max()):g} as fed; "
               "corrupted, clipped to that range")
    return f"{spec.name} ({spec.kind}): {how}"


def _sigma_normalised(sigma: float, prep: Preprocessing | None) -> float | None:
    if prep is None:
        return sigma
    std = prep.std
    if isinstance(std, tuple):
        if len(set(std)) != 1:
            return None  # a different sigma per channel: see the channels' std
        std = std[0]
    return round(sigma * prep.scale / std, 4)


def measure_robustness(data: Dataset, config: RobustnessConfig,
                       models: Mapping[str, Callable[..., np.ndarray]], *,
                       seed: int) -> dict[str, Any]:
    """The report's ``robustness`` section: one figure per condition per model, distilled
    minus scratch per condition and a summary (when both students are among ``models`` and
    the figure is a fraction); ``{"skipped": why}`` where nothing can be measured."""
    if not models:
        return {"skipped": "no models to measure"}
    if len(data.test) == 0:
        return {"skipped": "the test split has no samples"}
    conds, arrays, reasons, units = _plan(data, config, seed=seed)
    if len(conds) == 1:
        return {"skipped": "no input can be corrupted: "
                           + ("; ".join(reasons) or "the model has no data input")}
    called = {name: _caller(fn, arrays) for name, fn in models.items()}
    callers = {name: fn for name, (fn, _) in called.items()}
    clean = {name: out for name, (_, out) in called.items()}
    classifier = data.num_classes is not None or bool(data.outputs and
                                                      data.outputs[0].classifier)
    metric = _metric(data, classifier, next(iter(clean.values())).shape)
    y = data.test.y
    figures: dict[str, dict[str, float]] = {name: {} for name in models}
    for c in conds:
        inputs = _inputs_under(c, data, arrays)
        for name, fn in callers.items():
            got = clean[name] if c.input is None else fn(inputs)
            figures[name][c.name] = round(_figure(metric, got, clean[name], y), 6)
    both = metric in FRACTIONS and "student_scratch" in figures \
        and "student_distilled" in figures
    first = next(s.name for s in data.input_specs if s.role == "data")
    rows = []
    for c in conds:
        row: dict[str, Any] = {"name": c.name, "description": c.description}
        if c.input is not None:
            row |= {"kind": c.kind, "input": c.input}
        if c.sigma is not None:
            # The same sigma in the models' input units, for readers who think in those.
            row["sigma_raw"] = c.sigma
            row["sigma_normalised"] = _sigma_normalised(
                c.sigma, data.preprocessing if c.input == first else None)
        row |= c.fields
        row[metric] = {m: figures[m][c.name] for m in models}
        if both:
            row["distilled_minus_scratch_points"] = _points(
                figures["student_distilled"][c.name], figures["student_scratch"][c.name])
        rows.append(row)
    out: dict[str, Any] = {"metric": metric, "units": "; ".join(units.values()), "seed": seed,
                           "samples": len(data.test), "models": list(models),
                           "conditions": rows}
    images = [u for u in units.values() if u.split(": ", 1)[0].endswith("(image)")]
    if len(images) == 1:  # the built-in demonstration's key: its one image input
        out["pixel_units"] = images[0].split(": ", 1)[1]
    if reasons:
        out["not_corrupted"] = reasons
    if both:
        out["summary"] = summarize(figures, conds, metric=metric)
    return out
