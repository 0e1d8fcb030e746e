"""Verification: run an artifact in its real runtime on the whole test split and compare every
output with the model it was made from (:func:`verify_artifact`; stateful models also as a
stream: :mod:`edgekd.measure.stream`). The gate (:func:`require_outputs`) fails the build
naming the artifact, the worst output, the figure and what to try. Imports no torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import get_backend, predict_all, predict_batches
from edgekd.common.quiet import quiet
from edgekd.errors import VerificationError
from edgekd.inputs.dataset import InputSpec, OutputSpec
from edgekd.settings.config import BuildConfig

# Cosine similarity is reported (and gated) only for outputs with at least this many
# elements per sample: the cosine of one element is always +-1 whatever the error, and with
# a handful it is mostly the sign pattern (a 2-element output at cosine 0.99 may still be
# off by 14 % of its norm). From 8 elements on it measures the direction of a vector.
MIN_COSINE_ELEMENTS = 8
# Within this of chance (1 / classes), a classifier has learned (next to) nothing: the same
# margin as the stage warnings of edgekd.pipeline.training.
NEAR_CHANCE = 0.05



@dataclass(frozen=True)
class Limits:
    """How closely an artifact must follow its reference model (BuildConfig's fields).

    ``max_output_error`` 0.2 was measured on healthy INT8 models (ONNX Runtime, minmax
    calibration): worst |Δ| / range 0.018 for the digits CNN's logits, 0.075 for an MLP
    regressor, 0.019 for a sigmoid probability head, 0.027 / 0.052 for the probability /
    state of a 64-in, 16-state recurrent cell (tests/test_verify_outputs.py). On an x86 CPU
    without VNNI, ONNX Runtime's u8 x s8 integer kernels saturate unless weights use
    reduce_range: the regressor then measured 0.13, the probability head 0.69 (decisions
    still 98.75 % the same): a real error on that CPU, and failing it is right. A
    probability off by 0.23 (the hand-frozen audio model of issue 13) fails.
    """

    min_agreement: float = 0.98  # top-1, classifier outputs
    min_cosine: float = 0.99  # worst sample, outputs of >= MIN_COSINE_ELEMENTS elements
    max_output_error: float = 0.2  # worst |Δ| / the output's range, non-classifier outputs
    min_decision_agreement: float = 0.98  # outputs with a threshold

    @classmethod
    def of(cls, config: BuildConfig) -> Limits:
        return cls(config.min_agreement, config.min_cosine, config.max_output_error,
                   config.min_decision_agreement)


@dataclass(frozen=True)
class OutputCheck:
    """How closely one output of an artifact follows the reference's, over ``samples``."""

    name: str
    elements: int  # per sample
    samples: int
    classifier: bool
    max_abs_error: float  # largest |artifact - reference|
    # max |Δ| / ``scale``: the reference's range (max - min) of this output over the whole
    # set compared; a sample's own norm means nothing for a scalar output.
    rel_error: float
    rel_error_p99: float  # 99th percentile over samples of each sample's max |Δ| / scale
    scale: float
    cosine_min: float | None = None  # None: fewer than MIN_COSINE_ELEMENTS elements
    cosine_mean: float | None = None
    top1_agreement: float | None = None  # classifier outputs (class axis last)
    accuracy: float | None = None  # classifier output with labels
    threshold: float | None = None
    decision_agreement: float | None = None  # share of samples with the same output > threshold
    non_finite: int = 0  # samples with NaN or inf in the artifact's output
    reference_non_finite: int = 0  # ... in the reference's

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verification:
    """The first output's figures at the top level, as in reports before several outputs
    (``max_rel_error``, cosine: per sample, normalised by the sample's norm), and every
    output's :class:`OutputCheck` in ``outputs``."""

    accuracy: float | None  # None: no labels, or not a classifier
    top1_agreement: float | None  # None: not a classifier
    max_abs_diff: float  # largest |artifact output - PyTorch output| over the test split
    max_rel_error: float  # worst sample's ||artifact - reference|| / ||reference||
    cosine_min: float  # worst sample's cosine similarity with the reference outputs
    cosine_mean: float
    samples: int
    outputs: tuple[OutputCheck, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "top1_agreement": self.top1_agreement,
                "max_abs_diff": self.max_abs_diff, "max_rel_error": self.max_rel_error,
                "cosine_min": self.cosine_min, "cosine_mean": self.cosine_mean,
                "outputs": [o.to_dict() for o in self.outputs]}


# -- figures -------------------------------------------------------------------------------


def _r(v: float) -> float:
    return round(float(v), 6)


def compare_outputs(outputs: np.ndarray, reference: np.ndarray, y: np.ndarray | None,
                    classifier: bool) -> Verification:
    """How closely ``outputs`` follow ``reference`` (same shape, any rank): a one-output
    model's :class:`Verification`."""
    check = compare_output("output", outputs, reference, OutputSpec("output", classifier), y)
    return _verification(outputs, reference, (check,))


def _verification(first: np.ndarray, reference: np.ndarray, checks: tuple[OutputCheck, ...]
                  ) -> Verification:
    """``checks`` with the first output's figures at the top level, as before several
    outputs: relative error and cosine per sample, normalised by the sample's own norm."""
    a = first.reshape(len(first), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    norm_b = np.linalg.norm(b, axis=1)
    tiny = np.finfo(np.float64).tiny
    rel = np.linalg.norm(a - b, axis=1) / np.maximum(norm_b, tiny)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * norm_b, tiny)
    cos[(norm_b == 0) & (np.linalg.norm(a, axis=1) == 0)] = 1.0  # both all-zero: identical
    return Verification(accuracy=checks[0].accuracy, top1_agreement=checks[0].top1_agreement,
                        max_abs_diff=_r(np.abs(a - b).max()), max_rel_error=_r(rel.max()),
                        cosine_min=_r(cos.min()), cosine_mean=_r(cos.mean()), samples=len(a),
                        outputs=checks)


def output_range(reference: np.ndarray) -> float:
    """What an output's errors are divided by: its range over the set, else (a constant
    output) its magnitude, else 1 (errors in absolute units)."""
    b = reference[np.isfinite(reference)].astype(np.float64)
    if b.size == 0:
        return 1.0
    spread = float(b.max() - b.min())
    return spread if spread > 0 else float(np.abs(b).max()) or 1.0


def compare_output(name: str, outputs: np.ndarray, reference: np.ndarray,
                   spec: OutputSpec | None = None, y: np.ndarray | None = None, *,
                   scale: float | None = None, rates: bool = True) -> OutputCheck:
    """One output of an artifact against the reference's (``[samples, ...]``, same shape).
    ``scale``: the range to divide errors by (default: ``reference``'s). ``rates``: compute
    top-1 and decision agreement (off for a single sample, where a rate means nothing).
    Samples with NaN or inf on either side are counted and left out of the figures."""
    spec = spec or OutputSpec(name)
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    bad_a, bad_b = ~np.isfinite(a).all(1), ~np.isfinite(b).all(1)
    ok = ~(bad_a | bad_b)
    a, b = a[ok], b[ok]
    scale = output_range(b) if scale is None else scale
    figures: dict[str, Any] = {"max_abs_error": float("nan"), "rel_error": float("nan"),
                               "rel_error_p99": float("nan")}
    if len(a):
        worst = np.abs(a - b).max(1)
        figures = {"max_abs_error": _r(worst.max()), "rel_error": _r(worst.max() / scale),
                   "rel_error_p99": _r(np.percentile(worst, 99) / scale)}
    if a.shape[1] >= MIN_COSINE_ELEMENTS and len(a):
        tiny = np.finfo(np.float64).tiny
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = (a * b).sum(1) / np.maximum(na * nb, tiny)
        cos[(na == 0) & (nb == 0)] = 1.0  # both all-zero: identical
        figures.update(cosine_min=_r(cos.min()), cosine_mean=_r(cos.mean()))
    if rates and spec.classifier and len(a):
        pred = a.argmax(1)
        figures["top1_agreement"] = _r((pred == b.argmax(1)).mean())
        if y is not None:
            figures["accuracy"] = _r((pred == np.asarray(y)[ok]).mean())
    if rates and spec.threshold is not None and len(a):
        t = spec.threshold
        figures["decision_agreement"] = _r(((a > t) == (b > t)).all(1).mean())
    return OutputCheck(name=name, elements=int(a.shape[1]), samples=len(outputs),
                       classifier=spec.classifier, scale=_r(scale), threshold=spec.threshold,
                       non_finite=int(bad_a.sum()), reference_non_finite=int(bad_b.sum()),
                       **figures)


# -- the test split ------------------------------------------------------------------------


def verify_artifact(path: Path, runtime: str, *, threads: int, y: np.ndarray | None = None,
                    x: np.ndarray | None = None, reference_logits: np.ndarray | None = None,
                    providers: tuple[Any, ...] = ("CPUExecutionProvider",),
                    classifier: bool = True, inputs: Sequence[InputSpec] | None = None,
                    arrays: Mapping[str, np.ndarray] | None = None,
                    references: Sequence[np.ndarray] | None = None,
                    outputs: Sequence[OutputSpec] | None = None) -> Verification:
    """The artifact at ``path`` in its runtime on the whole test split, every output against
    the reference's. A one-input model: ``x`` and ``reference_logits`` (``classifier``
    says how its output is compared). Any model: ``inputs`` (every input, model order),
    ``arrays`` (the data inputs by name), ``references`` and ``outputs`` (every output,
    model order); ``y`` labels the first classifier output. Non-finite outputs fail here."""
    with quiet(f"loading {path.name}"):  # runtimes log delegate creation to stderr
        runner = get_backend(runtime).load(path, threads, providers)
    if inputs is None or arrays is None or references is None:
        if x is None or reference_logits is None:
            raise TypeError("verify_artifact needs x and reference_logits, or inputs, "
                            "arrays and references")
        got = [predict_batches(runner, x)]
        references = [reference_logits]
        outputs = [OutputSpec((runner.output_names or ["output"])[0], classifier)]
    else:
        got = predict_all(runner, inputs, arrays, outputs=outputs)
        outputs = list(outputs or [OutputSpec(n) for n in runner.output_names])
    _require_shapes(path.name, got, references, outputs)
    for out, ref, spec in zip(got, references, outputs, strict=True):
        what = "outputs" if len(outputs) == 1 else f"outputs ({spec.name!r})"
        _require_finite(ref, f"the reference model's {what}", path.name)
        _require_finite(out, f"{path.name}'s {what}", path.name)
    labelled = next((s.name for s in outputs if s.classifier), None)
    checks = tuple(compare_output(s.name, out, ref, s, y if s.name == labelled else None)
                   for out, ref, s in zip(got, references, outputs, strict=True))
    return _verification(got[0], references[0], checks)


def _require_shapes(name: str, got: Sequence[np.ndarray], references: Sequence[np.ndarray],
                    outputs: Sequence[OutputSpec]) -> None:
    if not len(got) == len(references) == len(outputs):
        raise VerificationError(f"{name}: returns {len(got)} outputs where the reference model "
                                f"returns {len(references)} ({len(outputs)} declared); the "
                                "export changed the model, report this with --debug output")
    for out, ref, spec in zip(got, references, outputs, strict=True):
        if out.shape != ref.shape:
            what = "output" if len(outputs) == 1 else f"output {spec.name!r}"
            raise VerificationError(f"{name}: {what} shape {list(out.shape)} differs from "
                                    f"the reference model's {list(ref.shape)}; the export "
                                    "changed the model, report this with --debug output")


def _require_finite(outputs: np.ndarray, whose: str, name: str) -> None:
    """NaN compares false with everything: a cosine or agreement of NaN outputs would pass
    (or fail) for no reason, so non-finite outputs fail verification by name."""
    bad = ~np.isfinite(outputs.astype(np.float64)).reshape(len(outputs), -1).all(1)
    if bad.any():
        raise VerificationError(f"{name}: {whose} on the test split are not finite "
                                f"(NaN or inf in {int(bad.sum())} of {len(outputs)} samples): "
                                "check the model's weights, the training (did it diverge?) and "
                                "the preprocessing")


# -- gates ---------------------------------------------------------------------------------


def _shortfall(value: float, limit: float) -> float:
    """How many times the allowed shortfall from 1 (agreement, cosine) ``value`` falls."""
    return (1 - value) / max(1 - limit, 1e-9)


def _failures(check: OutputCheck, limits: Limits, where: str, train: str
              ) -> list[tuple[float, str, str, str]]:
    """Each figure of ``check`` past its limit: (how many times the allowed shortfall, the
    output, what is wrong, the setting that holds it)."""
    o, out = f"output {check.name!r}", []
    if check.non_finite or check.reference_non_finite:
        side = "the artifact's" if check.non_finite else "the reference model's"
        count = check.non_finite or check.reference_non_finite
        return [(float("inf"), check.name, f"{side} {o} is NaN or inf on {count} of "
                                           f"{check.samples} samples {where}", "")]
    if check.top1_agreement is not None and check.top1_agreement < limits.min_agreement:
        near = (check.accuracy is not None and check.elements > 1
                and check.accuracy < 1 / check.elements + NEAR_CHANCE)
        out.append((_shortfall(check.top1_agreement, limits.min_agreement), check.name,
                    f"{o} agrees on top-1 for only {check.top1_agreement:.2%} of the samples "
                    f"{where} (min_agreement {limits.min_agreement:.2%})"
                    + (f"; the model is near chance (accuracy {check.accuracy:.1%}, chance "
                       f"{1 / check.elements:.1%}): its scores are almost flat, so small INT8 "
                       "changes flip its top-1; " + train if near else ""), "min_agreement"))
    a = check.decision_agreement
    if a is not None and a < limits.min_decision_agreement:
        out.append((_shortfall(a, limits.min_decision_agreement), check.name,
                    f"{o}: decisions (> {check.threshold:g}) differ from the reference model's "
                    f"on {1 - a:.2%} of the samples {where} (agreement {a:.2%} < "
                    f"min_decision_agreement {limits.min_decision_agreement:.2%})",
                    "min_decision_agreement"))
    # A classifier's INT8 logits legitimately move by more than a regressor's outputs while
    # its decisions hold: classifier outputs are held to top-1 agreement, not to the error.
    if not check.classifier and check.rel_error > limits.max_output_error:
        out.append((check.rel_error / limits.max_output_error, check.name,
                    f"{o} is off by up to {check.max_abs_error:.4g} {where}, "
                    f"{check.rel_error:.1%} of its range {check.scale:.4g} (max_output_error "
                    f"{limits.max_output_error:.1%}; 99% of samples within "
                    f"{check.rel_error_p99:.1%})", "max_output_error"))
    c = check.cosine_min
    if not check.classifier and c is not None and c < limits.min_cosine:
        out.append((_shortfall(c, limits.min_cosine), check.name,
                    f"{o}: the worst sample's cosine similarity is {c:.4f} {where} "
                    f"(min_cosine {limits.min_cosine})", "min_cosine"))
    return out


def _advice(precision: str, setting: str) -> str:
    if not setting:
        return ("check the model's weights, the training (did it diverge?), the preprocessing"
                + (" and the calibration data (an activation range that overflows)"
                   if precision == "int8" else ""))
    relax = f"relax {setting}" if setting.startswith("--") else f"relax --set {setting}=..."
    if precision != "int8":
        return ("a float artifact should match its model: check the export (opset, "
                f"converter version) and report this with --debug output; or {relax}")
    if "min_cosine" in setting:
        # An embedding off in direction is a different embedding: a lower limit would ship a
        # useless model (issue 16: worst cosine 0.10, 31 % retrieval agreement), so the
        # first steps keep more of the model in float or skip INT8, never the limit.
        return ("first try more or more representative calibration data "
                "(quant.calibration_samples, data.calibration), then keep the sensitive "
                "layers in float (quant.keep_float = [\"node\", ...], or quant.min_cosine "
                "above the worst cosine here so the search keeps more), "
                "then dynamic INT8 (quant.recipe = \"dynamic\") or another quant.method "
                "(percentile, entropy), then quantization-aware training, or ship FP32 for "
                "that runtime (quant.skip_int8 = [\"runtime\"]); never lower the limit to "
                f"ship: {relax} only if you measured that this worst sample still does its "
                "job (retrieval, nearest neighbours)")
    return ("first try more or more representative calibration data (quant.calibration_samples, "
            "data.calibration), then keeping the sensitive layers in float (lower "
            "quant.max_accuracy_drop so the search keeps more, or quant.keep_float), then "
            "another quant.method (percentile, entropy), or ship FP32 for that runtime "
            f"(quant.skip_int8); only if that difference is acceptable, {relax}")


BUILD_TRAIN = "train it further first (the stage warnings say what to try)"


def require_outputs(name: str, runtime: str, precision: str, checks: Sequence[OutputCheck],
                    limits: Limits, *, where: str = "on the test split",
                    advice: Callable[[str, str], str] | None = None,
                    train: str = BUILD_TRAIN) -> None:
    """Fail the build with one line naming the artifact, its worst output and figure, by how
    much it misses its limit, and what to try first; other failing outputs are listed.
    ``advice(precision, setting)`` and ``train`` (a near-chance model) say it in the
    caller's terms (a one-step verb's options); default: the build's settings."""
    failures = sorted((f for c in checks for f in _failures(c, limits, where, train)),
                      key=lambda f: f[0], reverse=True)
    if not failures:
        return
    _, worst, what, setting = failures[0]
    others = sorted({f[1] for f in failures} - {worst})
    also = f" (also failing: {', '.join(repr(n) for n in others)})" if others else ""
    raise VerificationError(f"{name} ({runtime}, {precision}) against its reference model: "
                            f"{what}{also}; {(advice or _advice)(precision, setting)}")


def require_agreement(name: str, runtime: str, precision: str, result: Verification,
                      min_agreement: float, min_cosine: float = -1.0) -> None:
    """The one-output gate (before several outputs): top-1 agreement for classifiers, the
    worst sample's cosine similarity otherwise."""
    if result.top1_agreement is not None and result.top1_agreement < min_agreement:
        raise VerificationError(
            f"{name} ({runtime}, {precision}) agrees with the PyTorch model on only "
            f"{result.top1_agreement:.2%} of the test split (< {min_agreement:.2%}); "
            + _advice(precision, "--min-agreement"))
    if result.top1_agreement is None and result.cosine_min < min_cosine:
        raise VerificationError(
            f"{name} ({runtime}, {precision}): the worst test sample's outputs have cosine "
            f"similarity {result.cosine_min:.4f} with the reference model's (< min_cosine "
            f"{min_cosine}); " + _advice(precision, "--set min_cosine=..."))
