"""The accuracy-aware INT8 search: how an INT8 model is judged against its FP32 model on the
validation split (:class:`Judge`, :func:`judged`), and the search that keeps it within that
budget (:func:`search`): the chosen recipe first; for a transformer, dynamic INT8 of the
weight MatMuls next; then each quantizable layer is tried in float on its own, and the
layers whose exclusion helps most are kept in float, one more at a time, until the task's
figure holds. Writing a model is the caller's (``edgekd.compress.quantize``): the search gets
a ``write(recipe, out, float_layers)`` function.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import BuildError
from edgekd.inputs.dataset import Feeds

log = logging.getLogger(__name__)

# As edgekd.measure.verify.MIN_COSINE_ELEMENTS: from 8 elements on, cosine measures a direction.
COSINE_ELEMENTS = 8

# write(recipe, out, layers kept in float) -> out: one INT8 model of the pre-processed FP32 one.
Writer = Callable[[str, Path, list[str]], Path]


@dataclass(frozen=True)
class Judge:
    """How the accuracy-aware search judges an INT8 model on the validation split, by the
    task's own figure: top-1 agreement (or accuracy with labels) for a classifier, within
    ``max_drop`` points of FP32; the worst sample's cosine with FP32 for an output of at
    least ``COSINE_ELEMENTS`` elements, at least ``min_cosine``; else the worst |error| as a
    fraction of the FP32 output's range, at most ``max_error``."""

    classifier: bool
    max_drop: float = 1.0
    min_cosine: float = 0.99
    max_error: float = 0.2


@dataclass(frozen=True)
class Found:
    """What the search settled on: the model at ``out`` was written with ``recipe`` and
    ``float_layers``; ``trials`` are every model it measured, with its figure."""

    recipe: str
    why: str
    float_layers: tuple[str, ...]
    fp32_accuracy: float | None
    int8_accuracy: float | None
    figure: str
    trials: tuple[dict[str, Any], ...] = field(default=())

    def steps(self) -> tuple[dict[str, Any], ...]:
        """The trials as the report's ``quantization.steps`` (schema 1.0)."""
        classifier = self.int8_accuracy is not None
        return tuple({"float_layers": t["float_layers"],
                      "accuracy": t["value"] if classifier else None} for t in self.trials)


def first_output(model_path: Path, x: np.ndarray | Feeds, threads: int = 2) -> np.ndarray:
    """The model's first output on every sample of ``x``, in ONNX Runtime."""
    from edgekd.backends import predict_all
    from edgekd.backends.onnxruntime import load

    feeds = Feeds.of(x)
    runner = load(model_path, threads)
    if len(feeds) == 0:
        return np.zeros((0,), np.float32)
    if len(runner.input_names) == 1 and len(feeds.specs) == 1:  # the name as the file has it
        feeds = Feeds((replace(feeds.specs[0], name=runner.input_names[0]),),
                      {runner.input_names[0]: next(iter(feeds.arrays.values()))})
    return predict_all(runner, feeds.specs, feeds.arrays)[0]


def judged(outputs: np.ndarray, reference: np.ndarray, y: np.ndarray | None, judge: Judge,
           fp32_accuracy: float | None = None) -> dict[str, Any]:
    """The task's figure for ``outputs`` against the FP32 ``reference`` (first output, all
    validation samples): ``figure``, ``value``, ``holds`` (within the budget) and ``rank``
    (higher is better: how the search orders its trials)."""
    a = outputs.reshape(len(outputs), -1).astype(np.float64)
    b = reference.reshape(len(reference), -1).astype(np.float64)
    if judge.classifier:
        truth = y if y is not None else b.argmax(1)
        acc = float((a.argmax(1) == truth).mean())
        base = fp32_accuracy if fp32_accuracy is not None else 1.0
        return {"figure": "accuracy" if y is not None else "top1_agreement",
                "value": round(acc, 6), "holds": base - acc <= judge.max_drop / 100 + 1e-9,
                "rank": (acc, -float(np.mean((a - b) ** 2)))}
    if a.shape[1] >= COSINE_ELEMENTS:
        tiny = np.finfo(np.float64).tiny
        na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = (a * b).sum(1) / np.maximum(na * nb, tiny)
        cos[(na == 0) & (nb == 0)] = 1.0
        worst, mean = float(cos.min()), float(cos.mean())
        return {"figure": "cosine", "value": round(worst, 6), "mean": round(mean, 6),
                "holds": worst >= judge.min_cosine, "rank": (worst, mean)}
    finite = b[np.isfinite(b)]
    spread = float(finite.max() - finite.min()) if finite.size else 0.0
    scale = spread if spread > 0 else (float(np.abs(finite).max()) if finite.size else 0.0) or 1.0
    rel = float(np.abs(a - b).max() / scale) if len(a) else 0.0
    return {"figure": "output_error", "value": round(rel, 6), "holds": rel <= judge.max_error,
            "rank": (-rel,)}


def said(got: dict[str, Any], judge: Judge) -> str:
    """A trial's figure against its limit, in words."""
    if got["figure"] == "cosine":
        return (f"worst cosine {got['value']:.4f}, mean {got['mean']:.4f}, "
                f"quant.min_cosine {judge.min_cosine}")
    if got["figure"] == "output_error":
        return f"output error {got['value']:.2%} of its range, max_output_error {judge.max_error}"
    return (f"{got['figure'].replace('_', ' ')} {got['value']:.2%}, quant.max_accuracy_drop "
            f"{judge.max_drop} points")


def resolve_keep_float(model_path: Path, names: tuple[str, ...],
                       quantizable: list[str]) -> list[str]:
    """``quant.keep_float`` as node names of the model: each name must be a node (or the
    weight of one, e.g. a PyTorch parameter name); an unknown name is one error that lists
    the closest node names and the first ``quantizable`` layers."""
    import difflib

    import onnx

    from edgekd.errors import UsageError

    graph = onnx.load(str(model_path), load_external_data=False).graph
    nodes = [n.name for n in graph.node if n.name]
    by_weight = {i: n.name for n in graph.node for i in n.input[1:2] or n.input[:1]}
    out: list[str] = []
    for name in names:
        if name in nodes:
            out.append(name)
        elif name in by_weight or name + ".weight" in by_weight:
            out.append(by_weight.get(name) or by_weight[name + ".weight"])
        else:
            close = difflib.get_close_matches(name, nodes + list(by_weight), n=5, cutoff=0.5)
            raise UsageError(f"quant.keep_float: no node {name!r} in the model"
                             + (f"; close matches: {', '.join(close)}" if close else "")
                             + f"; the quantizable layers are {', '.join(quantizable[:8])}"
                             + (", ..." if len(quantizable) > 8 else "")
                             + " (the report's quantization steps list node names)")
    return list(dict.fromkeys(out))


def search(write: Writer, pre: Path, out: Path, scratch: Path,
           validation: tuple[np.ndarray | Feeds, np.ndarray | None], judge: Judge, *,
           recipe: str, why: str, keep: list[str], candidates: list[str],
           try_dynamic: bool) -> Found:
    """Judge the INT8 model already written at ``out`` (``recipe``, ``keep`` in float)
    against the pre-processed FP32 model ``pre``; on a miss, dynamic INT8 (``try_dynamic``),
    then ``candidates`` kept in float, most helpful first, until the figure holds. The model
    at ``out`` is the one found; ``scratch`` is a folder for the trial models."""
    x, y = validation
    fp_out = first_output(pre, x)
    fp_acc = (float((fp_out.argmax(1) == y).mean()) if judge.classifier and y is not None
              else 1.0 if judge.classifier else None)
    trials: list[dict[str, Any]] = []

    def trial(path: Path, how: str, kept: list[str]) -> dict[str, Any]:
        got = judged(first_output(path, x), fp_out, y, judge, fp_acc)
        trials.append({"recipe": how, "float_layers": list(kept),
                       **{k: v for k, v in got.items() if k != "rank"}})
        return got

    def done(how: str, kept: list[str], got: dict[str, Any], reason: str) -> Found:
        return Found(how, reason, tuple(kept), fp_acc,
                     got["value"] if judge.classifier else None, got["figure"], tuple(trials))

    got = trial(out, recipe, keep)
    if got["holds"]:
        return done(recipe, keep, got, why)
    missed = f"{recipe} INT8 missed the budget ({said(got, judge)})"
    if try_dynamic:
        dynamic = write("dynamic", scratch / "dynamic.onnx", keep)
        got = trial(dynamic, "dynamic", keep)
        if got["holds"]:
            shutil.copyfile(dynamic, out)
            return done("dynamic", keep, got, f"{missed}; dynamic INT8 of the weight "
                        f"MatMuls holds it ({said(got, judge)})")
    ranked = _by_sensitivity(write, scratch / "trial.onnx", candidates, keep,
                             lambda path: judged(first_output(path, x), fp_out, y, judge,
                                                 fp_acc)["rank"], recipe, missed)
    kept = list(keep)
    for name in ranked:
        kept.append(name)
        got = trial(write(recipe, out, kept), recipe, kept)
        if got["holds"]:
            return done(recipe, kept, got, f"{missed}; {len(kept) - len(keep)} layer(s) "
                        f"kept in float by the search ({said(got, judge)})")
    raise BuildError(
        f"INT8 misses its budget on the validation split even with all {len(candidates)} "
        f"quantizable layers in float ({said(got, judge)}): keep the model FP32 for the "
        "runtimes that fail (quant.skip_int8), try quant.recipe = \"dynamic\" or another "
        "quant.method, or relax the budget (quant.max_accuracy_drop, quant.min_cosine)")


def _by_sensitivity(write: Writer, probe: Path, candidates: list[str], keep: list[str],
                    rank: Callable[[Path], tuple[float, ...]], recipe: str,
                    missed: str) -> list[str]:
    """``candidates``, most helpful first: each one in float on its own, all others INT8."""
    score = {name: rank(write(recipe, probe, [*keep, name])) for name in candidates}
    ranked = sorted(candidates, key=lambda n: score[n], reverse=True)
    log.info("%s; layer sensitivity: %s", missed,
             json.dumps({n: [round(v, 4) for v in score[n]] for n in ranked}))
    return ranked
