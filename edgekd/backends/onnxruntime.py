"""ONNX Runtime backend: the ONNX files (FP32, INT8 QDQ, FP16 for GPUs) and an ORT session
runner. Never imports torch: the PyTorch -> ONNX export is
:func:`edgekd.backends.from_torch.to_onnx`.

Who quantizes: ONNX Runtime's own ``quantize_static`` (QDQ), run by
:mod:`edgekd.compress.quantize` *after* conversion (as Olive does), so every ``quant.*``
setting applies. OpenVINO converts the same QDQ file.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.backends import ExportSource, Quantizer
from edgekd.device.runtimes import ORT_QUANT_OPS
from edgekd.errors import BuildError, RuntimeMissingError
from edgekd.inputs.io import session_feed

if TYPE_CHECKING:
    from edgekd.settings.targets import Target

FORMAT = "onnx"
SUFFIX = ".onnx"
# ORT quantizes the ONNX model before export (edgekd.compress.quantize): every quant.* applies.
QUANTIZER = Quantizer("ONNX Runtime quantize_static (QDQ)", "before export")
_INSTALL = "pip install onnxruntime (or onnxruntime-gpu for the GPU providers)"


def _ort():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeMissingError(f"onnxruntime is not installed: {_INSTALL}") from exc
    return onnxruntime


def runtime_version() -> str:
    return str(_ort().__version__)


def check(target: Target) -> None:
    ort = _ort()
    available = ort.get_available_providers()
    if not any(p in available for p in target.providers):
        raise RuntimeMissingError(
            f"target {target.name!r} needs ONNX Runtime's {' or '.join(target.providers)}, but "
            f"this onnxruntime {ort.__version__} offers only {', '.join(available)}: install "
            "onnxruntime-gpu on a machine with an NVIDIA GPU and CUDA/TensorRT, or pick a CPU "
            "target (edgekd targets)")


def to_fp16(fp32: Path, out: Path) -> Path:
    """FP16 weights and activations for GPU execution providers, with FP32 inputs and
    outputs (ONNX Runtime's own converter; ops without an FP16 kernel stay FP32)."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True)
    onnx.save_model(model, str(out))
    return out


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def provider_options(providers: tuple[str, ...], precision: str
                     ) -> tuple[str | tuple[str, dict[str, str]], ...]:
    """Execution providers with the options that make each precision run as named.

    TensorRT builds an FP32 engine unless told otherwise: FP16 needs ``trt_fp16_enable``;
    an INT8 QDQ model needs ``trt_int8_enable`` (TensorRT's explicit quantization follows the
    Q/DQ nodes, no calibration table) plus FP16 for the layers left in float.
    """
    out: list[str | tuple[str, dict[str, str]]] = []
    for p in providers:
        if p == "TensorrtExecutionProvider":
            out.append((p, {"trt_fp16_enable": str(precision in ("fp16", "int8")),
                            "trt_int8_enable": str(precision == "int8")}))
        else:
            out.append(p)
    return tuple(out)


def export(source: ExportSource, out_dir: Path) -> dict[str, Path]:
    """The ONNX files are made once by the pipeline (OpenVINO converts them too); copy them."""
    paths = {}
    for precision, src in source.onnx.items():
        dst = out_dir / f"{source.stem}_{precision}{SUFFIX}"
        shutil.copyfile(src, dst)
        paths[precision] = dst
    return paths


def inference_precision(path: Path) -> str:
    """The precision ONNX Runtime runs ``path`` at by default, read from the graph (ORT has
    no precision setting for the CPU provider: the graph decides). ``"int8 (QDQ)"``: Q/DQ
    pairs that ORT fuses into integer kernels; ``"int8 (QOperator)"``: integer operators
    (QLinearConv, MatMulInteger...); ``"fp16"``: FP16 weights; else ``"fp32"``."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and friends for a damaged file
        raise BuildError(f"{path}: not a readable ONNX model ({exc}); re-export it") from exc
    graphs = [model.graph, *(f for f in model.functions)]
    ops = {n.op_type for g in graphs for n in g.node}
    if ops & (ORT_QUANT_OPS - {"QuantizeLinear", "DequantizeLinear"}):
        return "int8 (QOperator)"
    if "DequantizeLinear" in ops:
        return "int8 (QDQ)"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


class OrtRunner:
    runtime = "onnxruntime"

    def __init__(self, path: Path, threads: int, providers: tuple[Any, ...]) -> None:
        ort = _ort()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts,
                                                providers=list(providers))
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
            raise BuildError(f"{path}: ONNX Runtime cannot load it ({exc}); re-export the "
                             "model or check the file is complete") from exc
        names = [p if isinstance(p, str) else p[0] for p in providers]
        wanted = [p for p in names if p != "CPUExecutionProvider"]
        if wanted and not any(p in self.session.get_providers() for p in wanted):
            raise RuntimeMissingError(f"{path}: none of {', '.join(wanted)} could be "
                                      f"initialised (got {', '.join(self.session.get_providers())})"
                                      ": check the CUDA/TensorRT installation")
        self.threads = threads
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_name = self.input_names[0]
        # The batch of the first data input decides (a scalar input has no batch axis).
        shape: list[Any] = next((list(i.shape) for i in inputs if i.shape), [])
        batch = shape[0] if shape else None
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None

    def run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x.astype(np.float32)})[0])

    def run_all(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o) for o in self.session.run(None, session_feed(self.session, feed))]


def load(path: Path, threads: int, providers: tuple[Any, ...] = ("CPUExecutionProvider",)
         ) -> OrtRunner:
    return OrtRunner(path, threads, providers)
