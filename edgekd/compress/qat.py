"""Quantization-aware distillation as a step of the INT8 path: when post-training INT8 of
the student misses its budget, fine-tune the student with ORT's INT8 simulated
(:mod:`edgekd.train.qat`), export the tuned weights to FP32 ONNX, quantize that with the
same ONNX Runtime tools, calibration samples and accuracy-aware search as before, and keep
whichever INT8 model is better *judged against the original FP32 model* (the one that
ships, and that verification compares every artifact with).

Better means: within the budget with fewer layers kept in float, or, with as many, a
better figure on the validation split. The tuned student is only the INT8 *source*: the
FP32 artifacts stay the original student. The fine-tune is cached in the stage cache
(``qat`` entries) under the student's key, the settings and the samples it trained on.
"""

from __future__ import annotations

import copy
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends.from_torch import to_onnx
from edgekd.common.cache import digest_of
from edgekd.compress.int8_search import Judge, first_output, judged
from edgekd.compress.quantize import (
    Quantized,
    activation_type,
    quantize,
    quantize_cached,
    reduce_range,
)
from edgekd.inputs.dataset import Feeds
from edgekd.settings.config import QuantConfig
from edgekd.train.inference import ModelInput
from edgekd.train.loop import training_threads
from edgekd.train.qat import QATSettings, qat_finetune, settings_key
from edgekd.train.stage_cache import StageCache, digest

log = logging.getLogger(__name__)

Validation = tuple[np.ndarray | Feeds, np.ndarray | None]


def wanted(config: QuantConfig, ptq: Quantized) -> bool:
    """Whether to try QAT: ``quant.qat`` true, or "auto" and the all-INT8 model of the
    search's first trial missed the budget (the search then kept layers in float)."""
    if config.qat is False or not ptq.trials:
        return False
    return config.qat is True or not ptq.trials[0].get("holds", True)


@dataclass(frozen=True)
class Recovered:
    """What QAT bought: the INT8 model that ships (``quantized``, at the PTQ model's path)
    and the report's ``quantization.qat`` entry (``summary``)."""

    quantized: Quantized
    summary: dict[str, Any]


def _samples_digest(x: np.ndarray | Feeds) -> list[object]:
    return [x] if isinstance(x, np.ndarray) else list(x.digest_parts())


def recover(student: Any, ptq: Quantized, *, fp32: Path, work: Path, cache: Path, key: str,
            train: ModelInput, calibration: np.ndarray | Feeds, validation: Validation,
            judge: Judge, config: QuantConfig, example: np.ndarray | Feeds,
            output_names: list[str] | None, threads: int, tensorrt: bool = False,
            fresh: bool = False) -> Recovered:
    """QAT + KD of ``student`` (whose FP32 ONNX is ``fp32`` and PTQ model ``ptq``), then
    the normal INT8 path on the tuned weights; the better of the two ships."""
    act = activation_type(config, tensorrt=tensorrt)
    settings = QATSettings(epochs=config.qat_epochs, lr=config.qat_lr,
                           reduce_range=reduce_range(config, act),
                           per_channel=config.per_channel, classifier=judge.classifier)
    stage_key = digest("qat", key, settings_key(settings),
                       digest_of(*_samples_digest(train), *_samples_digest(calibration),
                                 length=16))
    stages = StageCache(cache, fresh=fresh)
    tuned = copy.deepcopy(student)
    cached = stages.load("qat", stage_key, tuned) is not None
    if not cached:
        with training_threads(threads):
            tuned = qat_finetune(student, train, calibration, settings)
        stages.save("qat", stage_key, tuned, {"epochs": settings.epochs, "lr": settings.lr})
    tuned_fp32 = to_onnx(tuned.eval(), example, work / "student_qat_fp32.onnx", output_names)

    x, y = validation
    reference = first_output(fp32, x)
    fp_acc = (float((reference.argmax(1) == y).mean()) if judge.classifier and y is not None
              else None)

    def figure(path: Path) -> dict[str, Any]:
        return judged(first_output(path, x), reference, y, judge, fp_acc)

    # The all-INT8 figure of the tuned weights, against the original FP32 model.
    all_int8 = quantize(tuned_fp32, work / "student_qat_all_int8.onnx", calibration, config,
                        tensorrt=tensorrt)
    after = figure(all_int8.path)
    searched = quantize_cached(cache, stage_key, tuned_fp32, work / "student_qat_int8.onnx",
                               calibration, config, validation=validation, judge=judge,
                               tensorrt=tensorrt, fresh=fresh)
    final = figure(searched.path)
    before = ptq.trials[0]
    better = final["holds"] and (
        len(searched.float_layers) < len(ptq.float_layers)
        or len(searched.float_layers) == len(ptq.float_layers)
        and final["rank"] > figure(ptq.path)["rank"])
    summary: dict[str, Any] = {
        "path": "qat" if better else "ptq", "figure": after["figure"],
        "before": before["value"], "after": after["value"],
        "float_layers_before": list(ptq.float_layers),
        "float_layers_after": list(searched.float_layers),
        "epochs": settings.epochs, "lr": settings.lr, "cached": cached,
        "bought": _bought(better, before, after, ptq, searched, final)}
    log.info("QAT: %s", summary["bought"])
    if not better:
        return Recovered(ptq, summary)
    shutil.copyfile(searched.path, ptq.path)
    return Recovered(replace(searched, path=ptq.path, fp32_accuracy=ptq.fp32_accuracy,
                             int8_accuracy=final["value"] if judge.classifier else None),
                     summary)


def _bought(better: bool, before: dict[str, Any], after: dict[str, Any], ptq: Quantized,
            searched: Quantized, final: dict[str, Any]) -> str:
    name = after["figure"].replace("_", " ")
    change = f"all-INT8 {name} {before['value']:.4g} -> {after['value']:.4g}"
    floats = f"{len(ptq.float_layers)} -> {len(searched.float_layers)} layer(s) kept in float"
    if better:
        return f"QAT + KD: {change}; {floats} ({name} {final['value']:.4g} against FP32)"
    return (f"QAT + KD did not beat post-training INT8 ({change}; {floats}"
            + ("" if final["holds"] else ", misses the budget") + "): PTQ kept")
