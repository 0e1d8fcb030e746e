"""The build report (``report.json``) as one typed structure, assembled in one place:
:func:`assemble`. Its parts are declared in :mod:`.types` (with ``SCHEMA_VERSION``) and
importable from here; its JSON Schema is ``report.schema.json`` beside this module, checked by
:mod:`.schema`. ``manifest.json`` and the artifact file helpers live in :mod:`.manifest` and
are importable from here too, as is :func:`write_json` (:mod:`.nulls`).

The report stays plain JSON data (``TypedDict``, not objects): it is written as is, read back
by ``edgekd check`` on another machine, and rendered by :mod:`.markdown`, :mod:`.html` and the
CLI through :mod:`.format`. A number that is not finite never reaches the JSON: it becomes
``null`` and the top-level ``nulls`` list says which field and why (:mod:`.nulls`).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import edgekd
from edgekd.measure.headline import headline
from edgekd.measure.payoff import flags, payoff
from edgekd.report.gate import budget_checks
from edgekd.report.manifest import artifact_files, build_manifest, gzip_size
from edgekd.report.nulls import NullNote, with_nulls, write_json
from edgekd.report.types import (
    SCHEMA_VERSION,
    Artifact,
    BudgetCheck,
    Headline,
    Input,
    Latency,
    Memory,
    PayoffRow,
    Quantization,
    Reference,
    RemoteMeasurement,
    Report,
    RuntimeQuantizer,
    Stage,
)
from edgekd.settings.budgets import Budget

if TYPE_CHECKING:
    from edgekd.inputs.dataset import Dataset, OutputSpec
    from edgekd.settings.config import BuildConfig
    from edgekd.settings.targets import Target

__all__ = ["SCHEMA_VERSION", "Artifact", "BudgetCheck", "Input", "Latency", "Memory", "NullNote",
           "Headline", "PayoffRow", "Quantization", "Reference", "RemoteMeasurement", "Report",
           "RuntimeQuantizer", "Stage", "artifact_files", "assemble", "build_manifest",
           "gzip_size", "write_json"]


# -- assembling ------------------------------------------------------------------------------

def _summary(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """What distillation and compression bought, from the stage rows."""
    by_name = {s["name"]: s for s in stages}
    out: dict[str, Any] = {}
    last = stages[-1] if stages else None
    if "teacher" in by_name and last is not None:
        out["compression"] = round(by_name["teacher"]["params"] / last["params"], 2)
    scratch, kd = by_name.get("student_scratch"), by_name.get("student_distilled")
    if scratch and kd and scratch["accuracy"] is not None and kd["accuracy"] is not None:
        out |= {"scratch_accuracy": scratch["accuracy"], "distilled_accuracy": kd["accuracy"],
                "distillation_gain_points": round(100 * (kd["accuracy"] - scratch["accuracy"]),
                                                  2)}
    return out


def _io(data: Dataset, output_shapes: list[list[int]], outputs: Sequence[OutputSpec]
        ) -> dict[str, Any]:
    """``inputs`` and ``outputs``: every one, in the model's order, as a third party feeds
    and reads them (name, shape with batch 1, dtype, role; preprocessing; verification)."""
    ins = []
    one: dict[str, Any]
    for spec in data.input_specs:
        one = spec.to_dict()
        one["shape"] = ([1, *spec.shape] if spec.role == "data" else
                        list(spec.constant(1).shape))
        if not data.inputs:  # the one float input: the data set's preprocessing
            one["preprocessing"] = data.preprocessing.raw
        ins.append(one)
    outs = []
    for out, shape in zip(outputs, output_shapes, strict=False):
        one = {"name": out.name, "shape": shape, "dtype": "float32",
               "classifier": out.classifier}
        if out.threshold is not None:
            one["threshold"] = out.threshold
        if out.state:
            one["state_for"] = out.state
        outs.append(one)
    return {"inputs": ins, "outputs": outs}


def _head(target: Target, data: Dataset, stages: list[dict[str, Any]],
          artifacts: list[dict[str, Any]], output_shapes: list[list[int]],
          outputs: Sequence[OutputSpec]) -> dict[str, Any]:
    """From ``schema_version`` to ``artifacts``: what was built from what. ``input`` (the
    first input, with the first output inside) is the 1.0 form; ``inputs`` / ``outputs``
    list every one."""
    prep = data.preprocessing
    first = data.input_specs[0]
    output_shape = output_shapes[0] if output_shapes else None
    return {
        "schema_version": SCHEMA_VERSION,
        "edgekd_version": edgekd.__version__,
        "target": target.name,
        "target_description": target.description,
        "input": {
            "name": first.name, "shape": [1, *first.shape], "dtype": first.dtype,
            "layout": prep.layout,
            "preprocessing": {
                "raw": prep.raw, "scale": prep.scale, "mean": prep.mean, "std": prep.std,
                "formula": "x = (raw * scale - mean) / std",
            },
            "output": {"name": outputs[0].name if outputs else
                       "logits" if data.num_classes else "output",
                       "shape": output_shape or [1, data.num_classes], "dtype": "float32"},
        },
        **_io(data, output_shapes, outputs),
        "dataset": data.summary(),
        "stages": stages,
        "summary": _summary(stages),
        "artifacts": artifacts,
    }


def _how(target: Target, config: BuildConfig, threads: int, seconds: float) -> dict[str, Any]:
    """``bench``, ``host`` and ``build_seconds``: how and where it was measured."""
    return {
        "bench": {"warmup": config.bench.warmup, "runs": config.bench.runs,
                  "seconds": config.bench.seconds, "batch": 1, "threads": threads,
                  "target_threads": target.threads},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "processor": platform.processor() or platform.machine()},
        "build_seconds": round(seconds, 2),
    }


def _budget(report: dict[str, Any], budget: dict[str, Any], target: Target
            ) -> dict[str, Any]:
    """The budget section: ``checks`` as given, or evaluated here from ``limits``, with the
    target's architecture (which measurements count as the target's)."""
    section = {"source": budget["source"], "limits": budget["limits"],
               "target_machine": target.machine}
    if "checks" in budget:
        return section | {"checks": budget["checks"]}
    checks = budget_checks(report, Budget(**budget["limits"]), machine=target.machine)
    return section | {"checks": [c.to_dict() for c in checks]}


def assemble(*, target: Target, data: Dataset, config: BuildConfig, task: str,
             model: dict[str, Any], stages: list[dict[str, Any]],
             artifacts: list[dict[str, Any]], references: list[dict[str, Any]],
             quantization: dict[str, Any] | None, robustness: dict[str, Any] | None,
             threads: int, output_shapes: list[list[int]],
             outputs: Sequence[OutputSpec] = (), build_seconds: float,
             budget: dict[str, Any] | None) -> Report:
    """The whole report of a build, in the order it is written.

    Computes ``summary`` (from the stages), ``payoff`` (when there are references),
    ``headline`` (when one of them is the teacher's) and ``flags``. ``budget`` is
    ``{"source", "limits"}`` (the checks are evaluated here, against this report) or
    ``{"source", "limits", "checks"}`` (kept as given); ``None``: no budget.
    Non-finite numbers become ``null``, each listed in ``nulls`` with the reason, so the
    returned report is exactly what ``report.json`` holds.
    """
    report = _head(target, data, stages, artifacts, output_shapes, outputs)
    report |= _how(target, config, threads, build_seconds)
    report["task"] = task
    report["model"] = model
    if references:
        report["references"] = references
        report["payoff"] = payoff(artifacts, references)
        top = headline(artifacts, references, report["payoff"], platform.machine())
        if top is not None:
            report["headline"] = top
    if quantization is not None:
        report["quantization"] = quantization
    if robustness is not None:
        report["robustness"] = robustness
    # A transformer (or dynamic) INT8 keeps attention's activation x activation MatMuls in
    # float by design: those float MatMuls are the recipe, not a fallback to flag.
    recipe = (quantization or {}).get("recipe")
    report["flags"] = flags(report.get("payoff", []), artifacts,
                            float_by_design=("MatMul", "FusedMatMul")
                            if recipe in ("transformer", "dynamic") else ())
    if budget is not None:
        report["budget"] = _budget(report, budget, target)
    return cast(Report, with_nulls(report))
