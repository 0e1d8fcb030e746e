"""The ``verify`` step of a deploy (:mod:`edgekd.pipeline.deploy`, after ``export``, before
``choose``): every artifact in its real runtime on the whole test split, against the model it
came from, and the teacher's FP32 references against the teacher; one that disagrees beyond
the limits fails the build. Each artifact's report entry starts here (:func:`describe`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.backends import get_backend, predict_all
from edgekd.common.cache import sha256_file
from edgekd.inputs.calls import model_outputs, torch_call
from edgekd.measure.stream import require_stream, stream_check
from edgekd.measure.verify import Limits, Verification, require_outputs, verify_artifact
from edgekd.pipeline.deploy import (
    Artifact,
    Deploy,
    Exported,
    QuantizedModel,
    RunAll,
    Verified,
    output_specs,
)
from edgekd.report.model import artifact_files, gzip_size

# A stateful model is also verified over a stream of this many consecutive test samples
# (each call fed the state the one before returned): long enough for drift to build up.
STREAM_CHUNKS = 50


def describe(a: Artifact) -> dict[str, Any]:
    """An artifact's report entry: files, format, runtime, size, gzip size, sha256, and the
    precision the runtime runs it at with its default settings (``inference_precision``:
    what a deployer's plain load gets, which for OpenVINO on a bf16 CPU is not fp32)."""
    backend = get_backend(a.runtime)
    files = artifact_files(a.path)
    return {"path": a.path.name, "files": [f.name for f in files], "format": backend.FORMAT,
            "precision": a.precision, "runtime": a.runtime,
            "inference_precision": backend.inference_precision(a.path),
            "runtime_version": backend.runtime_version(),
            "size_bytes": sum(f.stat().st_size for f in files),
            "size_gzip_bytes": gzip_size(files), "sha256": sha256_file(a.path)}


def _reference(ctx: Deploy, q: QuantizedModel) -> RunAll:
    """One call of the model the artifacts came from: the PyTorch model, or for a finished
    ONNX model, that model in ONNX Runtime."""
    if q.model.student is not None:
        return torch_call(q.model.student, ctx.inputs.data.input_specs)
    return get_backend("onnxruntime").load(q.onnx["fp32"], ctx.threads).run_all


def _expected(ctx: Deploy, q: QuantizedModel) -> list[np.ndarray]:
    """Every reference output on the test split (see :func:`_reference`)."""
    data = ctx.inputs.data
    if q.model.student is not None:
        return model_outputs(q.model.student, data.feeds(data.test), outputs=data.outputs)
    runner = get_backend("onnxruntime").load(q.onnx["fp32"], ctx.threads)
    return predict_all(runner, data.input_specs, data.arrays(data.test),
                       outputs=data.outputs)


def _verified_detail(v: Verification) -> str:
    if v.top1_agreement is not None and v.accuracy is not None:
        return f"accuracy {v.accuracy:.2%}, agreement {v.top1_agreement:.2%}"
    if v.top1_agreement is not None:
        return f"agreement {v.top1_agreement:.2%}"
    worst = max(v.outputs, key=lambda c: c.rel_error) if v.outputs else None
    if worst is not None and (len(v.outputs) > 1 or worst.cosine_min is None):
        return f"max |Δ| {worst.rel_error:.2%} of range ({worst.name})"
    return f"cosine ≥ {v.cosine_min:.4f}, max |Δ| {v.max_abs_diff:.3g}"


def verify(ctx: Deploy, exported: Exported) -> Verified:
    """Every artifact in its real runtime on the whole test split, against the model it came
    from; one that disagrees beyond ``min_agreement`` / ``min_cosine`` fails the build."""
    data, config = ctx.inputs.data, ctx.config
    expected = _expected(ctx, exported.quantized)
    labels = data.test.y if ctx.classifier else None
    specs, arrays, outputs = data.input_specs, data.arrays(data.test), output_specs(ctx)
    limits = Limits.of(config)
    streams = any(s.role == "state" for s in specs)
    entries = []
    for a in exported.artifacts:
        with ctx.step(f"verify {a.path.name}") as s:
            providers = ctx.providers(a.runtime, a.precision)
            v = verify_artifact(a.path, a.runtime, threads=ctx.threads, y=labels,
                                providers=providers, inputs=specs, arrays=arrays,
                                references=expected, outputs=outputs)
            s["detail"] = _verified_detail(v)
            require_outputs(a.path.name, a.runtime, a.precision, v.outputs, limits)
            entry = {**describe(a), **v.to_dict()}
            if streams:  # drift over a stream shows only when the state is fed back
                runner = get_backend(a.runtime).load(a.path, ctx.threads, providers)
                stream = stream_check(_reference(ctx, exported.quantized), runner.run_all,
                                      specs, outputs, arrays, chunks=STREAM_CHUNKS)
                require_stream(a.path.name, a.runtime, a.precision, stream, limits)
                entry["stream"] = stream.to_dict()
                s["detail"] += f", stream of {stream.chunks} chunks"
        entries.append(entry)
    references = _verify_references(ctx, exported)
    return Verified(exported, expected, entries, references)


def _verify_references(ctx: Deploy, exported: Exported) -> list[dict[str, Any]]:
    """The references' report entries, each with its ``role``. The teacher's artifacts are
    verified like the student's, against the teacher in PyTorch: the headline compares the
    student with them, so one that disagrees with the teacher fails the build."""
    data, teacher = ctx.inputs.data, exported.quantized.model.teacher
    out = []
    expected = None
    for a in exported.references:
        entry = {**describe(a), "role": a.role or "dense"}
        if a.role == "teacher" and teacher is not None:
            if expected is None:
                expected = model_outputs(teacher, data.feeds(data.test), outputs=data.outputs)
            with ctx.step(f"verify {a.path.name}") as s:
                v = verify_artifact(a.path, a.runtime, threads=ctx.threads,
                                    y=data.test.y if ctx.classifier else None,
                                    providers=ctx.providers(a.runtime, a.precision),
                                    inputs=data.input_specs, arrays=data.arrays(data.test),
                                    references=expected, outputs=output_specs(ctx))
                s["detail"] = _verified_detail(v)
                require_outputs(a.path.name, a.runtime, a.precision, v.outputs,
                                Limits.of(ctx.config))
            entry |= v.to_dict()
        out.append(entry)
    return out
