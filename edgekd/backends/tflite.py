"""TFLite (LiteRT) backend: conversion with LiteRT-Torch, full-integer INT8 through its PT2E
quantizer, and an interpreter runner that accepts ``ai-edge-litert`` or ``tflite-runtime``.

The INT8 model is full-integer: weights per-channel INT8, activations INT8, and the model's
input and output tensors INT8 too (XNNPACK runs it end to end in integer). The runner
quantizes inputs and dequantizes outputs with the tensors' own scale and zero point, so
callers always pass and get float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.backends import ExportSource
from edgekd.errors import BuildError, RuntimeMissingError

if TYPE_CHECKING:
    from edgekd.targets import Target

FORMAT = "tflite"
SUFFIX = ".tflite"
_INSTALL = "pip install ai-edge-litert (or tflite-runtime on a device with numpy<2)"


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as exc:
            raise RuntimeMissingError(f"no TFLite runtime is installed: {_INSTALL}") from exc
    return Interpreter


def runtime_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("ai-edge-litert", "tflite-runtime"):
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def check(target: Target) -> None:
    _interpreter_class()
    try:
        import litert_torch  # noqa: F401
    except ImportError as exc:
        raise RuntimeMissingError("litert-torch is not installed, so TFLite models cannot be "
                                  "converted: pip install litert-torch") from exc


def export(source: ExportSource, out_dir: Path) -> dict[str, Path]:
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgekd.quiet import quiet

    example = (torch.from_numpy(source.example),)
    fp32 = out_dir / f"{source.stem}_fp32{SUFFIX}"
    int8 = out_dir / f"{source.stem}_int8{SUFFIX}"
    with quiet("litert_torch.convert fp32"):
        litert_torch.convert(source.model.eval(), example).export(str(fp32))
    if "int8" not in source.onnx:  # FP32 only (the dense reference for pruning's payoff)
        return {"fp32": fp32}

    # LiteRT-Torch's documented static-INT8 recipe: PT2E prepare -> calibrate -> convert,
    # with residual adds annotated too (see _with_adds).
    config = get_symmetric_quantization_config(is_per_channel=source.per_channel,
                                               is_dynamic=False)
    quantizer = _with_adds(PT2EQuantizer, config)().set_global(config)
    with quiet("litert_torch.convert int8"), torch.no_grad():
        graph = torch.export.export(source.model.eval(), example).module()
        prepared = prepare_pt2e(graph, quantizer)
        for sample in source.calibration:  # the exported graph has a static batch of 1
            prepared(torch.from_numpy(sample[None]))
        converted = convert_pt2e(prepared, fold_quantize=False)
        litert_torch.convert(converted, example,
                             quant_config=QuantConfig(pt2e_quantizer=quantizer)).export(str(int8))
    return {"fp32": fp32, "int8": int8}


def _with_adds(base: Any, config: Any) -> Any:
    """LiteRT-Torch's PT2E quantizer, also annotating ``aten.add.Tensor``.

    Its ``add`` annotator finds adds through the nodes' ``source_fn_stack`` metadata, which
    ``torch.export`` (torch 2.13) no longer records for a plain ``x + y``, so every residual
    add of a MobileNetV2 stayed float: DEQUANTIZE -> float ADD -> QUANTIZE around each one in
    the .tflite (13 DEQUANTIZE + 9 QUANTIZE ops). This annotates the adds it missed exactly
    as its own annotator would (input and output activation specs of the same config).
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class AddAwarePT2EQuantizer(base):  # type: ignore[misc,valid-type]
        def annotate(self, model: Any) -> Any:
            import torch

            model = super().annotate(model)
            for node in model.graph.nodes:
                if (node.op != "call_function" or node.target != torch.ops.aten.add.Tensor
                        or "quantization_annotation" in node.meta):
                    continue
                inputs = [a for a in node.args[:2] if isinstance(a, torch.fx.Node)]
                if len(inputs) != 2:  # adding a constant: leave it to the converter
                    continue
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map={a: utils.get_input_act_qspec(config) for a in inputs},
                    output_qspec=utils.get_output_act_qspec(config), _annotated=True)
            return model

    return AddAwarePT2EQuantizer


class TfliteRunner:
    runtime = "tflite"

    def __init__(self, path: Path, threads: int) -> None:
        interpreter_class = _interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=str(path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BuildError(f"{path}: the TFLite interpreter cannot load it ({exc}); re-export "
                             "the model or check the file is complete") from exc
        self.threads = threads
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = int(self.input["shape"][0])

    def _invoke(self, x: np.ndarray) -> np.ndarray:
        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info.min, info.max)
        self.interpreter.set_tensor(self.input["index"], x.astype(dtype))
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])
        if self.output["dtype"] != np.float32:
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return np.asarray(y, dtype=np.float32)

    def run(self, x: np.ndarray) -> np.ndarray:
        # Converted models have a static batch; feed larger batches in model-sized slices.
        if len(x) == self.batch:
            return self._invoke(x)
        if len(x) % self.batch:
            raise BuildError(f"batch of {len(x)} does not divide the model's batch {self.batch}")
        return np.concatenate([self._invoke(x[i:i + self.batch])
                               for i in range(0, len(x), self.batch)])

    def ops(self) -> list[str]:
        """Operator names as the interpreter will execute them (``DELEGATE`` = XNNPACK)."""
        return [d["op_name"] for d in self.interpreter._get_ops_details()]


def load(path: Path, threads: int, providers: tuple[str, ...] = ()) -> TfliteRunner:
    return TfliteRunner(path, threads)
