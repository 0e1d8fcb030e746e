"""Loading each runtime for :mod:`edgekd.device.worker`: the model with its inputs bound
(:mod:`.feeds`), the timed call, and "what ran where".

Needs only the standard library, NumPy and the runtime it loads. ``edgekd bench --remote``
copies this file beside ``worker.py`` and ``feeds.py`` onto the device, so it must not import
torch or the rest of edgekd; it imports ``feeds`` as ``worker.py`` imports it, relatively
inside edgekd and as a top-level module beside it on the device.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

if __package__:  # part of edgekd: edgekd.device.runtimes
    from .feeds import ModelInput, WorkerError, fed, feeds
else:  # copied onto a device beside worker.py (edgekd bench --remote)
    from feeds import ModelInput, WorkerError, fed, feeds  # type: ignore[no-redef]

RUNTIME_PACKAGES = {
    "onnxruntime": "onnxruntime (or onnxruntime-gpu)",
    "openvino": "openvino",
    "tflite": "ai-edge-litert (or tflite-runtime)",
}
# Compute ops that should run as integer kernels in a quantized model.
ORT_FLOAT_COMPUTE = {"Conv", "ConvTranspose", "MatMul", "Gemm", "FusedConv", "FusedGemm",
                     "FusedMatMul", "NhwcFusedConv", "Attention", "MultiHeadAttention",
                     "LSTM", "GRU", "RNN", "Einsum"}
ORT_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                 "QGemm", "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear",
                 "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
                 "QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
                 "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat",
                 "QLinearSoftmax", "NhwcQLinearConv", "QLinearWhere"}
OV_COMPUTE = {"Convolution", "GroupConvolution", "Deconvolution", "GroupDeconvolution",
              "FullyConnected", "MatMul"}
OV_INT8 = {"i8", "u8"}
ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16,
              "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32,
              "tensor(int16)": np.int16, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_}


# Each loader returns (infer, placement, version, fed): ``infer()`` runs one inference on
# inputs already bound; ``placement()`` says what ran where (called once, after timing);
# ``fed`` names each input with the shape and dtype it was given.

Loaded = tuple[Callable[[], None], Callable[[], dict[str, Any]], str, list[dict[str, Any]]]


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and d >= 0 else None


def import_runtime(runtime: str) -> Any:
    try:
        if runtime == "onnxruntime":
            import onnxruntime
            return onnxruntime
        if runtime == "openvino":
            import openvino
            return openvino
        if runtime == "tflite":
            try:
                from ai_edge_litert import interpreter
            except ImportError:
                from tflite_runtime import interpreter  # the runtime's older name
            return interpreter
    except ImportError as exc:
        raise WorkerError(f"{runtime} is not installed for {sys.executable}: "
                          f"pip install {RUNTIME_PACKAGES[runtime].split(' ')[0]}") from exc
    raise WorkerError(f"unknown runtime {runtime!r}: use one of {', '.join(RUNTIME_PACKAGES)}")


def _ort_providers(ort: Any, wanted: list[Any]) -> list[Any]:
    available = set(ort.get_available_providers())
    names = [p if isinstance(p, str) else p[0] for p in wanted]
    missing = [n for n in names if n not in available and n != "CPUExecutionProvider"]
    if missing and all(n != "CPUExecutionProvider" for n in names):
        raise WorkerError(f"ONNX Runtime here has no {', '.join(missing)} (it has "
                          f"{', '.join(sorted(available))}): install onnxruntime-gpu "
                          "with CUDA/TensorRT, or pick a CPU target")
    return [p if isinstance(p, str) else (p[0], p[1]) for p in wanted
            if (p if isinstance(p, str) else p[0]) in available]


def load_onnxruntime(ort: Any, spec: dict[str, Any], rng: np.random.Generator) -> Loaded:
    providers = _ort_providers(ort, spec.get("providers") or ["CPUExecutionProvider"])

    def session(profile_dir: str | None = None) -> Any:
        so = ort.SessionOptions()
        so.intra_op_num_threads = spec["threads"]
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        if profile_dir:
            so.enable_profiling = True
            so.profile_file_prefix = os.path.join(profile_dir, "ort")
        return ort.InferenceSession(spec["artifact"], so, providers=providers)

    sess = session()
    model = [ModelInput(inp.name, [_dim(d) for d in inp.shape],
                        ORT_DTYPES.get(inp.type, np.float32)) for inp in sess.get_inputs()]
    xs = feeds(model, spec, rng, Path(spec["artifact"]).name)
    feed = {m.name: x for m, x in zip(model, xs, strict=True)}
    first = providers[0] if isinstance(providers[0], str) else providers[0][0]
    device = "cuda" if first in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
    binding = sess.io_binding()
    for name, x in feed.items():
        binding.bind_cpu_input(name, x)
    for out in sess.get_outputs():
        binding.bind_output(out.name, device)

    def infer() -> None:
        sess.run_with_iobinding(binding)

    def placement() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as tmp:
            prof = session(tmp)
            prof.run(None, feed)
            events = json.loads(Path(prof.end_profiling()).read_text(encoding="utf-8"))
        nodes = [(e["name"].removesuffix("_kernel_time"), e["args"].get("op_name", "?"),
                  e["args"].get("provider", "?")) for e in events
                 if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
        quantized = any(op in ORT_QUANT_OPS for _, op, _ in nodes)
        off = []
        for name, op, prov in nodes:
            if first != "CPUExecutionProvider" and prov != first and op not in (
                    "MemcpyToHost", "MemcpyFromHost"):
                off.append({"node": name, "op": op, "ran": f"{prov} (not {first})"})
            elif quantized and op in ORT_FLOAT_COMPUTE:
                off.append({"node": name, "op": op, "ran": f"{prov}, float"})
        return {"quantized": quantized, "nodes": len(nodes), "not_as_intended": off,
                "how": "ONNX Runtime profiling: the kernels that ran, after graph "
                       "optimisation, with their execution provider"}

    return infer, placement, ort.__version__, fed(model, xs)


def load_openvino(ov: Any, spec: dict[str, Any], rng: np.random.Generator) -> Loaded:
    core = ov.Core()
    read = core.read_model(spec["artifact"])
    model = [ModelInput(inp.get_any_name(),
                        [d.get_length() if d.is_static else None for d in inp.get_partial_shape()],
                        inp.get_element_type().to_dtype(), set(inp.get_names()))
             for inp in read.inputs]
    xs = feeds(model, spec, rng, Path(spec["artifact"]).name)
    read.reshape({m.name: ov.PartialShape(list(x.shape)) for m, x in zip(model, xs, strict=True)})
    fake_quantized = any(op.get_type_name() == "FakeQuantize" for op in read.get_ops())
    compiled = core.compile_model(read, "CPU", openvino_config(spec["threads"]))
    request = compiled.create_infer_request()
    by_name = {m.name: x for m, x in zip(model, xs, strict=True)}
    for i, inp in enumerate(compiled.inputs):
        request.set_input_tensor(i, ov.Tensor(by_name[inp.get_any_name()]))

    def infer() -> None:
        request.infer()

    def placement() -> dict[str, Any]:
        layers = []
        for op in compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            layers.append((op.get_friendly_name(), str(info["layerType"].astype(str)),
                           str(info["runtimePrecision"].astype(str))))
        # Quantized by intent (FakeQuantize in the model), whatever the plugin made of it.
        quantized = fake_quantized or any(p in OV_INT8 for _, t, p in layers if t in OV_COMPUTE)
        off = [{"node": n, "op": t, "ran": p} for n, t, p in layers
               if quantized and t in OV_COMPUTE and p not in OV_INT8]
        return {"quantized": quantized, "nodes": len(layers), "not_as_intended": off,
                "how": "OpenVINO compiled model's runtime info: runtime precision of each "
                       "executed layer"}

    return infer, placement, ov.get_version(), fed(model, xs)


def openvino_config(threads: int) -> dict[str, Any]:
    """OpenVINO CPU settings shared by verification and benchmarks.

    ``INFERENCE_PRECISION_HINT`` is pinned to f32: on CPUs with AVX512-BF16/AMX the plugin
    would otherwise run an FP32 model in bf16, which is not what the artifact says.
    """
    return {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads)}


def load_tflite(interp: Any, spec: dict[str, Any], rng: np.random.Generator) -> Loaded:
    it = interp.Interpreter(model_path=spec["artifact"], num_threads=spec["threads"])
    details = _tflite_inputs(it)
    model = [ModelInput(name, [_dim(int(v)) for v in d["shape_signature"]], d["dtype"],
                        {str(d["name"])},
                        d["quantization"] if np.issubdtype(d["dtype"], np.integer) else None)
             for name, d in details]
    xs = feeds(model, spec, rng, Path(spec["artifact"]).name, positional=True)
    for (_, d), x in zip(details, xs, strict=True):
        if list(d["shape"]) != list(x.shape):
            it.resize_tensor_input(d["index"], list(x.shape))
    it.allocate_tensors()
    for (_, d), x in zip(details, xs, strict=True):
        it.set_tensor(d["index"], x)

    def placement() -> dict[str, Any]:
        return tflite_placement(it)

    version = getattr(interp, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as pkg_version
            version = pkg_version("ai-edge-litert") if "ai_edge" in interp.__name__ \
                else pkg_version("tflite-runtime")
        except Exception:  # noqa: BLE001 - a version string is informative only
            version = "unknown"
    return it.invoke, placement, version, fed(model, xs)


def _tflite_inputs(it: Any) -> list[tuple[str, dict[str, Any]]]:
    """(name, details) of each input in forward's order: LiteRT-Torch names them args_0,
    args_1, ... in its signature (as :mod:`edgekd.backends.tflite` reads them); tensor
    indices need not follow that order. A model without a signature: the tensors' order."""
    signature = next(iter(it.get_signature_list().values()), None)
    if not signature:
        return [(str(d["name"]), d) for d in it.get_input_details()]
    ins = it.get_signature_runner().get_input_details()
    return [(n, ins[n]) for n in sorted(signature["inputs"], key=_arg_order)]


def _arg_order(name: str) -> tuple[int, str]:
    """``args_10`` after ``args_9``."""
    tail = name.rsplit("_", 1)[-1]
    return (int(tail), name) if tail.isdigit() else (1 << 30, name)


def tflite_placement(it: Any) -> dict[str, Any]:
    """Which ops the XNNPACK delegate took, from the interpreter's node table.

    After ``allocate_tensors`` the default XNNPACK delegate adds one ``DELEGATE`` node per
    partition it took; the original nodes stay in the table. A node belongs to a partition
    when it is reached walking back from the partition's outputs without crossing its
    inputs. Original nodes in no partition run on the builtin kernels.
    """
    w = it._interpreter
    nodes = [(i, w.NodeName(i), list(w.NodeInputs(i)), list(w.NodeOutputs(i)))
             for i in range(w.NumNodes())]
    delegates = [n for n in nodes if n[1] == "DELEGATE" or "Delegate" in n[1]]
    original = [n for n in nodes if n not in delegates]
    producer = {t: n for n in original for t in n[3]}
    taken: set[int] = set()
    for _, _, d_in, d_out in delegates:
        stop = set(d_in)
        todo = [t for t in d_out]
        while todo:
            node = producer.get(todo.pop())
            if node is None or node[0] in taken:
                continue
            taken.add(node[0])
            todo += [t for t in node[2] if t >= 0 and t not in stop]
    details = {d["index"]: d for d in it.get_tensor_details()}
    quantized = any(np.dtype(d["dtype"]) in (np.dtype(np.int8), np.dtype(np.uint8))
                    for d in details.values())
    off = [{"node": details[n[3][0]]["name"] if n[3] and n[3][0] in details else str(n[0]),
            "op": n[1], "ran": "builtin kernel (not XNNPACK)"}
           for n in original if n[0] not in taken]
    return {"quantized": quantized, "nodes": len(original), "not_as_intended": off,
            "delegated": len(taken), "partitions": len(delegates),
            "how": "LiteRT node table after the XNNPACK delegate was applied"}


LOADERS = {"onnxruntime": load_onnxruntime, "openvino": load_openvino, "tflite": load_tflite}
