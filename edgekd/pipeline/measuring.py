"""The ``measure`` step of a deploy (:mod:`edgekd.pipeline.deploy`): robustness under
input corruptions, then latency and memory of every artifact in its own process here and
on every remote device (the teacher's FP32 references too), and each compared pair (INT8 vs
FP32, pruned vs dense, deployed student vs teacher) timed alternately in one process here,
for the payoff rows and the headline."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd.inputs.calls import first_output, model_outputs
from edgekd.inputs.dataset import Dataset
from edgekd.measure.bench import BenchSpec, PairSpec, run_bench, run_pair
from edgekd.measure.payoff import PAIRED, compared, paired_speedup
from edgekd.measure.remote import bench_hosts
from edgekd.measure.robustness import artifact_predictor, measure_robustness
from edgekd.pipeline.deploy import Deploy, Measured, Verified
from edgekd.report import format as fmt
from edgekd.train.loop import accuracy
from edgekd.train.stage_cache import stage_entry


def bench_spec(ctx: Deploy, entry: dict[str, Any], threads: int) -> BenchSpec:
    folder = ctx.stage if entry["path"].startswith("student") else ctx.stage / "reference"
    b = ctx.config.bench
    return BenchSpec(folder / entry["path"], entry["runtime"], threads, b.warmup, b.runs,
                     b.seconds or None, **_bench_inputs(ctx.inputs.data),
                     seed=ctx.config.seed,
                     providers=ctx.providers(entry["runtime"], entry["precision"]))


def _bench_inputs(data: Dataset) -> dict[str, Any]:
    """What the benchmark feeds: one float sample's shape, or every input by name (token
    ids drawn within the test split's range, so they stay inside the vocabulary; fixed and
    state inputs at their value)."""
    if not data.several_inputs:
        return {"input_shape": data.test.x[:1].shape}
    arrays = data.arrays(data.test)
    inputs = []
    for s in data.input_specs:
        if s.role != "data":
            v = s.constant(1)
            inputs.append({"name": s.name, "dtype": s.dtype, "shape": list(v.shape),
                           "value": v.tolist()})
            continue
        one: dict[str, Any] = {"name": s.name, "dtype": s.dtype, "shape": [1, *s.shape]}
        x = arrays[s.name]
        if np.issubdtype(x.dtype, np.integer) and len(x):
            one |= {"low": int(x.min()), "high": int(x.max())}
        inputs.append(one)
    return {"inputs": tuple(inputs)}


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


def _robustness(ctx: Deploy, verified: Verified) -> dict[str, Any]:
    """Test figures under corruptions of each data input, by its kind (images, 1-D signals,
    token ids; :mod:`edgekd.measure.robustness`): the teacher, scratch and distilled students
    (or a finished model) in PyTorch, and the shipped INT8 artifacts in their runtimes. Where
    nothing can be corrupted the result says why (``skipped``)."""
    m = verified.exported.quantized.model
    data = ctx.inputs.data
    specs = data.input_specs
    with ctx.step("robustness") as s:  # same corrupted test inputs for every model
        torch_models = {"teacher": m.teacher, "student_scratch": m.scratch,
                        "student_distilled": m.dense}
        if m.teacher is None and m.student is not None:  # a finished PyTorch model
            torch_models = {"student": m.student}
        models = {n: first_output(x, specs) for n, x in torch_models.items() if x is not None}
        if m.student is None:  # a finished ONNX model: itself, as shipped in FP32
            models["model"] = artifact_predictor(verified.exported.quantized.onnx["fp32"],
                                                 "onnxruntime", ctx.threads, specs=specs)
        models |= {a.path.name: artifact_predictor(a.path, a.runtime, ctx.threads,
                                                   ctx.providers(a.runtime, a.precision),
                                                   specs=specs)
                   for a in verified.exported.artifacts if a.precision == "int8"}
        robust = measure_robustness(data, ctx.config.robustness, models, seed=ctx.config.seed)
        if "skipped" in robust:
            s["detail"] = f"skipped: {robust['skipped']}"
        else:
            s["detail"] = f"{len(robust['conditions'])} conditions" + (
                f", distilled more {robust['metric']} than scratch in "
                f"{robust['summary']['distilled_more_accurate']} of "
                f"{robust['summary']['conditions']}" if "summary" in robust else "")
    return robust


def _bench_remote(ctx: Deploy, entries: list[dict[str, Any]]) -> None:
    """Every artifact on every device, at the target's own thread count."""
    specs = [bench_spec(ctx, e, ctx.target.threads) for e in entries]
    with ctx.step(f"bench on {', '.join(r.host for r in ctx.remotes)}") as s:
        for got in bench_hosts(list(ctx.remotes), specs).values():
            if isinstance(got, Exception):
                raise got
            for entry, result in zip(entries, got, strict=True):
                entry.setdefault("remote", []).append(_bench_entry(result))
        s["detail"] = f"{len(specs)} artifacts on {len(ctx.remotes)} device(s)"


def _compare(ctx: Deploy, verified: Verified) -> None:
    """Each pair the payoff rows compare (INT8 vs FP32, pruned vs dense, the deployed
    student vs the teacher: :func:`edgekd.measure.payoff.compared`), timed again here
    in alternating rounds in one process: two separate benches run seconds apart, and load
    on a shared machine that changes in between would read as a speed difference."""
    for _, step, base, cand in compared(verified.entries, verified.references):
        if base["path"] in cand.get(PAIRED, {}):  # timed already (the choose step)
            continue
        with ctx.step(f"compare {cand['path']} with {base['path']}") as s:
            spec = PairSpec(bench_spec(ctx, base, ctx.threads),
                            bench_spec(ctx, cand, ctx.threads),
                            seconds=max(1.0, min(ctx.config.bench.seconds or 2.0, 5.0)))
            result = run_pair(spec)
            cand.setdefault(PAIRED, {})[base["path"]] = result
            p = paired_speedup(result)
            s["detail"] = (f"{step}: {p['speedup']:.2f}× ({p['verdict']}, "
                           f"{p['rounds']} rounds)")


def measure(ctx: Deploy, verified: Verified) -> Measured:
    """Robustness (the demonstration), then latency and memory of every artifact in its own
    process here, and on every remote device."""
    robust = _robustness(ctx, verified)
    entries = verified.entries + verified.references
    for entry in entries:
        with ctx.step(f"bench {entry['path']}") as s:
            entry.update(_bench_entry(run_bench(bench_spec(ctx, entry, ctx.threads))))
            s["detail"] = f"p50 {fmt.latency(entry['latency_ms']['p50'])}"
    _compare(ctx, verified)
    if ctx.remotes:
        _bench_remote(ctx, entries)
    model = verified.exported.quantized.model
    stages = model.stages
    if model.student is not None and not stages:  # a finished PyTorch model's own accuracy
        data = ctx.inputs.data
        stages = [stage_entry("student", model.student, _accuracy(model.student, data)
                              if ctx.classifier and data.test.y is not None else None)]
    return Measured(verified, robust, stages)


def _accuracy(student: Any, data: Dataset) -> float:
    """A finished classifier's test accuracy in PyTorch, fed every input the model takes
    (a model of several inputs is scored on its classifier output)."""
    if not data.several_inputs:
        return accuracy(student, data.test)
    outputs = model_outputs(student, data.feeds(data.test), outputs=data.outputs)
    i = next((k for k, o in enumerate(data.outputs) if o.classifier), 0)
    return float((outputs[i].argmax(1) == data.test.y).mean())
