"""The build report (``report.json``) as one typed structure, assembled in one place:
:func:`assemble`. Its JSON Schema is ``report.schema.json`` beside this module, checked by
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
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import edgekd
from edgekd.measure.headline import headline
from edgekd.measure.payoff import flags, payoff
from edgekd.report.gate import budget_checks
from edgekd.report.manifest import artifact_files, build_manifest, gzip_size
from edgekd.report.nulls import NullNote, with_nulls, write_json
from edgekd.settings.budgets import Budget

if TYPE_CHECKING:
    from edgekd.inputs.dataset import Dataset, OutputSpec
    from edgekd.settings.config import BuildConfig
    from edgekd.settings.targets import Target

# Major: a reader of 1.x can read every 1.y report. A new optional field is a minor bump; a
# removed, renamed or retyped field is a major one (and edgekd check refuses the other major).
SCHEMA_VERSION = "1.3"  # 1.1: inputs, outputs; per-output verification; stream
# 1.2: quantization.settings (the quant.* settings as resolved); budget checks' measured_on
# and on_target, budget.target_machine
# 1.3: teacher references (references' role, verification), payoff step "teacher", headline

__all__ = ["SCHEMA_VERSION", "Artifact", "BudgetCheck", "Input", "Latency", "Memory", "NullNote",
           "Headline", "PayoffRow", "Quantization", "Reference", "RemoteMeasurement", "Report",
           "RuntimeQuantizer", "Stage", "artifact_files", "assemble", "build_manifest",
           "gzip_size", "write_json"]


# -- the report's parts (the schema says the same in JSON Schema) -----------------------------
# Each part with optional keys is a required base plus a ``total=False`` subclass, so the
# required keys read as one block, as the schema's "required" list does (a test compares them).

class Preprocessing(TypedDict):
    raw: str
    scale: float
    mean: float | list[float]  # one value, or one per channel
    std: float | list[float]
    formula: str


class Tensor(TypedDict):
    name: str
    shape: list[int]
    dtype: str


class Input(Tensor):
    layout: str
    preprocessing: Preprocessing
    output: Tensor


class Stage(TypedDict):
    """A training stage; the stage's own settings and results ride along (open)."""

    name: str
    params: int
    nonzero_params: int
    accuracy: float | None  # None: not a classifier, or no labels


class Summary(TypedDict, total=False):
    compression: float
    scratch_accuracy: float
    distilled_accuracy: float
    distillation_gain_points: float


class Latency(TypedDict):
    p50: float
    p90: float
    p95: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    p50_ci95: list[float]  # [lo, hi]: 95 % confidence interval of the median


class Memory(TypedDict):
    baseline_rss_mb: float
    model_rss_mb: float
    peak_rss_mb: float


class _Measured(TypedDict):
    latency_ms: Latency
    memory: Memory


class Measurement(_Measured, total=False):
    """One benchmark of one artifact on one machine (see :mod:`edgekd.device.worker`)."""

    load_ms: float
    first_inference_ms: float
    threads: int
    runs: int
    placement: dict[str, Any]  # what ran where, or {"error": ...}; runtime-specific keys
    device: dict[str, Any]
    latency_samples_ms: list[float]


class RemoteMeasurement(Measurement):
    remote: str  # user@host
    runtime_version: str


class _Described(TypedDict):
    path: str
    files: list[str]
    format: str
    precision: str  # fp32 | int8 | fp16
    runtime: str
    runtime_version: str
    size_bytes: int
    size_gzip_bytes: int
    sha256: str


class _Benched(_Described, Measurement, total=False):
    remote: list[RemoteMeasurement]
    inference_precision: str  # what the runtime runs the file at by default (1.3)


class Reference(_Benched, total=False):
    """An FP32 file the payoff rows compare against (``reference/``): ``role`` "dense" (the
    student before pruning) or "teacher", verified against the teacher like an artifact."""

    role: Literal["dense", "teacher"]  # 1.3
    accuracy: float | None  # the teacher's verification (1.3)
    top1_agreement: float | None
    max_abs_diff: float | None
    max_rel_error: float | None
    cosine_min: float | None
    cosine_mean: float | None
    outputs: list[dict[str, Any]]


class Verification(TypedDict):
    """The artifact against the model it came from, on the whole test split."""

    accuracy: float | None
    top1_agreement: float | None
    max_abs_diff: float | None
    max_rel_error: float | None
    cosine_min: float | None
    cosine_mean: float | None


class _PerOutput(TypedDict, total=False):
    outputs: list[dict[str, Any]]  # measure.verify.OutputCheck per output (1.1)
    stream: dict[str, Any]  # measure.verify.StreamCheck: stateful models (1.1)


class _Shipped(TypedDict, total=False):
    shipped: bool  # the file its runtime deploys (the ship policy, 1.3)
    int8_choice: dict[str, Any]  # the INT8 variants tried and why the shipped one won: open


class Artifact(_Benched, Verification, _PerOutput, _Shipped):
    """A shipped file: described, verified in its runtime (every output), benchmarked."""


class _PayoffRow(TypedDict):
    runtime: str
    where: str
    step: str  # int8 | pruning | teacher (the deployed student vs the teacher's FP32)
    baseline: str
    candidate: str
    speedup: float
    verdict: str  # faster | slower | no measurable change
    size_ratio: float
    gzip_size_ratio: float
    detail: str


class PayoffRow(_PayoffRow, total=False):
    """``method``: how speedup and verdict were measured (paired rounds here, separate runs
    on remote devices); ``speedup_ci95`` and ``rounds``: the paired measurement's."""

    method: str
    speedup_ci95: list[float]
    rounds: int


class Headline(TypedDict):
    """Deployed student vs teacher per runtime and machine (:mod:`edgekd.measure.headline`;
    each row's keys are in the schema)."""

    reference: Literal["teacher"]
    rows: list[dict[str, Any]]


class RuntimeQuantizer(TypedDict):
    """Who made one runtime's INT8 artifact, and which ``quant.*`` settings it used."""

    tool: str
    when: Literal["before export", "during conversion"]
    applies: list[str]
    ignored: list[str]


class _Quantization(TypedDict):
    path: str
    method: str
    float_layers: list[str]
    fp32_accuracy: float | None
    int8_accuracy: float | None
    steps: list[dict[str, Any]]  # {"float_layers": [...], "accuracy": ...}
    cached: bool


class Quantization(_Quantization, total=False):
    by_runtime: dict[str, RuntimeQuantizer]
    settings: dict[str, Any]  # quant.* as resolved for the build (1.2)


class Bench(TypedDict):
    warmup: int
    runs: int
    seconds: float
    batch: int
    threads: int
    target_threads: int


class Host(TypedDict):
    machine: str
    cpus: int | None
    processor: str


class _BudgetCheck(TypedDict):
    budget: str
    subject: str
    measured: float
    limit: float
    margin: float
    ok: bool  # the figure is within the limit, wherever it was measured
    unit: str


class BudgetCheck(_BudgetCheck, total=False):
    """One budget against one figure (:class:`edgekd.report.gate.Check`)."""

    measured_on: str  # "build host (x86_64, ...)", "pi@pi5 (aarch64, ...)", "any machine"
    on_target: bool  # False: measured on a machine that is not the target's (1.2)


class _BudgetSection(TypedDict):
    source: str
    limits: dict[str, float]
    checks: list[BudgetCheck]


class BudgetSection(_BudgetSection, total=False):
    target_machine: str  # the target's architecture; "": it runs where it is built (1.2)


class _Report(TypedDict):
    schema_version: str
    edgekd_version: str
    target: str
    target_description: str
    input: Input  # the first input (with the first output inside): the 1.0 form
    dataset: dict[str, Any]  # Dataset.summary(): open (sources, validation split ...)
    stages: list[Stage]
    summary: Summary
    artifacts: list[Artifact]
    bench: Bench
    host: Host
    build_seconds: float
    task: str
    model: dict[str, Any]  # what the user gave (factories, files): open
    flags: list[str]


class Report(_Report, total=False):
    """``report.json``. Keys are written in this order: the required ones up to ``model``,
    then ``references``, ``payoff``, ``headline``, ``quantization``, ``robustness``,
    ``flags``, ``budget``, ``nulls``."""

    inputs: list[dict[str, Any]]  # every input, model order (InputSpec.to_dict); 1.1
    outputs: list[dict[str, Any]]  # every output, model order; 1.1
    references: list[Reference]
    payoff: list[PayoffRow]
    headline: Headline  # only with a teacher (1.3)
    search: dict[str, Any]  # the edgekd search that chose the model (1.3; its schema)
    quantization: Quantization
    robustness: dict[str, Any]  # models and conditions vary with the build: open
    budget: BudgetSection
    nulls: list[NullNote]


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
    report["flags"] = flags(report.get("payoff", []), artifacts)
    if budget is not None:
        report["budget"] = _budget(report, budget, target)
    return cast(Report, with_nulls(report))
