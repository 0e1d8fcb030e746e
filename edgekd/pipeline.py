"""``build``: the whole pipeline, top to bottom.

teacher -> student from scratch (the baseline) -> distilled student -> pruned + fine-tuned
student -> ONNX FP32 + INT8 (QDQ) -> each target runtime's FP32 + INT8 artifacts ->
verification in the real runtimes -> benchmarks in separate processes -> reports.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import edgekd
from edgekd import prune as pruning
from edgekd.backends import ExportSource, get_backend
from edgekd.backends.onnxruntime import quantize_int8, to_onnx
from edgekd.bench import BenchSpec, run_bench
from edgekd.config import BuildConfig
from edgekd.data import Dataset, load_digits
from edgekd.models import count_params, student_cnn, teacher_cnn
from edgekd.output import staged_dir
from edgekd.report import artifact_files, render_markdown, sha256_of, write_json
from edgekd.resources import default_calibration_file
from edgekd.targets import Target, load_target
from edgekd.train import Schedule, accuracy, logits_of, set_seed, train
from edgekd.verify import require_agreement, verify_artifact
from edgekd.versions import versions

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
        "model": "teacher_cnn", "train": asdict(config.teacher), "seed": config.seed,
        "data": data.fingerprint(), "torch": torch.__version__,
    }, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir / f"teacher-{key}.safetensors"
    model = teacher_cnn(data.num_classes)
    if path.is_file():
        try:
            model.load_state_dict(load_file(path))
            return model.eval(), True
        except (OSError, RuntimeError, ValueError) as exc:  # damaged cache: retrain
            log.warning("ignoring unreadable teacher cache %s: %s", path, exc)
    set_seed(config.seed)
    t = config.teacher
    train(model, data.train, Schedule(t.epochs, t.lr, t.batch_size), seed=config.seed)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file(model.state_dict(), tmp)
    tmp.replace(path)
    return model, False


def _threads(target: Target) -> int:
    # A target's thread count is for its own device; on a host with fewer cores, more
    # threads than cores only measure contention.
    return max(1, min(target.threads, os.cpu_count() or 1))


def build(target: str | Target = "raspberrypi", *, out: Path | str = "build",
          config: BuildConfig | None = None, on_step: StepCallback | None = None
          ) -> BuildResult:
    """Run the whole pipeline for ``target``; artifacts and reports go to ``out/<target>``."""
    started = time.perf_counter()
    config = config or BuildConfig()
    target = load_target(target) if isinstance(target, str) else target
    for runtime in target.runtimes:  # fail now, not after minutes of training
        get_backend(runtime).check(target)
    out = Path(out)
    step = _Steps(on_step)
    threads = _threads(target)

    with step("data") as s:
        data = load_digits(default_calibration_file(), seed=config.seed)
        s["detail"] = (f"{data.name}: train {len(data.train)}, test {len(data.test)}, "
                       f"calibration {len(data.calibration)}")

    with staged_dir(out / target.name) as stage:
        with step("teacher") as s:
            teacher, cached = _teacher(data, config, out / ".cache")
            teacher_acc = accuracy(teacher, data.test)
            s["detail"] = f"{teacher_acc:.2%}" + (" (cached)" if cached else "")
        stages = [_stage("teacher", teacher, teacher_acc, cached=cached)]
        teacher_logits = logits_of(teacher, data.train.x)

        st = config.student
        with step("student_scratch") as s:
            set_seed(config.seed)
            scratch = train(student_cnn(data.num_classes), data.train,
                            Schedule(st.epochs, st.lr, st.batch_size), seed=config.seed)
            stages.append(_stage("student_scratch", scratch, accuracy(scratch, data.test)))
            s["detail"] = f"{stages[-1]['accuracy']:.2%}"

        d = config.distill
        with step("student_distilled") as s:
            set_seed(config.seed)
            distilled = train(student_cnn(data.num_classes), data.train,
                              Schedule(d.epochs, d.lr, d.batch_size), seed=config.seed,
                              teacher_logits=teacher_logits, temperature=d.temperature,
                              alpha=d.alpha)
            stages.append(_stage("student_distilled", distilled, accuracy(distilled, data.test),
                                 temperature=d.temperature, alpha=d.alpha))
            s["detail"] = f"{stages[-1]['accuracy']:.2%}"

        p = config.prune
        with step("student_pruned") as s:
            student = pruning.apply_masks(copy.deepcopy(distilled), p.sparsity)
            if p.finetune_epochs:
                train(student, data.train, Schedule(p.finetune_epochs, p.lr, d.batch_size),
                      seed=config.seed + 1, teacher_logits=teacher_logits,
                      temperature=d.temperature, alpha=d.alpha)
            student = pruning.bake(student).eval()
            sparsity = pruning.weight_sparsity(student)
            stages.append(_stage("student_pruned", student, accuracy(student, data.test),
                                 weight_sparsity=round(sparsity, 4)))
            s["detail"] = f"{stages[-1]['accuracy']:.2%} at {sparsity:.0%} weight sparsity"

        with step("quantize") as s:
            work = stage / ".work"
            work.mkdir()
            calibration = data.calibration.x[:config.quant.calibration_samples]
            example = data.test.x[:1]
            onnx_fp32 = to_onnx(student, example, work / "student_fp32.onnx")
            onnx_int8 = quantize_int8(onnx_fp32, work / "student_int8.onnx", calibration,
                                      per_channel=config.quant.per_channel)
            s["detail"] = f"INT8 static, {len(calibration)} calibration samples"

        source = ExportSource(model=student, example=example, calibration=calibration,
                              onnx={"fp32": onnx_fp32, "int8": onnx_int8},
                              per_channel=config.quant.per_channel)
        exported: list[tuple[str, str, Path]] = []  # (runtime, precision, path)
        for runtime in target.runtimes:
            with step(f"export {runtime}") as s:
                paths = get_backend(runtime).export(source, stage)
                exported += [(runtime, prec, path) for prec, path in paths.items()]
                s["detail"] = ", ".join(p.name for p in paths.values())

        reference = logits_of(student, data.test.x).numpy()
        artifacts = []
        for runtime, precision, path in exported:
            with step(f"verify {path.name}") as s:
                v = verify_artifact(path, runtime, x=data.test.x, y=data.test.y,
                                    reference_logits=reference, threads=threads,
                                    providers=target.providers)
                s["detail"] = (f"accuracy {v.accuracy:.2%}, agreement {v.top1_agreement:.2%}")
            require_agreement(path.name, runtime, precision, v, config.min_agreement)
            with step(f"bench {path.name}") as s:
                bench = run_bench(BenchSpec(path, runtime, data.input_shape, threads,
                                            config.bench.warmup, config.bench.runs,
                                            target.providers, config.seed))
                s["detail"] = f"p50 {bench['latency_ms']['p50']:.4f} ms"
            files = artifact_files(path)
            artifacts.append({
                "path": path.name, "files": [f.name for f in files],
                "format": get_backend(runtime).FORMAT, "precision": precision,
                "runtime": runtime, "runtime_version": get_backend(runtime).runtime_version(),
                "size_bytes": sum(f.stat().st_size for f in files),
                "sha256": sha256_of(path),
                "accuracy": v.accuracy, "top1_agreement": v.top1_agreement,
                "max_abs_diff": v.max_abs_diff,
                "latency_ms": bench["latency_ms"], "peak_rss_mb": bench["peak_rss_mb"],
                "load_ms": bench["load_ms"], "first_inference_ms": bench["first_inference_ms"],
                "threads": bench["threads"],
            })

        shutil.rmtree(work)
        save_file(student.state_dict(), stage / "student.safetensors")
        report = _report(target, data, config, stages, artifacts, threads,
                         time.perf_counter() - started)
        write_json(stage / "report.json", report)
        (stage / "report.md").write_text(render_markdown(report), encoding="utf-8")
        write_json(stage / "manifest.json", _manifest(target, data, config, stage, artifacts))
    return BuildResult(out / target.name, report)


def _report(target: Target, data: Dataset, config: BuildConfig, stages: list[dict[str, Any]],
            artifacts: list[dict[str, Any]], threads: int, seconds: float) -> dict[str, Any]:
    by_name = {s["name"]: s for s in stages}
    prep = data.preprocessing
    return {
        "edgekd_version": edgekd.__version__,
        "target": target.name,
        "target_description": target.description,
        "input": {
            "name": "input", "shape": list(data.input_shape), "dtype": "float32",
            "layout": prep.layout,
            "preprocessing": {
                "raw": "8x8 grayscale digit, integer pixels 0..16 (scikit-learn digits)",
                "scale": prep.scale, "mean": prep.mean, "std": prep.std,
                "formula": "x = (raw * scale - mean) / std",
            },
            "output": {"name": "logits", "shape": [1, data.num_classes], "dtype": "float32"},
        },
        "dataset": data.summary(),
        "stages": stages,
        "summary": {
            "compression": round(by_name["teacher"]["params"]
                                 / by_name["student_pruned"]["params"], 2),
            "scratch_accuracy": by_name["student_scratch"]["accuracy"],
            "distilled_accuracy": by_name["student_distilled"]["accuracy"],
            "distillation_gain_points": round(100 * (by_name["student_distilled"]["accuracy"]
                                                     - by_name["student_scratch"]["accuracy"]), 2),
        },
        "artifacts": artifacts,
        "bench": {"warmup": config.bench.warmup, "runs": config.bench.runs, "batch": 1,
                  "threads": threads, "target_threads": target.threads},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "processor": platform.processor() or platform.machine()},
        "build_seconds": round(seconds, 2),
    }


def _manifest(target: Target, data: Dataset, config: BuildConfig, stage: Path,
              artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    files = {f: sha256_of(stage / f) for a in artifacts for f in a["files"]}
    files["student.safetensors"] = sha256_of(stage / "student.safetensors")
    return {
        "edgekd_version": edgekd.__version__,
        "versions": versions(),
        "seeds": {"build": config.seed, "calibration_sample": data.seed},
        "config": config.to_dict(),
        "target": asdict(target),
        "dataset": data.summary(),
        "sha256": files,
        "input_example_sha256": hashlib.sha256(data.test.x[:1].tobytes()).hexdigest(),
    }
