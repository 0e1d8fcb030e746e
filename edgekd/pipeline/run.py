"""``build``: the whole pipeline, top to bottom.

project inputs (data, models) -> [teacher -> student from scratch (the baseline) ->
distilled student -> pruned + fine-tuned student, each cached: edgekd.train.stage_cache] -> ONNX FP32 +
INT8 (QDQ) -> each target runtime's FP32 + INT8 artifacts -> verification in the real
runtimes -> benchmarks in separate processes -> reports. A finished model (trained weights
or an ONNX file) skips the training stages.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import ExportSource, get_backend
from edgekd.backends.from_torch import to_onnx
from edgekd.backends.onnxruntime import provider_options, to_fp16
from edgekd.common.cache import sha256_file
from edgekd.compress.equalize import equalize
from edgekd.compress.quantize import quantize_cached
from edgekd.errors import BuildError, UsageError
from edgekd.inputs.digits import load_digits
from edgekd.inputs.resolve import Inputs, resolve
from edgekd.measure.bench import BenchSpec, run_bench
from edgekd.measure.payoff import flags, payoff
from edgekd.measure.remote import Remote, bench_hosts
from edgekd.measure.robustness import artifact_predictor, measure_robustness
from edgekd.measure.verify import require_agreement, verify_artifact
from edgekd.pipeline.training import Trained, run_training
from edgekd.report.gate import budget_checks
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.report.model import artifact_files, build_manifest, build_report, gzip_size, write_json
from edgekd.report.staging import build_lock, staged_dir
from edgekd.settings.budgets import Budget
from edgekd.settings.config import BuildConfig
from edgekd.settings.project import Project
from edgekd.settings.resources import default_calibration_file
from edgekd.settings.targets import Target, load_target
from edgekd.train.loop import accuracy, distributed, logits_of, predictor
from edgekd.train.stage_cache import StageCache, digest, save_weights, stage_entry

log = logging.getLogger(__name__)

StepCallback = Callable[[str, str], None]  # (step name, one-line result)


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    report: dict[str, Any]


@dataclass
class _Steps:
    """Times each step and tells the caller (the CLI's progress display) when one ends."""

    on_step: StepCallback | None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, str]]:
        result = {"detail": ""}
        start = time.perf_counter()
        yield result
        log.info("%s: %s (%.1f s)", name, result["detail"], time.perf_counter() - start)
        if self.on_step:
            self.on_step(name, f"{result['detail']} ({time.perf_counter() - start:.1f} s)")


def _describe(path: Path, runtime: str, precision: str) -> dict[str, Any]:
    files = artifact_files(path)
    return {"path": path.name, "files": [f.name for f in files],
            "format": get_backend(runtime).FORMAT, "precision": precision, "runtime": runtime,
            "runtime_version": get_backend(runtime).runtime_version(),
            "size_bytes": sum(f.stat().st_size for f in files),
            "size_gzip_bytes": gzip_size(files), "sha256": sha256_file(path)}


def _spec(stage: Path, entry: dict[str, Any], threads: int, target: Target,
          config: BuildConfig, shape: tuple[int, ...]) -> BenchSpec:
    folder = stage if entry["path"].startswith("student") else stage / "reference"
    b = config.bench
    return BenchSpec(folder / entry["path"], entry["runtime"], threads, b.warmup, b.runs,
                     b.seconds or None, input_shape=shape, seed=config.seed,
                     providers=_providers(target, entry["runtime"], entry["precision"]))


def _providers(target: Target, runtime: str, precision: str) -> tuple[Any, ...]:
    if runtime == "onnxruntime":
        return provider_options(target.providers, precision)
    return target.providers


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


def _bench_remote(remotes: Sequence[Remote], stage: Path, entries: list[dict[str, Any]],
                  target: Target, config: BuildConfig, step: _Steps, shape: tuple[int, ...]
                  ) -> None:
    """Every artifact on every device, at the target's own thread count."""
    specs = [_spec(stage, e, target.threads, target, config, shape) for e in entries]
    with step(f"bench on {', '.join(r.host for r in remotes)}") as s:
        for got in bench_hosts(list(remotes), specs).values():
            if isinstance(got, Exception):
                raise got
            for entry, result in zip(entries, got, strict=True):
                entry.setdefault("remote", []).append(_bench_entry(result))
        s["detail"] = f"{len(specs)} artifacts on {len(remotes)} device(s)"


def _threads(target: Target) -> int:
    # A target's thread count is for its own device; on a host with fewer cores, more
    # threads than cores only measure contention.
    return max(1, min(target.threads, os.cpu_count() or 1))


def _builtin(project: Project) -> Inputs:
    """The demonstration without a project file: digits, the built-in teacher and student."""
    from edgekd.train.models import student_model, teacher_cnn

    config = project.build
    data = load_digits(default_calibration_file(), seed=config.seed)
    return Inputs(data=data, task="classification",
                  student=lambda: student_model(config.student_model, data.num_classes or 10),
                  teacher=lambda: teacher_cnn(data.num_classes or 10), teacher_trains=True,
                  teacher_key="edgekd.train.models:teacher_cnn",
                  model={"teacher": "edgekd.train.models:teacher_cnn",
                         "student": f"edgekd.train.models:{config.student_model}"})



def _target(target: str | Target, project: Project) -> Target:
    target = load_target(target) if isinstance(target, str) else target
    if project.runtimes:  # a subset of the target's runtimes, in the target's order
        extra = [r for r in project.runtimes if r not in target.runtimes]
        if extra:
            raise UsageError(f"runtimes: {extra[0]!r} is not a runtime of target "
                             f"{target.name!r} ({', '.join(target.runtimes)}): choose from those")
        target = replace(target, runtimes=tuple(r for r in target.runtimes
                                                if r in project.runtimes))
    return target


def _model_key(inputs: Inputs, trained: Trained | None) -> str:
    """What identifies the deployed model: the cached stage chain, or the user's files."""
    return trained.key if trained else digest("finished", inputs.model)


def _validation(inputs: Inputs) -> tuple[np.ndarray, np.ndarray | None] | None:
    """Where accuracy-aware INT8 is judged: the validation split, else the calibration
    split, never the test split; without labels, top-1 agreement with FP32."""
    if inputs.task != "classification":
        return None
    v = inputs.data.validation or inputs.data.calibration
    return v.x, v.y


def build(target: str | Target = "raspberrypi", *, out: Path | str = "build",
          config: BuildConfig | None = None, project: Project | None = None,
          on_step: StepCallback | None = None, budget: Budget | None = None,
          budget_source: str | None = None, remotes: Sequence[Remote] = (),
          fresh: bool = False, trust_pickle: bool = False) -> BuildResult:
    """Run the whole pipeline for ``target``; artifacts and reports go to ``out/<target>``.

    ``project`` says what to build from (default: the built-in digits demonstration);
    ``config`` replaces its settings. ``budget`` replaces the target's ``[budget]``; its
    checks are recorded in the report (``edgekd check`` or ``build --check`` turn them into
    an exit code). ``remotes`` are devices the artifacts are also benchmarked on, over SSH.
    Training stages are cached under ``out/.cache``; ``fresh`` ignores that cache.
    ``trust_pickle`` lets weights files that are full pickles run their code when loaded.
    """
    started = time.perf_counter()
    project = project or Project(root=Path.cwd(), source="built-in")
    if config is not None:
        project = replace(project, build=config)
    config = project.build
    target = _target(target, project)
    for runtime in target.runtimes:  # fail now, not after minutes of training
        get_backend(runtime).check(target)
    for remote in remotes:
        remote.preflight()
    out = Path(out)
    step = _Steps(on_step)
    # Under torchrun only rank 0 writes the build, so only rank 0 holds the folder's lock.
    lead = int(os.environ.get("RANK", "0")) == 0
    with build_lock(out / target.name) if lead else contextlib.nullcontext():
        with step("data") as s:
            inputs = (_builtin(project) if project.builtin
                      else resolve(project, trust_pickle=trust_pickle))
            data = inputs.data
            s["detail"] = (f"{data.name}: train {len(data.train)}, test {len(data.test)}, "
                           f"calibration {len(data.calibration)}")
        if inputs.onnx is not None and "tflite" in target.runtimes:
            raise UsageError(
                f"target {target.name!r} includes TFLite, which edgekd converts from PyTorch "
                "(litert-torch), not from ONNX: give the PyTorch model (model.student and "
                "model.student_weights), or build the other runtimes with --set "
                f"'runtimes={json.dumps([r for r in target.runtimes if r != 'tflite'])}'")
        cache = StageCache(out / ".cache" / "stages", fresh=fresh)
        trained = None
        if inputs.trains:
            with distributed() as (rank, _size):  # under torchrun, every rank trains
                trained = run_training(
                    teacher=inputs.teacher, student=inputs.student,  # type: ignore[arg-type]
                    teacher_trains=inputs.teacher_trains, teacher_key=inputs.teacher_key,
                    data=data, config=config, cache=cache, cache_dir=out / ".cache", step=step)
            if rank != 0:  # the other ranks only helped train; rank 0 does the rest
                return BuildResult(out / target.name, {})
        with staged_dir(out / target.name) as stage:
            report = _deploy(stage, project, inputs, trained, target, step, remotes, out,
                             fresh)
            report["build_seconds"] = round(time.perf_counter() - started, 2)
            budget = budget if budget is not None else (project.budget_for(target.name)
                                                        or target.budget)
            if not budget.empty:
                report["budget"] = {
                    "source": budget_source or (project.source if project.budget_for(
                        target.name) else f"target {target.name}"),
                    "limits": budget.to_dict(),
                    "checks": [c.to_dict() for c in budget_checks(report, budget)]}
            write_json(stage / "report.json", report)
            (stage / "report.md").write_text(render_markdown(report), encoding="utf-8")
            (stage / "report.html").write_text(render_html(report), encoding="utf-8")
    return BuildResult(out / target.name, report)


def _deploy(stage: Path, project: Project, inputs: Inputs, trained: Trained | None,
            target: Target, step: _Steps, remotes: Sequence[Remote], out: Path,
            fresh: bool) -> dict[str, Any]:
    """Quantize, export, verify, measure and describe the model, inside the staging folder."""
    config, data = project.build, inputs.data
    threads = _threads(target)
    classifier = inputs.task == "classification"
    student = trained.student if trained else (inputs.student() if inputs.student else None)
    stages = trained.stages if trained else []
    work = stage / ".work"
    work.mkdir()
    calibration = data.calibration.x[:config.quant.calibration_samples]
    example = data.test.x[:1]
    with step("quantize") as s:
        # Cross-layer equalisation changes the weights, not the function: the artifacts
        # come from the equalised copy, student.safetensors stays the trained model.
        deployed = (equalize(student) if config.quant.equalize and student is not None
                    else student)
        if deployed is not None:
            with _converting("ONNX export (torch.onnx)", "onnx"):
                onnx_fp32 = to_onnx(deployed, example, work / "student_fp32.onnx")
        else:
            onnx_fp32 = work / "student_fp32.onnx"
            shutil.copyfile(inputs.onnx, onnx_fp32)  # type: ignore[arg-type]
        quantized = quantize_cached(
            out / ".cache" / "stages", _model_key(inputs, trained), onnx_fp32,
            work / "student_int8.onnx", calibration, config.quant,
            validation=_validation(inputs),
            tensorrt="TensorrtExecutionProvider" in target.providers, fresh=fresh)
        onnx_files = {"fp32": onnx_fp32, "int8": quantized.path}
        if target.needs_gpu:  # GPUs also get FP16 (Tensor Cores)
            onnx_files["fp16"] = to_fp16(onnx_fp32, work / "student_fp16.onnx")
        q = config.quant
        s["detail"] = (f"INT8 static ({q.method}, "
                       f"{'per-channel' if q.per_channel else 'per-tensor'}), "
                       f"{len(calibration)} calibration samples"
                       + (f", kept in float: {', '.join(quantized.float_layers)}"
                          if quantized.float_layers else "")
                       + (" (cached)" if quantized.cached else ""))
    if student is not None and not trained:  # a finished PyTorch model: its test accuracy
        stages = [stage_entry("student", student, accuracy(student, data.test)
                              if classifier and data.test.y is not None else None)]

    source = ExportSource(model=deployed, example=example, calibration=calibration,
                          onnx=onnx_files, per_channel=config.quant.per_channel)
    exported: list[tuple[str, str, Path]] = []  # (runtime, precision, path)
    reference: list[tuple[str, str, Path]] = []
    dense = None
    if trained:  # the distilled student before pruning, FP32: what pruning bought
        dense = ExportSource(model=trained.distilled, example=example, calibration=calibration,
                             onnx={"fp32": to_onnx(trained.distilled, example,
                                                   work / "dense.onnx")}, stem="dense")
        (stage / "reference").mkdir()
    for runtime in target.runtimes:
        with step(f"export {runtime}") as s:
            paths = _export(runtime, source, stage)
            exported += [(runtime, prec, path) for prec, path in paths.items()]
            if dense is not None:
                refs = _export(runtime, dense, stage / "reference")
                reference += [(runtime, prec, path) for prec, path in refs.items()]
            s["detail"] = ", ".join(p.name for p in paths.values())

    if student is not None:
        expected = logits_of(student, data.test.x).detach().numpy()
    else:  # a finished ONNX model: the reference is that model in ONNX Runtime
        from edgekd.backends import predict_batches

        expected = predict_batches(get_backend("onnxruntime").load(onnx_fp32, threads),
                                   data.test.x)
    labels = data.test.y if classifier else None
    artifacts = []
    for runtime, precision, path in exported:
        with step(f"verify {path.name}") as s:
            v = verify_artifact(path, runtime, x=data.test.x, y=labels,
                                reference_logits=expected, threads=threads,
                                providers=_providers(target, runtime, precision),
                                classifier=classifier)
            s["detail"] = (f"accuracy {v.accuracy:.2%}, agreement {v.top1_agreement:.2%}"
                           if v.top1_agreement is not None and v.accuracy is not None else
                           f"agreement {v.top1_agreement:.2%}" if v.top1_agreement is not None
                           else f"cosine ≥ {v.cosine_min:.4f}, max |Δ| {v.max_abs_diff:.3g}")
        require_agreement(path.name, runtime, precision, v, config.min_agreement,
                          config.min_cosine)
        artifacts.append({**_describe(path, runtime, precision), **v.to_dict()})
    references = [_describe(path, runtime, precision) for runtime, precision, path in reference]

    robust = None
    if project.builtin and trained and trained.scratch is not None:
        with step("robustness") as s:  # same corrupted test inputs for every model
            models = {name: predictor(m) for name, m in
                      (("teacher", trained.teacher), ("student_scratch", trained.scratch),
                       ("student_distilled", trained.distilled))}
            models |= {path.name: artifact_predictor(path, runtime, threads,
                                                     _providers(target, runtime, precision))
                       for runtime, precision, path in exported if precision == "int8"}
            robust = measure_robustness(data, config.robustness, models, seed=config.seed)
            s["detail"] = (f"{len(robust['conditions'])} conditions, distilled more accurate "
                           f"than scratch in {robust['summary']['distilled_more_accurate']} of "
                           f"{robust['summary']['conditions']}")

    for entry in artifacts + references:
        with step(f"bench {entry['path']}") as s:
            entry.update(_bench_entry(run_bench(_spec(stage, entry, threads, target, config,
                                                      example.shape))))
            s["detail"] = f"p50 {entry['latency_ms']['p50']:.4f} ms"
    if remotes:
        _bench_remote(remotes, stage, artifacts + references, target, config, step,
                      example.shape)

    shutil.rmtree(work)
    if student is not None:
        save_weights(student, stage / "student.safetensors")
    report = build_report(target, data, config, stages, artifacts, threads, 0.0,
                          output_shape=[1, *expected.shape[1:]])
    report["task"] = inputs.task
    report["model"] = inputs.model
    if references:
        report["references"] = references
        report["payoff"] = payoff(artifacts, references)
    report["quantization"] = quantized.to_dict()
    if robust is not None:
        report["robustness"] = robust
    report["flags"] = flags(report.get("payoff", []), artifacts)
    write_json(stage / "manifest.json",
               build_manifest(target, data, project, stage, artifacts))
    return report


@contextlib.contextmanager
def _converting(what: str, runtime: str) -> Iterator[None]:
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


def _export(runtime: str, source: ExportSource, out_dir: Path) -> dict[str, Path]:
    with _converting(runtime, runtime):
        return get_backend(runtime).export(source, out_dir)  # type: ignore[no-any-return]
