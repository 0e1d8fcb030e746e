"""One step at a time, with the code a build runs for that step:

    edgekd.quantize(model, data)            -> an INT8 artifact, checked against FP32
    edgekd.export(model, example, out=DIR)  -> FP32 artifacts per runtime, each checked
    edgekd.verify(artifact, reference, data) -> the artifact against its reference model
    edgekd.bench(artifact)                  -> latency and memory in a fresh process

Each returns its figures (:class:`CheckedArtifact`, or the benchmark's dict). Models may be
ONNX files (or ``onnx.ModelProto``), ``torch.nn.Module`` objects or ``file.py:factory``
strings (with ``weights``); data may be ``.npy`` / ``.npz`` files or anything
:mod:`edgekd.inputs.objects` reads (arrays, an edgekd Dataset, a torch Dataset or
DataLoader), made into the model's inputs by :mod:`.step_inputs`. Files are written into a
staging folder beside the destination and moved into place only when the step succeeded; an
existing file is replaced only with ``force=True`` (:mod:`.step_files`). Errors are
:class:`~edgekd.errors.EdgekdError` with one line. Importing this module imports no torch:
:func:`bench` and :func:`verify` of artifacts against an ONNX model run where only a runtime
is installed.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.backends import ExportSource, get_backend, predict_all, runtime_for_suffix
from edgekd.errors import UsageError, VerificationError
from edgekd.inputs.dataset import Dataset, Feeds, OutputSpec
from edgekd.measure.verify import Limits, Verification, require_outputs, verify_artifact
from edgekd.pipeline.step_files import (
    SUFFIXES,
    companions,
    destination,
    move,
    precision_of,
    refuse_overwrite,
    staging,
)
from edgekd.pipeline.step_inputs import (
    calibration_split,
    data_feeds,
    is_onnx,
    load_module,
    module_feeds,
    onnx_declared,
    onnx_file,
    renamed,
    require_varied,
)
from edgekd.settings.config import QuantConfig
from edgekd.settings.project import TASKS


@dataclass(frozen=True)
class CheckedArtifact:
    """An artifact run in its runtime and compared with its reference model on
    ``verification.samples`` samples; ``problem`` says why it fails the gate (None: it
    passes, by the build's limits: :class:`~edgekd.measure.verify.Limits`)."""

    path: Path
    runtime: str
    precision: str
    verification: Verification
    problem: str | None = None
    checked_on: str = ""  # which samples: "40 held-out samples of --data", ...
    reference_accuracy: float | None = None  # the reference model's, when labels are given

    @property
    def passed(self) -> bool:
        return self.problem is None

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "runtime": self.runtime, "precision": self.precision,
                "passed": self.passed, "problem": self.problem, "checked_on": self.checked_on,
                "reference_accuracy": self.reference_accuracy,
                **self.verification.to_dict()}


# -- checking an artifact against its reference ---------------------------------------------


def output_specs(references: Sequence[np.ndarray], names: Sequence[str], task: str | None
                  ) -> list[OutputSpec]:
    """Classifier outputs: all with ``task="classification"``, none with ``regression``;
    unsaid, a [samples, classes] output with several classes."""
    if task is not None and task not in TASKS:
        near = difflib.get_close_matches(task, TASKS, n=1)
        raise UsageError(f"--task (task=) {task!r} is not a task: choose "
                         f"{' or '.join(TASKS)}" + (f" (did you mean {near[0]!r}?)"
                                                    if near else ""))
    return [OutputSpec(n, classifier=(task == "classification" if task else
                                      r.ndim == 2 and r.shape[1] > 1))
            for r, n in zip(references, names, strict=True)]


def _check(path: Path, runtime: str, precision: str, feeds: Feeds,
           references: list[np.ndarray], outputs: list[OutputSpec], y: np.ndarray | None,
           limits: Limits | None, threads: int, checked_on: str = "") -> CheckedArtifact:
    """``path`` in its runtime against ``references`` (the build's verification and gate,
    with advice in the steps' own options). ``precision`` "": read from the model."""
    runner = get_backend(runtime).load(path, threads)
    precision = precision or precision_of(path, runtime, runner)
    mine = renamed(feeds, runner.input_names, path.name)
    v = verify_artifact(path, runtime, threads=threads, y=y, inputs=mine.specs,
                        arrays=mine.arrays, references=references, outputs=outputs)
    checked_on = checked_on or f"{len(feeds)} samples given"
    done = CheckedArtifact(path, runtime, precision, v, checked_on=checked_on,
                           reference_accuracy=_accuracy(references, outputs, y))
    try:
        require_outputs(path.name, runtime, precision, v.outputs, limits or Limits(),
                        where=f"on the {checked_on}", advice=_advice, train=_TRAIN)
    except VerificationError as exc:
        return replace(done, problem=str(exc))
    return done


_TRAIN = ("give the reference's trained --weights (weights=), or train it further first")


def _advice(precision: str, setting: str) -> str:
    """What to try, in the options of quantize / export / verify (not a build's settings)."""
    relax = (f"relax the limit: --limit {setting}=... (limits=Limits({setting}=...))"
             if setting else "")
    if not setting:
        return ("check that --reference (with its --weights) is the model the artifact was "
                "made from, and the preprocessing of --data"
                + ("; for INT8, calibration data that covers the inputs' real range"
                   if precision == "int8" else ""))
    if precision != "int8":
        return ("a float artifact should match its model: check that --reference and its "
                "--weights are what the artifact was exported from, then the export (opset, "
                f"converter version; --debug shows details); or {relax}")
    return ("first quantize again on more or more representative samples (--data, --samples), "
            "then another --method (percentile, entropy); only if that difference is "
            f"acceptable, {relax}")


def _accuracy(references: list[np.ndarray], outputs: list[OutputSpec],
              y: np.ndarray | None) -> float | None:
    """The reference model's top-1 accuracy on labels ``y`` (its first classifier output)."""
    first = next((r for r, o in zip(references, outputs, strict=True) if o.classifier), None)
    if y is None or first is None or y.dtype.kind not in "iu" or len(y) != len(first):
        return None
    return round(float((first.argmax(axis=-1) == y).mean()), 6)


def _reference_outputs(reference: Any, feeds: Feeds, threads: int) -> list[np.ndarray]:
    """Every output of the reference (a module, else an ONNX file in ONNX Runtime)."""
    if isinstance(reference, Path):
        runner = get_backend("onnxruntime").load(reference, threads)
        return predict_all(runner, feeds.specs, feeds.arrays)
    from edgekd.inputs.calls import model_outputs

    try:
        return model_outputs(reference, feeds)
    except Exception as exc:  # noqa: BLE001 - the user's model on the user's data
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        given = ", ".join(f"{list(a.shape)} {a.dtype}" for a in feeds.arrays.values())
        dtype = any(a.dtype.kind == "f" for a in feeds.arrays.values()) and any(
            w in first.lower() for w in ("scalar type", "dtype", "long", "indices",
                                         "floattensor"))
        raise UsageError(f"the model cannot run on inputs of shape and dtype {given} "
                         f"({type(exc).__name__}: {first}): give samples of the "
                         + ("dtype it takes (token ids and indices: integers, "
                            "x.astype(np.int64))" if dtype else "shape it takes")) from exc


def _output_names(reference: Any, count: int) -> list[str]:
    if isinstance(reference, Path):
        from edgekd.inputs.io import onnx_io

        return [d.name for d in onnx_io(reference)[1]]
    return ["logits" if count == 1 else f"output{i}" for i in range(count)][:count]


# -- the steps -----------------------------------------------------------------------------


def quantize(model: Any, data: Any, *, out: str | os.PathLike[str] | None = None,
             runtime: str = "onnxruntime", config: QuantConfig | None = None,
             weights: str | os.PathLike[str] | None = None, target: str | None = None,
             task: str | None = None, limits: Limits | None = None, force: bool = False,
             strict: bool = True, threads: int = 1, check_data: Any = None
             ) -> CheckedArtifact:
    """Static INT8 of ``model`` (an ONNX file or ``onnx.ModelProto``, a ``torch.nn.Module``,
    or a ``file.py:factory`` string with its ``weights``), calibrated on ``data`` (up to
    ``config.calibration_samples`` samples; an edgekd Dataset's calibration split) with
    ONNX Runtime's tools and edgekd's settings (:mod:`edgekd.compress.quantize`), then run
    against the FP32 model on samples it was NOT calibrated on: ``check_data``, else the
    samples of ``data`` past the calibration ones, else a held-out fifth of ``data`` (with
    fewer than 2 * :data:`~.step_inputs.MIN_HELD_OUT` samples, the calibration samples, and
    ``checked_on`` says so). Constant or non-finite calibration inputs are refused.
    ``runtime``: ``onnxruntime`` (the QDQ ONNX),
    ``openvino`` (that model as IR), ``tflite`` (full-integer, from a PyTorch model).
    ``target``: its execution providers decide the activation type (TensorRT: signed,
    symmetric) and ``runtime`` must be one of its runtimes. ``out``: default
    ``<model>.int8<suffix>`` beside an ONNX file. ``strict``: an artifact that fails the
    check raises :class:`VerificationError` and nothing is written."""
    from edgekd.compress.quantize import quantize as quantize_onnx

    config = config or QuantConfig()
    get_backend(runtime)  # an unknown runtime: one line, before any work
    tensorrt = False
    if target is not None:
        from edgekd.settings.targets import load_target

        t = load_target(target)
        if runtime not in t.runtimes:
            raise UsageError(f"target {t.name!r} runs {', '.join(t.runtimes)}, not {runtime}: "
                             "choose one of those (--runtime) or another target")
        tensorrt = "TensorrtExecutionProvider" in t.providers
    if runtime == "tflite" and is_onnx(model):
        raise UsageError("TFLite INT8 is converted from the PyTorch model: give the module "
                         "(or file.py:factory), or quantize for onnxruntime / openvino")
    dest = destination(model, out, runtime)
    refuse_overwrite(companions(dest), force, "--out")
    if check_data is None and isinstance(data, Dataset):
        check_data = data  # its test split
    with staging(dest.parent, "--out") as tmp:
        module = None if is_onnx(model) else load_module(model, weights, "MODEL")
        if module is None:
            fp32 = onnx_file(model, tmp, "MODEL")
            declared = onnx_declared(fp32)
            given = data_feeds(data, declared, "--data", "calibration")[0]
            held = (None if check_data is None else
                    data_feeds(check_data, declared, "--check-data", "test")[0])
        else:
            given = module_feeds(module, data, None, "calibration", "--data")[0]
            held = (None if check_data is None else
                    module_feeds(module, check_data, None, "test", "--check-data")[0])
        feeds, check, checked_on = calibration_split(given, held,
                                                      config.calibration_samples)
        require_varied(feeds, "--data", "sets no INT8 ranges")
        if held is not None:
            require_varied(check, "--check-data", "checks nothing")
        if module is not None:
            fp32 = _to_onnx(module, feeds, tmp / "model_fp32.onnx")
        reference = _reference_outputs(fp32, check, threads)
        int8 = quantize_onnx(fp32, tmp / "model_int8.onnx", feeds, config,
                             tensorrt=tensorrt).path
        if runtime != "onnxruntime":
            source = ExportSource(model=module, example=feeds.head(1), calibration=feeds,
                                  onnx={"int8": int8}, per_channel=config.per_channel,
                                  stem="model")
            (tmp / runtime).mkdir()
            from edgekd.pipeline.deploy import converting

            with converting(runtime, runtime):
                int8 = get_backend(runtime).export(source, tmp / runtime)["int8"]
        checked = _check(int8, runtime, "int8", check, reference,
                         output_specs(reference, _output_names(fp32, len(reference)), task),
                         None, limits, threads, checked_on)
        if strict and checked.problem:
            raise VerificationError(checked.problem)
        return replace(checked, path=move(int8, dest))


def _to_onnx(module: Any, feeds: Feeds, path: Path) -> Path:
    from edgekd.backends.from_torch import to_onnx

    # Two samples: a batch of 1 would make the exporter specialise the batch axis.
    two = Feeds(feeds.specs, {k: np.concatenate([v, v])[:2] for k, v in feeds.arrays.items()})
    _reference_outputs(module, two, 1)  # a model that rejects the data: one line
    example = two.arrays["input"] if two.names == ["input"] else two
    from edgekd.pipeline.deploy import converting

    with converting("ONNX export (torch.onnx)", "onnx"):
        return to_onnx(module, example, path)


def export(model: Any, example: Any, *, out: str | os.PathLike[str],
           runtimes: Sequence[str] = ("onnxruntime",), weights: str | os.PathLike[str] | None
           = None, task: str | None = None, limits: Limits | None = None,
           force: bool = False, strict: bool = True, threads: int = 1
           ) -> tuple[CheckedArtifact, ...]:
    """FP32 artifacts of ``model`` (a ``torch.nn.Module``, or a ``file.py:factory`` string
    with ``weights``) for each of ``runtimes``, with the exporters a build uses
    (``torch.onnx``; OpenVINO from that ONNX; LiteRT-Torch), into the folder ``out`` as
    ``model_fp32<suffix>``. ``example``: input samples (an array or tensor, a dict of them
    by input name, or any data form); each artifact is run on them against the model. A
    factory without ``weights`` that builds a new random model on every call is exported
    with a warning (an untrained architecture's latency is worth measuring)."""
    return _export(model, example, "--example", out=out, runtimes=runtimes, weights=weights,
                   task=task, limits=limits, force=force, strict=strict, threads=threads)


def _export(model: Any, example: Any, option: str, *, out: str | os.PathLike[str],
            runtimes: Sequence[str], weights: str | os.PathLike[str] | None,
            task: str | None, limits: Limits | None, force: bool, strict: bool, threads: int
            ) -> tuple[CheckedArtifact, ...]:
    """:func:`export`, its errors naming the ``option`` the example came from."""
    if is_onnx(model):
        raise UsageError(f"{model} is already an ONNX export: export takes the PyTorch model "
                         "(file.py:function with --weights); run the ONNX file as it is, "
                         "`edgekd quantize` it (--runtime openvino for an INT8 OpenVINO IR), "
                         "or check it with `edgekd verify`")
    for runtime in runtimes:
        get_backend(runtime)
    dest = Path(out).expanduser().absolute()
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--out {dest} is a file: give a folder for the artifacts")
    names = {r: dest / f"model_fp32{SUFFIXES[r]}" for r in runtimes}
    refuse_overwrite([p for n in names.values() for p in companions(n)], force, "--out")
    with staging(dest.parent, "--out") as tmp:
        module = load_module(model, weights, "MODEL", untrained_ok=True)
        feeds = module_feeds(module, example, None, "test", option)[0]
        reference = _reference_outputs(module, feeds, threads)
        onnx = ({"fp32": _to_onnx(module, feeds, tmp / "model_fp32.onnx")}
                if {"onnxruntime", "openvino"} & set(runtimes) else {})
        outputs = output_specs(reference, _output_names(module, len(reference)), task)
        source = ExportSource(model=module, example=feeds.head(1), calibration=feeds,
                              onnx=onnx, stem="model")
        checked = []
        for runtime in runtimes:
            (tmp / runtime).mkdir()
            from edgekd.pipeline.deploy import converting

            with converting(runtime, runtime):
                path = get_backend(runtime).export(source, tmp / runtime)["fp32"]
            checked.append(_check(path, runtime, "fp32", feeds, reference, outputs, None,
                                  limits, threads, f"{len(feeds)} samples of {option}"))
        failed = next((c for c in checked if c.problem), None)
        if strict and failed is not None:
            raise VerificationError(failed.problem or "")
        dest.mkdir(exist_ok=True)
        return tuple(replace(c, path=move(c.path, names[c.runtime])) for c in checked)


def verify(artifact: str | os.PathLike[str], reference: Any, data: Any, *,
           runtime: str | None = None, weights: str | os.PathLike[str] | None = None,
           task: str | None = None, limits: Limits | None = None, precision: str = "",
           threads: int = 1) -> CheckedArtifact:
    """``artifact`` (.onnx, .xml, .tflite) run in its runtime on ``data`` (an edgekd
    Dataset's test split, files, arrays, ...) and compared with ``reference`` (an ONNX file,
    a ``torch.nn.Module``, or a ``file.py:factory`` string with ``weights``): the build's
    verification and gate. Labels in the data add the accuracy (the artifact's and the
    reference's). ``precision`` "": read from the artifact (quantized operators or 8-bit
    weights: int8). A factory without ``weights`` that builds a new random model on every
    call is refused. Never raises for a failing artifact: ``result.passed`` /
    ``result.problem`` say."""
    path = Path(artifact).expanduser().absolute()
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not an artifact: give one of its .onnx, .xml "
                         "or .tflite files")
    if not path.is_file():
        raise UsageError(f"{path}: no such file; give an .onnx, .xml or .tflite artifact")
    runtime = runtime or runtime_for_suffix(path)
    if path.suffix.lower() == ".onnx":  # a damaged file is the user's input: exit 2, not 1
        from edgekd.inputs.model_files import inspect_onnx

        inspect_onnx(path, "ARTIFACT")
    with tempfile.TemporaryDirectory(prefix="edgekd-verify-") as tmp:
        if is_onnx(reference):
            ref: Any = onnx_file(reference, Path(tmp), "--reference")
            feeds, y = data_feeds(data, onnx_declared(ref), "--data", "test")
        else:
            ref = load_module(reference, weights, "--reference")
            feeds, y = module_feeds(ref, data, None, "test", "--data")
        require_varied(feeds, "--data", "checks nothing")
        references = _reference_outputs(ref, feeds, threads)
        outputs = output_specs(references, _output_names(ref, len(references)), task)
        return _check(path, runtime, precision, feeds, references, outputs, y, limits,
                      threads, f"{len(feeds)} samples of --data")


def bench(artifact: str | os.PathLike[str], *, runtime: str | None = None,
          target: str | None = None, threads: int | None = None, warmup: int = 50,
          runs: int | None = 200, seconds: float | None = 2.0, batch: int = 1,
          input_shape: Sequence[int] | None = None, seed: int = 0) -> dict[str, Any]:
    """Latency and memory of ``artifact`` in a fresh process (``edgekd bench``):
    :func:`edgekd.measure.bench.run_bench` on :func:`~edgekd.measure.bench.bench_specs`."""
    from edgekd.measure.bench import bench_specs, run_bench

    try:
        spec = bench_specs([Path(artifact)], runtime, target, threads, False, warmup=warmup,
                           runs=runs, seconds=seconds, batch=batch, seed=seed,
                           input_shape=tuple(input_shape) if input_shape else None)[0]
    except ValueError as exc:
        raise UsageError(f"bad option: {exc}") from exc
    return run_bench(spec)
