"""The deploy phase of a build as typed steps, model in, model out:

    quantize -> export -> verify -> choose -> measure -> assemble

(``verify`` is :mod:`edgekd.pipeline.verifying`; ``choose``, which artifact of each runtime
ships, is :mod:`edgekd.pipeline.choosing`; ``measure``, robustness and the benchmarks, is
:mod:`edgekd.pipeline.measuring`. This module holds the values they pass along.)

Each step takes what the one before returned (plus the build's :class:`Deploy` context) and
returns a new frozen value; the pipeline (:func:`edgekd.pipeline.run.build`) calls them in
that order, and a reader can follow a build from one value to the next. Who quantizes depends
on the runtime (``QUANTIZER`` of each backend module): ONNX Runtime and OpenVINO get the QDQ
model that ONNX Runtime's tools made *before* export; TFLite quantizes *during* conversion.
:func:`quantizers` puts that in the report, with the ``quant.*`` settings each one ignores.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import ExportSource, get_backend, quantizers
from edgekd.backends.from_torch import OPSET, to_onnx
from edgekd.backends.onnxruntime import provider_options, to_fp16
from edgekd.compress.equalize import equalize
from edgekd.compress.qat import recover as recover_int8
from edgekd.compress.qat import wanted as qat_wanted
from edgekd.compress.quantize import (
    Judge,
    Quantized,
    activation_type,
    quantize_cached,
    reduce_range,
)
from edgekd.errors import BuildError, UsageError
from edgekd.inputs.calls import torch_call
from edgekd.inputs.dataset import Dataset, Feeds, OutputSpec, Split
from edgekd.inputs.resolve import Inputs
from edgekd.measure.remote import Remote
from edgekd.pipeline.training import Trained
from edgekd.report.model import Report
from edgekd.report.model import assemble as assemble_report
from edgekd.settings.config import BuildConfig
from edgekd.settings.project import Project
from edgekd.settings.targets import Target
from edgekd.train.inference import model_input
from edgekd.train.stage_cache import digest

log = logging.getLogger(__name__)

Step = Callable[[str], contextlib.AbstractContextManager[dict[str, str]]]
RunAll = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


@dataclass(frozen=True)
class Deploy:
    """What every deploy step may read: where it writes and what the build was asked for."""

    stage: Path  # the staging folder that becomes OUT/<target>
    project: Project
    inputs: Inputs
    target: Target
    threads: int  # threads on this host (the target's count, at most this host's cores)
    step: Step  # the progress context: ``with step(name) as s: s["detail"] = ...``
    cache: Path  # OUT/.cache/stages
    fresh: bool = False
    remotes: Sequence[Remote] = ()

    @property
    def config(self) -> BuildConfig:
        return self.project.build

    @property
    def classifier(self) -> bool:
        return self.inputs.task == "classification"

    @property
    def work(self) -> Path:
        return self.stage / ".work"

    def providers(self, runtime: str, precision: str) -> tuple[Any, ...]:
        if runtime == "onnxruntime":
            return provider_options(self.target.providers, precision)
        return self.target.providers


@dataclass(frozen=True)
class Model:
    """The step's input: the model to deploy, trained here or brought finished."""

    student: Any | None  # the PyTorch model (nn.Module); None: a finished ONNX model
    onnx: Path | None  # a finished ONNX model
    stages: list[dict[str, Any]]  # report rows of the training stages
    key: str  # identifies the model: the cached stage chain, or the user's files
    dense: Any | None = None  # the distilled student before pruning: what pruning bought
    teacher: Any | None = None
    scratch: Any | None = None


@dataclass(frozen=True)
class QuantizedModel:
    model: Model
    deployed: Any | None  # the model the artifacts come from (equalised when asked)
    onnx: dict[str, Path]  # precision -> ONNX file (fp32, int8 QDQ, fp16 for GPUs)
    quantized: Quantized
    calibration: np.ndarray | Feeds  # the samples INT8 was calibrated on (states streamed)
    qat: dict[str, Any] | None = None  # what QAT + KD bought (edgekd.compress.qat); None: not run


@dataclass(frozen=True)
class Artifact:
    runtime: str
    precision: str
    path: Path
    role: str = ""  # a reference's: "dense" (before pruning) or "teacher"


@dataclass(frozen=True)
class Exported:
    quantized: QuantizedModel
    artifacts: tuple[Artifact, ...]
    references: tuple[Artifact, ...]  # FP32 of the dense model and the teacher (reference/)


@dataclass(frozen=True)
class Verified:
    exported: Exported
    expected: list[np.ndarray]  # the reference model's outputs on the test split
    entries: list[dict[str, Any]]  # report entries of the artifacts
    references: list[dict[str, Any]]  # report entries of the references (teacher verified)


@dataclass(frozen=True)
class Measured:
    verified: Verified
    robustness: dict[str, Any] | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)


def model_of(inputs: Inputs, trained: Trained | None) -> Model:
    """The model a deploy starts from: the pruned student of the training stages, or the
    user's finished model."""
    if trained:
        return Model(trained.student, None, trained.stages, trained.key, trained.distilled,
                     trained.teacher, trained.scratch)
    return Model(inputs.student() if inputs.student else None, inputs.onnx, [],
                 digest("finished", inputs.model))


# -- quantize ------------------------------------------------------------------------------


def samples(data: Dataset, split: Split, n: int | None = None) -> np.ndarray | Feeds:
    """``split``'s first ``n`` samples as a model takes them: one float array, or every
    input by name (several inputs, integer token ids; fixed and state inputs alongside)."""
    return data.feeds(split, n) if data.several_inputs else split.x[:n]


def _fp32_call(model: Any | None, fp32: Path, data: Dataset) -> RunAll:
    """One call of the model being quantized (PyTorch, else its FP32 ONNX file)."""
    if model is not None:
        return torch_call(model, data.input_specs)
    return get_backend("onnxruntime").load(fp32, 1).run_all


def _output_names(data: Dataset) -> list[str] | None:
    return [o.name for o in data.outputs] if data.outputs else None


def output_specs(ctx: Deploy) -> tuple[OutputSpec, ...]:
    data = ctx.inputs.data
    return data.outputs or (OutputSpec("logits" if ctx.classifier else "output",
                                       classifier=ctx.classifier),)


def _validation(inputs: Inputs) -> tuple[np.ndarray | Feeds, np.ndarray | None] | None:
    """Where accuracy-aware INT8 is judged, for every task: the validation split, else the
    calibration split, never the test split; labels only for a classifier (without them,
    top-1 agreement with FP32)."""
    v = inputs.data.validation or inputs.data.calibration
    return samples(inputs.data, v), v.y if inputs.task == "classification" else None


def _judge(ctx: Deploy) -> Judge | None:
    """The task's own figure and budget for the INT8 search (see :class:`Judge`)."""
    c = ctx.config
    if c.quant.max_accuracy_drop is None:
        return None
    return Judge(classifier=ctx.classifier, max_drop=c.quant.max_accuracy_drop,
                 min_cosine=c.min_cosine if c.quant.min_cosine is None else c.quant.min_cosine,
                 max_error=c.max_output_error)


def quantize(ctx: Deploy, model: Model) -> QuantizedModel:
    """ONNX FP32 of the model, then static INT8 QDQ with ONNX Runtime's tools (cached), and
    FP16 for GPU targets."""
    q, data = ctx.config.quant, ctx.inputs.data
    calibration = samples(data, data.calibration, q.calibration_samples)
    fp32 = ctx.work / "student_fp32.onnx"
    # Its own step: the ONNX file every runtime starts from takes seconds to export (and
    # was timed as part of "quantize" before).
    with ctx.step("export onnx") as s:
        # Cross-layer equalisation changes the weights, not the function: the artifacts come
        # from the equalised copy, student.safetensors stays the trained model.
        deployed = (equalize(model.student) if q.equalize and model.student is not None
                    else model.student)
        if deployed is not None:
            with converting("ONNX export (torch.onnx)", "onnx"):
                to_onnx(deployed, samples(data, data.test, 2), fp32, _output_names(data))
            s["detail"] = f"FP32 {fp32.name} (torch.onnx, opset {OPSET})"
        else:
            shutil.copyfile(model.onnx, fp32)  # type: ignore[arg-type]
            s["detail"] = f"FP32 {fp32.name} (the finished model, as given)"
    with ctx.step("quantize") as s:
        if isinstance(calibration, Feeds) and any(s.role == "state" for s in calibration.specs):
            calibration = calibration.streamed(_fp32_call(deployed, fp32, data),
                                               [o.name for o in output_specs(ctx)])
        quantized = quantize_cached(
            ctx.cache, model.key, fp32, ctx.work / "student_int8.onnx", calibration, q,
            validation=_validation(ctx.inputs), judge=_judge(ctx),
            tensorrt="TensorrtExecutionProvider" in ctx.target.providers, fresh=ctx.fresh)
        onnx = {"fp32": fp32, "int8": quantized.path}
        if ctx.target.needs_gpu:  # GPUs also get FP16 (Tensor Cores)
            onnx["fp16"] = to_fp16(fp32, ctx.work / "student_fp16.onnx")
        s["detail"] = (f"INT8 {quantized.recipe} ({q.method}, "
                       f"{'per-channel' if q.per_channel else 'per-tensor'}), "
                       f"{len(calibration)} calibration samples"
                       + (f", kept in float: {', '.join(quantized.float_layers)}"
                          if quantized.float_layers else "")
                       + (" (cached)" if quantized.cached else ""))
    judge, validation, qat = _judge(ctx), _validation(ctx.inputs), None
    # QAT fine-tunes on the training split: a finished model given with test data only
    # (deploy-only) has none, and keeps post-training INT8.
    if (deployed is not None and judge and validation and len(data.train) > 0
            and qat_wanted(q, quantized)):
        with ctx.step("quantization-aware distillation") as s:
            got = recover_int8(
                deployed, quantized, fp32=fp32, work=ctx.work, cache=ctx.cache, key=model.key,
                train=model_input(data.train, data.inputs), calibration=calibration,
                validation=validation, judge=judge, config=q,
                example=samples(data, data.test, 2), output_names=_output_names(data),
                threads=ctx.config.train.threads,
                tensorrt="TensorrtExecutionProvider" in ctx.target.providers, fresh=ctx.fresh)
            quantized, qat = got.quantized, got.summary
            s["detail"] = qat["bought"]
    return QuantizedModel(model, deployed, onnx, quantized, calibration, qat)


# -- export --------------------------------------------------------------------------------


def export(ctx: Deploy, q: QuantizedModel) -> Exported:
    """Each runtime's FP32 and INT8 (and FP16) artifacts, and FP32 references in
    ``reference/``: the dense model (the distilled student before pruning, what pruning
    bought) and the teacher (what the whole build bought: the headline)."""
    data = ctx.inputs.data
    calibration = q.calibration  # what ONNX Runtime calibrated on: the converters too
    example = samples(data, data.test, 1)
    source = ExportSource(model=q.deployed, example=example, calibration=calibration,
                          onnx=q.onnx, per_channel=ctx.config.quant.per_channel)
    sources: dict[str, ExportSource] = {}
    for role, model, what in (("dense", q.model.dense,
                               "FP32 of the distilled student before pruning"),
                              ("teacher", q.model.teacher, "FP32 of the teacher")):
        if model is None:
            continue
        with ctx.step(f"export onnx {role}") as s, converting(f"ONNX export of the {role}",
                                                               "onnx"):
            onnx = to_onnx(model, samples(data, data.test, 2), ctx.work / f"{role}.onnx",
                           _output_names(data))
            s["detail"] = f"{what} (torch.onnx)"
        sources[role] = ExportSource(model=model, example=example, calibration=calibration,
                                     onnx={"fp32": onnx}, stem=role)
    if sources:
        (ctx.stage / "reference").mkdir(exist_ok=True)
    artifacts: list[Artifact] = []
    references: list[Artifact] = []
    for runtime in ctx.target.runtimes:
        with ctx.step(f"export {runtime}") as s:
            fp32_only = runtime in ctx.config.quant.skip_int8  # the project ships FP32 only
            paths = _export(runtime, replace(source, onnx={
                k: v for k, v in source.onnx.items() if k != "int8"}) if fp32_only else source,
                ctx.stage)
            artifacts += [Artifact(runtime, prec, path) for prec, path in paths.items()]
            for role, ref in sources.items():
                refs = _export(runtime, ref, ctx.stage / "reference")
                references += [Artifact(runtime, prec, path, role)
                               for prec, path in refs.items()]
            s["detail"] = ", ".join(p.name for p in paths.values()) + (
                " (copies of the ONNX files made above)" if runtime == "onnxruntime" else "")
    return Exported(q, tuple(artifacts), tuple(references))


def _export(runtime: str, source: ExportSource, out_dir: Path) -> dict[str, Path]:
    with converting(runtime, runtime):
        return get_backend(runtime).export(source, out_dir)


@contextlib.contextmanager
def converting(what: str, runtime: str) -> Iterator[None]:
    """A converter that fails on the user's model is one line, not the converter's trace."""
    try:
        yield
    except (UsageError, BuildError, OSError):
        raise
    except Exception as exc:  # noqa: BLE001 - converters raise anything; name the culprit
        if "No space left" in str(exc):  # a full disk, reported in the converter's own type
            raise OSError(errno.ENOSPC, "No space left on device") from exc
        root = exc  # exporters wrap the real reason (an op, a guard) in their own errors
        while root.__cause__ is not None and root.__cause__ is not root:
            root = root.__cause__  # type: ignore[assignment]
        first = re.sub(r"\x1b\[[0-9;]*m", "", (str(root).strip().splitlines()
                                                 or [type(root).__name__])[0])[:300]
        raise BuildError(f"{what} cannot convert the model ({type(root).__name__}: {first}): "
                         "replace the unsupported op or data-dependent control flow"
                         + ("" if runtime == "onnx" else
                            f", or leave {runtime} out with --set 'runtimes=[...]'")
                         + " (--debug shows the converter's trace)") from exc


# -- assemble ------------------------------------------------------------------------------


def _one_sample(expected: np.ndarray, spec: OutputSpec) -> list[int]:
    """An output's shape for one sample, its batch axis where the model has it."""
    shape = [int(v) for v in expected.shape[1:]]
    shape.insert(spec.batch_axis, 1)
    return shape


def quant_settings(ctx: Deploy, q: QuantizedModel) -> dict[str, Any]:
    """The ``quant.*`` settings the INT8 model was made with, as resolved for this build
    (manifest.json keeps them as written): ``auto`` activations and ``reduce_range`` as
    :mod:`edgekd.compress.quantize` chose them for the target, the samples calibrated on,
    equalisation only where a PyTorch model was equalised, the accuracy budget only where
    the accuracy check ran (a labelled split)."""
    config = ctx.config.quant
    activations = activation_type(config,
                                  tensorrt="TensorrtExecutionProvider" in ctx.target.providers)
    checked = q.quantized.fp32_accuracy is not None
    return {"calibration_samples": len(q.calibration), "per_channel": config.per_channel,
            "activation_type": activations, "weight_type": config.weight_type,
            "reduce_range": reduce_range(config, activations), "percentile": config.percentile,
            "equalize": config.equalize and q.model.student is not None,
            "max_accuracy_drop": config.max_accuracy_drop if checked else None}


def assemble(ctx: Deploy, measured: Measured, *, build_seconds: float,
             budget: dict[str, Any] | None) -> Report:
    """The report, built in one place (:func:`edgekd.report.model.assemble`) from every
    measured value; ``budget`` (source and limits) is checked there."""
    verified = measured.verified
    quantized = verified.exported.quantized
    return assemble_report(
        target=ctx.target, data=ctx.inputs.data, config=ctx.config, task=ctx.inputs.task,
        model=ctx.inputs.model, stages=measured.stages, artifacts=verified.entries,
        references=verified.references,
        quantization={**quantized.quantized.to_dict(),
                      "by_runtime": quantizers(ctx.target.runtimes, ctx.config.quant),
                      "settings": quant_settings(ctx, quantized),
                      **({"qat": quantized.qat} if quantized.qat else {})},
        robustness=measured.robustness, threads=ctx.threads,
        output_shapes=[_one_sample(e, o) for e, o in zip(verified.expected,
                                                          output_specs(ctx), strict=False)],
        outputs=output_specs(ctx),
        build_seconds=build_seconds, budget=budget)
