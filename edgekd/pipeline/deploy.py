"""The deploy phase of a build as typed steps, model in, model out:

    quantize -> export -> verify -> measure -> assemble

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import ExportSource, get_backend, predict_batches, quantizers
from edgekd.backends.from_torch import to_onnx
from edgekd.backends.onnxruntime import provider_options, to_fp16
from edgekd.common.cache import sha256_file
from edgekd.compress.equalize import equalize
from edgekd.compress.quantize import Quantized, quantize_cached
from edgekd.errors import BuildError, UsageError
from edgekd.inputs.resolve import Inputs
from edgekd.measure.bench import BenchSpec, run_bench
from edgekd.measure.remote import Remote, bench_hosts
from edgekd.measure.robustness import artifact_predictor, measure_robustness
from edgekd.measure.verify import Verification, require_agreement, verify_artifact
from edgekd.pipeline.training import Trained
from edgekd.report.model import Report, artifact_files, gzip_size
from edgekd.report.model import assemble as assemble_report
from edgekd.settings.config import BuildConfig
from edgekd.settings.project import Project
from edgekd.settings.targets import Target
from edgekd.train.loop import accuracy, logits_of, predictor
from edgekd.train.stage_cache import digest, stage_entry

log = logging.getLogger(__name__)

Step = Callable[[str], contextlib.AbstractContextManager[dict[str, str]]]


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


@dataclass(frozen=True)
class Artifact:
    runtime: str
    precision: str
    path: Path


@dataclass(frozen=True)
class Exported:
    quantized: QuantizedModel
    artifacts: tuple[Artifact, ...]
    references: tuple[Artifact, ...]  # FP32 artifacts of the dense model (reference/)


@dataclass(frozen=True)
class Verified:
    exported: Exported
    expected: np.ndarray  # the reference model's outputs on the test split
    entries: list[dict[str, Any]]  # report entries of the artifacts
    references: list[dict[str, Any]]  # report entries of the dense references


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


def _validation(inputs: Inputs) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Where accuracy-aware INT8 is judged: the validation split, else the calibration
    split, never the test split; without labels, top-1 agreement with FP32."""
    if inputs.task != "classification":
        return None
    v = inputs.data.validation or inputs.data.calibration
    return v.x, v.y


def quantize(ctx: Deploy, model: Model) -> QuantizedModel:
    """ONNX FP32 of the model, then static INT8 QDQ with ONNX Runtime's tools (cached), and
    FP16 for GPU targets."""
    q, data = ctx.config.quant, ctx.inputs.data
    calibration = data.calibration.x[:q.calibration_samples]
    fp32 = ctx.work / "student_fp32.onnx"
    with ctx.step("quantize") as s:
        # Cross-layer equalisation changes the weights, not the function: the artifacts come
        # from the equalised copy, student.safetensors stays the trained model.
        deployed = (equalize(model.student) if q.equalize and model.student is not None
                    else model.student)
        if deployed is not None:
            with converting("ONNX export (torch.onnx)", "onnx"):
                to_onnx(deployed, data.test.x[:1], fp32)
        else:
            shutil.copyfile(model.onnx, fp32)  # type: ignore[arg-type]
        quantized = quantize_cached(
            ctx.cache, model.key, fp32, ctx.work / "student_int8.onnx", calibration, q,
            validation=_validation(ctx.inputs),
            tensorrt="TensorrtExecutionProvider" in ctx.target.providers, fresh=ctx.fresh)
        onnx = {"fp32": fp32, "int8": quantized.path}
        if ctx.target.needs_gpu:  # GPUs also get FP16 (Tensor Cores)
            onnx["fp16"] = to_fp16(fp32, ctx.work / "student_fp16.onnx")
        s["detail"] = (f"INT8 static ({q.method}, "
                       f"{'per-channel' if q.per_channel else 'per-tensor'}), "
                       f"{len(calibration)} calibration samples"
                       + (f", kept in float: {', '.join(quantized.float_layers)}"
                          if quantized.float_layers else "")
                       + (" (cached)" if quantized.cached else ""))
    return QuantizedModel(model, deployed, onnx, quantized)


# -- export --------------------------------------------------------------------------------


def export(ctx: Deploy, q: QuantizedModel) -> Exported:
    """Each runtime's FP32 and INT8 (and FP16) artifacts, and FP32 references of the dense
    model (the distilled student before pruning) in ``reference/``."""
    data, calibration = ctx.inputs.data, ctx.inputs.data.calibration.x[
        :ctx.config.quant.calibration_samples]
    example = data.test.x[:1]
    source = ExportSource(model=q.deployed, example=example, calibration=calibration,
                          onnx=q.onnx, per_channel=ctx.config.quant.per_channel)
    dense = None
    if q.model.dense is not None:
        dense = ExportSource(model=q.model.dense, example=example, calibration=calibration,
                             onnx={"fp32": to_onnx(q.model.dense, example,
                                                   ctx.work / "dense.onnx")}, stem="dense")
        (ctx.stage / "reference").mkdir()
    artifacts: list[Artifact] = []
    references: list[Artifact] = []
    for runtime in ctx.target.runtimes:
        with ctx.step(f"export {runtime}") as s:
            paths = _export(runtime, source, ctx.stage)
            artifacts += [Artifact(runtime, prec, path) for prec, path in paths.items()]
            if dense is not None:
                refs = _export(runtime, dense, ctx.stage / "reference")
                references += [Artifact(runtime, prec, path) for prec, path in refs.items()]
            s["detail"] = ", ".join(p.name for p in paths.values())
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


# -- verify --------------------------------------------------------------------------------


def describe(a: Artifact) -> dict[str, Any]:
    """An artifact's report entry: files, format, runtime, size, gzip size, sha256."""
    backend = get_backend(a.runtime)
    files = artifact_files(a.path)
    return {"path": a.path.name, "files": [f.name for f in files], "format": backend.FORMAT,
            "precision": a.precision, "runtime": a.runtime,
            "runtime_version": backend.runtime_version(),
            "size_bytes": sum(f.stat().st_size for f in files),
            "size_gzip_bytes": gzip_size(files), "sha256": sha256_file(a.path)}


def _expected(ctx: Deploy, q: QuantizedModel) -> np.ndarray:
    """The reference outputs on the test split: the PyTorch model's, or for a finished ONNX
    model, that model's in ONNX Runtime."""
    x = ctx.inputs.data.test.x
    if q.model.student is not None:
        return np.asarray(logits_of(q.model.student, x).detach().numpy())
    runner = get_backend("onnxruntime").load(q.onnx["fp32"], ctx.threads)
    return predict_batches(runner, x)


def _verified_detail(v: Verification) -> str:
    if v.top1_agreement is not None and v.accuracy is not None:
        return f"accuracy {v.accuracy:.2%}, agreement {v.top1_agreement:.2%}"
    if v.top1_agreement is not None:
        return f"agreement {v.top1_agreement:.2%}"
    return f"cosine ≥ {v.cosine_min:.4f}, max |Δ| {v.max_abs_diff:.3g}"


def verify(ctx: Deploy, exported: Exported) -> Verified:
    """Every artifact in its real runtime on the whole test split, against the model it came
    from; one that disagrees beyond ``min_agreement`` / ``min_cosine`` fails the build."""
    data, config = ctx.inputs.data, ctx.config
    expected = _expected(ctx, exported.quantized)
    labels = data.test.y if ctx.classifier else None
    entries = []
    for a in exported.artifacts:
        with ctx.step(f"verify {a.path.name}") as s:
            v = verify_artifact(a.path, a.runtime, x=data.test.x, y=labels,
                                reference_logits=expected, threads=ctx.threads,
                                providers=ctx.providers(a.runtime, a.precision),
                                classifier=ctx.classifier)
            s["detail"] = _verified_detail(v)
        require_agreement(a.path.name, a.runtime, a.precision, v, config.min_agreement,
                          config.min_cosine)
        entries.append({**describe(a), **v.to_dict()})
    references = [describe(a) for a in exported.references]
    return Verified(exported, expected, entries, references)


# -- measure -------------------------------------------------------------------------------


def _bench_spec(ctx: Deploy, entry: dict[str, Any], threads: int) -> BenchSpec:
    folder = ctx.stage if entry["path"].startswith("student") else ctx.stage / "reference"
    b = ctx.config.bench
    return BenchSpec(folder / entry["path"], entry["runtime"], threads, b.warmup, b.runs,
                     b.seconds or None, input_shape=ctx.inputs.data.test.x[:1].shape,
                     seed=ctx.config.seed,
                     providers=ctx.providers(entry["runtime"], entry["precision"]))


def _bench_entry(result: dict[str, Any]) -> dict[str, Any]:
    """The parts of a bench result that go into an artifact's report entry."""
    keep = ("latency_ms", "memory", "load_ms", "first_inference_ms", "threads", "runs",
            "placement", "device")
    entry = {k: result[k] for k in keep if k in result}
    entry["latency_samples_ms"] = result.get("samples_ms", [])
    if "remote" in result:
        entry["remote"] = result["remote"]
        entry["runtime_version"] = result["runtime_version"]
    return entry


def _robustness(ctx: Deploy, verified: Verified) -> dict[str, Any] | None:
    """The built-in demonstration's test accuracy under corruptions: teacher, scratch and
    distilled students in PyTorch, and the shipped INT8 artifacts in their runtimes."""
    m = verified.exported.quantized.model
    if not ctx.project.builtin or m.teacher is None or m.scratch is None or m.dense is None:
        return None
    with ctx.step("robustness") as s:  # same corrupted test inputs for every model
        models = {"teacher": predictor(m.teacher), "student_scratch": predictor(m.scratch),
                  "student_distilled": predictor(m.dense)}
        models |= {a.path.name: artifact_predictor(a.path, a.runtime, ctx.threads,
                                                   ctx.providers(a.runtime, a.precision))
                   for a in verified.exported.artifacts if a.precision == "int8"}
        robust = measure_robustness(ctx.inputs.data, ctx.config.robustness, models,
                                    seed=ctx.config.seed)
        s["detail"] = (f"{len(robust['conditions'])} conditions, distilled more accurate "
                       f"than scratch in {robust['summary']['distilled_more_accurate']} of "
                       f"{robust['summary']['conditions']}")
    return robust


def _bench_remote(ctx: Deploy, entries: list[dict[str, Any]]) -> None:
    """Every artifact on every device, at the target's own thread count."""
    specs = [_bench_spec(ctx, e, ctx.target.threads) for e in entries]
    with ctx.step(f"bench on {', '.join(r.host for r in ctx.remotes)}") as s:
        for got in bench_hosts(list(ctx.remotes), specs).values():
            if isinstance(got, Exception):
                raise got
            for entry, result in zip(entries, got, strict=True):
                entry.setdefault("remote", []).append(_bench_entry(result))
        s["detail"] = f"{len(specs)} artifacts on {len(ctx.remotes)} device(s)"


def measure(ctx: Deploy, verified: Verified) -> Measured:
    """Robustness (the demonstration), then latency and memory of every artifact in its own
    process here, and on every remote device."""
    robust = _robustness(ctx, verified)
    entries = verified.entries + verified.references
    for entry in entries:
        with ctx.step(f"bench {entry['path']}") as s:
            entry.update(_bench_entry(run_bench(_bench_spec(ctx, entry, ctx.threads))))
            s["detail"] = f"p50 {entry['latency_ms']['p50']:.4f} ms"
    if ctx.remotes:
        _bench_remote(ctx, entries)
    model = verified.exported.quantized.model
    stages = model.stages
    if model.student is not None and not stages:  # a finished PyTorch model's own accuracy
        data = ctx.inputs.data
        stages = [stage_entry("student", model.student, accuracy(model.student, data.test)
                              if ctx.classifier and data.test.y is not None else None)]
    return Measured(verified, robust, stages)


# -- assemble ------------------------------------------------------------------------------


def assemble(ctx: Deploy, measured: Measured, *, build_seconds: float,
             budget: dict[str, Any] | None) -> Report:
    """The report, built in one place (:func:`edgekd.report.model.assemble`) from every
    measured value; ``budget`` (source and limits) is checked there."""
    verified = measured.verified
    return assemble_report(
        target=ctx.target, data=ctx.inputs.data, config=ctx.config, task=ctx.inputs.task,
        model=ctx.inputs.model, stages=measured.stages, artifacts=verified.entries,
        references=verified.references,
        quantization={**verified.exported.quantized.quantized.to_dict(),
                      "by_runtime": quantizers(ctx.target.runtimes, ctx.config.quant)},
        robustness=measured.robustness, threads=ctx.threads,
        output_shape=[1, *verified.expected.shape[1:]],
        build_seconds=build_seconds, budget=budget)
