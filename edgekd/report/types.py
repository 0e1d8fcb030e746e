"""The parts of ``report.json`` as ``TypedDict`` declarations, and its ``SCHEMA_VERSION``:
what each key holds, the report model that :func:`edgekd.report.model.assemble` fills and
``report.schema.json`` describes in JSON Schema (a test checks that both name the same keys).

A new field goes here, in the schema, and in ``SCHEMA_VERSION`` (its comment says which
version added what); importers may keep using ``edgekd.report.model``, which re-exports all.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from edgekd.report.nulls import NullNote

# Major: a reader of 1.x can read every 1.y report. A new optional field is a minor bump; a
# removed, renamed or retyped field is a major one (and edgekd check refuses the other major).
SCHEMA_VERSION = "1.4"  # 1.1: inputs, outputs; per-output verification; stream
# 1.2: quantization.settings (the quant.* settings as resolved); budget checks' measured_on
# and on_target, budget.target_machine
# 1.3: teacher references (references' role, verification), payoff step "teacher", headline;
# artifacts' shipped, int8_choice and inference_precision; search
# 1.4: quantization's recipe, recipe_reason, search_figure, search, keep_float, skip_int8

__all__ = ["SCHEMA_VERSION", "Artifact", "Bench", "BudgetCheck", "BudgetSection", "Headline",
           "Host", "Input", "Latency", "Measurement", "Memory", "NullNote", "PayoffRow",
           "Preprocessing", "Quantization", "Reference", "RemoteMeasurement", "Report",
           "RuntimeQuantizer", "Stage", "Summary", "Tensor", "Verification"]


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
    recipe: Literal["static", "transformer", "dynamic"]  # (1.4, as the rest below)
    recipe_reason: str
    search_figure: str  # top1_agreement | accuracy | cosine | output_error; "" unchecked
    search: list[dict[str, Any]]  # {"recipe", "float_layers", "figure", "value", "holds"}
    keep_float: list[str]
    skip_int8: list[str]
    qat: dict[str, Any]  # quantization-aware distillation: path, before/after, bought


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
