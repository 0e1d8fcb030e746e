"""``build``: the whole pipeline, top to bottom.

teacher -> student from scratch (the baseline) -> distilled student -> pruned + fine-tuned
student -> ONNX FP32 + INT8 (QDQ) -> each target runtime's FP32 + INT8 artifacts ->
verification in the real runtimes -> benchmarks in separate processes -> reports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from edgekd import prune as pruning
from edgekd.augment import SoftTargets, training_views
from edgekd.backends import ExportSource, get_backend
from edgekd.backends.onnxruntime import provider_options, to_fp16, to_onnx
from edgekd.bench import BenchSpec, run_bench
from edgekd.budget import Budget, evaluate
from edgekd.config import BuildConfig, DistillConfig
from edgekd.data import Dataset, load_digits
from edgekd.distill import Distillation, LayerPair, auto_pairs
from edgekd.equalize import equalize
from edgekd.errors import UsageError
from edgekd.html_report import render_html
from edgekd.models import count_params, student_model, teacher_cnn
from edgekd.output import staged_dir
from edgekd.payoff import flags, payoff
from edgekd.quantize import quantize
from edgekd.remote import Remote, bench_hosts
from edgekd.report import (
    artifact_files,
    build_manifest,
    build_report,
    gzip_size,
    render_markdown,
    sha256_of,
    write_json,
)
from edgekd.resources import default_calibration_file
from edgekd.robustness import artifact_predictor, model_predictor
from edgekd.robustness import measure as measure_robustness
from edgekd.targets import Target, load_target
from edgekd.teacher_cache import teacher_outputs
from edgekd.train import Schedule, accuracy, distributed, logits_of, set_seed, train, world
from edgekd.verify import require_agreement, verify_artifact

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


def _stage(name: str, model: nn.Module, acc: float, **extra: Any) -> dict[str, Any]:
    params, nonzero = count_params(model)
    return {"name": name, "params": params, "nonzero_params": nonzero,
            "accuracy": round(acc, 6), **extra}


def _teacher(data: Dataset, config: BuildConfig, cache_dir: Path) -> tuple[nn.Module, bool]:
    """Train the teacher, or load the one an earlier build trained on the same inputs."""
    key = hashlib.sha256(json.dumps({
        "model": "teacher_cnn", "train": asdict(config.teacher), "seed": config.seed, "v": 2,
        "data": data.fingerprint(), "torch": torch.__version__,
    }, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"teacher-{key}.safetensors"
    set_seed(config.seed)  # before the weights are initialised: the same seed, the same teacher
    model = teacher_cnn(data.num_classes)
    if path.is_file():
        try:
            model.load_state_dict(load_file(path))
            return model.eval(), True
        except (OSError, RuntimeError, ValueError) as exc:  # damaged cache: retrain
            log.warning("ignoring unreadable teacher cache %s: %s", path, exc)
    t = config.teacher
    train(model, data.train, Schedule(t.epochs, t.lr, t.batch_size), seed=config.seed)
    if world()[0] != 0:  # under torchrun, rank 0 keeps the cache
        return model, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(model.state_dict(), tmp)
    tmp.replace(path)
    return model, False


def _pairs(d: DistillConfig, student: nn.Module, teacher: nn.Module,
           example: torch.Tensor) -> list[LayerPair]:
    """The layer pairs feature/attention distillation use: the configured ones, else the
    automatic default; none when neither term is on."""
    if not (d.feature_weight or d.attention_weight):
        return []
    if d.pairs:
        for label, module, names in (("student", student, [s for s, _ in d.pairs]),
                                     ("teacher", teacher, [t for _, t in d.pairs])):
            known = dict(module.named_modules())
            for name in names:
                if name not in known:
                    raise UsageError(f"distill.pairs: the {label} has no layer {name!r}; its "
                                     f"layers: {', '.join(n for n in known if n)}")
        return [LayerPair(s, t) for s, t in d.pairs]
    try:
        return auto_pairs(student, teacher, example)
    except ValueError as exc:
        raise UsageError(f"distill: {exc}") from exc


def _describe(path: Path, runtime: str, precision: str) -> dict[str, Any]:
    files = artifact_files(path)
    return {"path": path.name, "files": [f.name for f in files],
            "format": get_backend(runtime).FORMAT, "precision": precision, "runtime": runtime,
            "runtime_version": get_backend(runtime).runtime_version(),
            "size_bytes": sum(f.stat().st_size for f in files),
            "size_gzip_bytes": gzip_size(files), "sha256": sha256_of(path)}


def _spec(stage: Path, entry: dict[str, Any], threads: int, target: Target,
          config: BuildConfig) -> BenchSpec:
    folder = stage if entry["path"].startswith("student") else stage / "reference"
    b = config.bench
    return BenchSpec(folder / entry["path"], entry["runtime"], threads, b.warmup, b.runs,
                     b.seconds or None, seed=config.seed,
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
                  target: Target, config: BuildConfig, step: _Steps) -> None:
    """Every artifact on every device, at the target's own thread count."""
    specs = [_spec(stage, e, target.threads, target, config) for e in entries]
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


def build(target: str | Target = "raspberrypi", *, out: Path | str = "build",
          config: BuildConfig | None = None, on_step: StepCallback | None = None,
          budget: Budget | None = None, budget_source: str | None = None,
          remotes: Sequence[Remote] = ()) -> BuildResult:
    """Run the whole pipeline for ``target``; artifacts and reports go to ``out/<target>``.

    ``budget`` replaces the target's ``[budget]``; its checks are recorded in the report
    (``edgekd check`` or ``build --check`` turn them into an exit code). ``remotes`` are
    devices the artifacts are also benchmarked on, over SSH.
    """
    started = time.perf_counter()
    config = config or BuildConfig()
    target = load_target(target) if isinstance(target, str) else target
    for runtime in target.runtimes:  # fail now, not after minutes of training
        get_backend(runtime).check(target)
    for remote in remotes:
        remote.preflight()
    out = Path(out)
    step = _Steps(on_step)
    threads = _threads(target)

    with step("data") as s:
        data = load_digits(default_calibration_file(), seed=config.seed)
        s["detail"] = (f"{data.name}: train {len(data.train)}, test {len(data.test)}, "
                       f"calibration {len(data.calibration)}")

    with distributed() as (rank, _size):  # under torchrun, every rank trains
        with step("teacher") as s:
            teacher, cached = _teacher(data, config, out / ".cache")
            teacher_acc = accuracy(teacher, data.test)
            s["detail"] = f"{teacher_acc:.2%}" + (" (cached)" if cached else "")
        stages = [_stage("teacher", teacher, teacher_acc, cached=cached)]

        d = config.distill
        # Scratch and distilled students train on the same inputs: the training split, plus
        # augmented views when asked (their labels mixed for scratch, the teacher's for KD).
        split, soft_labels = training_views(data.train, d.views, mixup=d.mixup,
                                            num_classes=data.num_classes, seed=config.seed)
        st = config.student
        with step("student_scratch") as s:
            set_seed(config.seed)
            scratch = train(student_model(config.student_model, data.num_classes), split,
                            Schedule(st.epochs, st.lr, st.batch_size), seed=config.seed,
                            objective=SoftTargets(soft_labels) if d.views else None)
            stages.append(_stage("student_scratch", scratch, accuracy(scratch, data.test)))
            s["detail"] = f"{stages[-1]['accuracy']:.2%}"

        example_t = torch.from_numpy(data.train.x[:1])
        pairs = _pairs(d, student_model(config.student_model, data.num_classes), teacher,
                       example_t)
        with step("teacher outputs") as s:
            outputs, hit = teacher_outputs(teacher, split.x, [p.teacher for p in pairs],
                                           out / ".cache")
            s["detail"] = (f"{len(split)} samples, logits + {len(pairs)} layer(s), "
                           "memory-mapped" + (" (cached)" if hit else ""))

        def objective_for(model: nn.Module) -> Distillation:
            try:
                return Distillation(model, outputs, pairs, example_t, temperature=d.temperature,
                                    alpha=d.alpha, feature_weight=d.feature_weight,
                                    attention_weight=d.attention_weight)
            except ValueError as exc:  # a pair whose features cannot be compared
                raise UsageError(f"distill.pairs: {exc}") from exc

        with step("student_distilled") as s:
            set_seed(config.seed)
            distilled = student_model(config.student_model, data.num_classes)
            kd = objective_for(distilled)
            train(distilled, split, Schedule(d.epochs, d.lr, d.batch_size), seed=config.seed,
                  objective=kd)
            kd.close()
            stages.append(_stage("student_distilled", distilled, accuracy(distilled, data.test),
                                 temperature=d.temperature, alpha=d.alpha,
                                 feature_weight=d.feature_weight,
                                 attention_weight=d.attention_weight,
                                 pairs=[[p.student, p.teacher] for p in pairs],
                                 views=d.views))
            s["detail"] = f"{stages[-1]['accuracy']:.2%}"

        p = config.prune
        with step("student_pruned") as s:
            student, pruned_info = pruning.prune_model(
                distilled, p, data.train, objective_for=objective_for,
                example=torch.from_numpy(data.test.x[:1]), seed=config.seed + 1,
                batch_size=d.batch_size)
            stages.append(_stage("student_pruned", student, accuracy(student, data.test),
                                 **pruned_info))
            s["detail"] = (f"{stages[-1]['accuracy']:.2%}, {p.method} {p.schedule}, "
                           f"{pruned_info['weight_sparsity']:.0%} weight sparsity")

    if rank != 0:  # the other ranks only helped train; rank 0 exports, verifies, benchmarks
        return BuildResult(out / target.name, {})

    with staged_dir(out / target.name) as stage:
        with step("quantize") as s:
            work = stage / ".work"
            work.mkdir()
            calibration = data.calibration.x[:config.quant.calibration_samples]
            example = data.test.x[:1]
            # Cross-layer equalisation changes the weights, not the function: the artifacts
            # come from the equalised copy, student.safetensors stays the trained model.
            deployed = equalize(student) if config.quant.equalize else student
            onnx_fp32 = to_onnx(deployed, example, work / "student_fp32.onnx")
            # The accuracy-aware search judges INT8 on the calibration split's labels, never
            # on the test split the report's accuracies come from.
            quantized = quantize(onnx_fp32, work / "student_int8.onnx", calibration,
                                 config.quant, validation=(data.calibration.x, data.calibration.y),
                                 tensorrt="TensorrtExecutionProvider" in target.providers)
            onnx_files = {"fp32": onnx_fp32, "int8": quantized.path}
            if target.needs_gpu:  # GPUs also get FP16 (Tensor Cores)
                onnx_files["fp16"] = to_fp16(onnx_fp32, work / "student_fp16.onnx")
            q = config.quant
            s["detail"] = (f"INT8 static ({q.method}, "
                           f"{'per-channel' if q.per_channel else 'per-tensor'}), "
                           f"{len(calibration)} calibration samples"
                           + (f", kept in float: {', '.join(quantized.float_layers)}"
                              if quantized.float_layers else ""))

        source = ExportSource(model=deployed, example=example, calibration=calibration,
                              onnx=onnx_files, per_channel=config.quant.per_channel)
        # The distilled student before pruning, FP32: the baseline that shows whether pruning
        # changed latency or only size.
        dense = ExportSource(model=distilled.eval(), example=example, calibration=calibration,
                             onnx={"fp32": to_onnx(distilled, example, work / "dense.onnx")},
                             stem="dense")
        (stage / "reference").mkdir()
        exported: list[tuple[str, str, Path]] = []  # (runtime, precision, path)
        reference: list[tuple[str, str, Path]] = []
        for runtime in target.runtimes:
            with step(f"export {runtime}") as s:
                paths = get_backend(runtime).export(source, stage)
                exported += [(runtime, prec, path) for prec, path in paths.items()]
                refs = get_backend(runtime).export(dense, stage / "reference")
                reference += [(runtime, prec, path) for prec, path in refs.items()]
                s["detail"] = ", ".join(p.name for p in paths.values())

        expected = logits_of(student, data.test.x).numpy()
        artifacts = []
        for runtime, precision, path in exported:
            with step(f"verify {path.name}") as s:
                v = verify_artifact(path, runtime, x=data.test.x, y=data.test.y,
                                    reference_logits=expected, threads=threads,
                                    providers=_providers(target, runtime, precision))
                s["detail"] = (f"accuracy {v.accuracy:.2%}, agreement {v.top1_agreement:.2%}")
            require_agreement(path.name, runtime, precision, v, config.min_agreement)
            artifacts.append({**_describe(path, runtime, precision),
                              "accuracy": v.accuracy, "top1_agreement": v.top1_agreement,
                              "max_abs_diff": v.max_abs_diff})
        references = [_describe(path, runtime, precision)
                      for runtime, precision, path in reference]

        with step("robustness") as s:  # same corrupted test inputs for every model
            models = {name: model_predictor(m) for name, m in
                      (("teacher", teacher), ("student_scratch", scratch),
                       ("student_distilled", distilled))}
            models |= {path.name: artifact_predictor(path, runtime, threads,
                                                     _providers(target, runtime, precision))
                       for runtime, precision, path in exported if precision == "int8"}
            robust = measure_robustness(data, config.robustness, models, seed=config.seed)
            s["detail"] = (f"{len(robust['conditions'])} conditions, distilled more accurate "
                           f"than scratch in {robust['summary']['distilled_more_accurate']} of "
                           f"{robust['summary']['conditions']}")

        for entry in artifacts + references:
            with step(f"bench {entry['path']}") as s:
                entry.update(_bench_entry(run_bench(_spec(stage, entry, threads, target,
                                                          config))))
                s["detail"] = f"p50 {entry['latency_ms']['p50']:.4f} ms"
        if remotes:
            _bench_remote(remotes, stage, artifacts + references, target, config, step)

        shutil.rmtree(work)
        save_file(student.state_dict(), stage / "student.safetensors")
        report = build_report(target, data, config, stages, artifacts, threads,
                         time.perf_counter() - started)
        report["references"] = references
        report["quantization"] = quantized.to_dict()
        report["robustness"] = robust
        report["payoff"] = payoff(artifacts, references)
        report["flags"] = flags(report["payoff"], artifacts)
        budget = budget if budget is not None else target.budget
        if not budget.empty:
            report["budget"] = {
                "source": budget_source or f"target {target.name}", "limits": budget.to_dict(),
                "checks": [c.to_dict() for c in evaluate(report, budget)]}
        write_json(stage / "report.json", report)
        (stage / "report.md").write_text(render_markdown(report), encoding="utf-8")
        (stage / "report.html").write_text(render_html(report), encoding="utf-8")
        write_json(stage / "manifest.json",
                   build_manifest(target, data, config, stage, artifacts))
    return BuildResult(out / target.name, report)
