"""The export side of the backends: PyTorch -> ONNX (``torch.onnx``, dynamo) and PyTorch ->
TFLite (LiteRT-Torch, with full-integer INT8 through its PT2E quantizer).

The only backend module that imports torch; the runtime modules (:mod:`.onnxruntime`,
:mod:`.openvino`, :mod:`.tflite`) load and run artifacts without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.common.progress import tracking
from edgekd.common.quiet import quiet
from edgekd.errors import BuildError
from edgekd.inputs.dataset import Feeds

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def _args(example: np.ndarray | Feeds) -> tuple[tuple[Any, ...], list[str], tuple[Any, ...]]:
    """(example tensors, input names, dynamic shapes): a dynamic batch on every data input
    and on each fixed or state input that has a batch axis."""
    batch = torch.export.Dim("batch", min=1, max=4096)
    if isinstance(example, np.ndarray):
        # torch.export traces the strides of its example: a transposed (HWC -> CHW) view
        # makes it fail with "Invalid ranges" on the first conv. Arrays are made C-ordered.
        return (torch.from_numpy(np.ascontiguousarray(example)),), [INPUT_NAME], ({0: batch},)
    feed = example.batch(0, 2 if len(example) > 1 else 1)  # batch 2: 1 would specialise
    args = tuple(torch.from_numpy(np.ascontiguousarray(feed[s.name])) for s in example.specs)
    dynamic = tuple({0: batch} if s.role == "data" else
                    {s.batch_axis: batch} if s.batch_axis is not None else None
                    for s in example.specs)
    return args, example.names, dynamic


def to_onnx(model: Any, example: np.ndarray | Feeds, path: Path,
            output_names: list[str] | None = None) -> Path:
    """Export a PyTorch model to a single self-contained ONNX file with a dynamic batch axis.
    ``example``: one array (the input is named ``input``, the output ``logits``) or every
    input of a model with several, named as the model names them."""
    import onnx

    args, names, dynamic = _args(example)
    outputs = output_names or [OUTPUT_NAME]
    with quiet("torch.onnx.export"), tracking(f"convert {path.name}", 1, "model"):
        program = torch.onnx.export(model, args, dynamo=True, opset_version=OPSET,
                                    input_names=names, output_names=outputs,
                                    dynamic_shapes=dynamic, verbose=False)
    if program is None:
        raise BuildError("torch.onnx.export returned no program")
    proto = program.model_proto
    # The exporter tags every node with stack traces and module paths; useful when debugging
    # an export, dead weight in a deployed artifact (a third of a small model's file).
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.checker.check_model(proto)
    onnx.save_model(proto, str(path))
    return path



def to_tflite(model: nn.Module, example_input: np.ndarray | Feeds, fp32: Path,
              int8: Path | None, *, calibration: np.ndarray | Feeds,
              per_channel: bool = True) -> None:
    """``model`` as an FP32 ``.tflite`` at ``fp32`` and, with ``int8``, a full-integer INT8
    one calibrated on ``calibration`` (LiteRT-Torch's documented PT2E recipe)."""
    import litert_torch
    import torch
    from litert_torch.quantize.pt2e_quantizer import (
        PT2EQuantizer,
        get_symmetric_quantization_config,
    )
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgekd.common.quiet import quiet

    first = Feeds.of(example_input).head(1)
    example = tuple(torch.from_numpy(np.ascontiguousarray(v)) for v in first.batch().values())
    with quiet("litert_torch.convert fp32"), tracking(f"convert {fp32.name}", 1, "model"):
        litert_torch.convert(model.eval(), example).export(str(fp32))
    if int8 is None:  # FP32 only (the dense reference for pruning's payoff)
        return

    # LiteRT-Torch's documented static-INT8 recipe: PT2E prepare -> calibrate -> convert,
    # with residual adds annotated too (see _with_adds).
    config = get_symmetric_quantization_config(is_per_channel=per_channel,
                                               is_dynamic=False)
    quantizer = _with_adds(PT2EQuantizer, config)().set_global(config)
    with quiet("litert_torch.convert int8"), torch.no_grad():
        samples = Feeds.of(calibration)
        with tracking("calibrate tflite", len(samples), "sample") as t:
            graph = torch.export.export(model.eval(), example).module()
            prepared = prepare_pt2e(graph, quantizer)
            for i in range(len(samples)):  # the exported graph has a static batch of 1
                prepared(*(torch.from_numpy(np.ascontiguousarray(v))
                           for v in samples.batch(i, i + 1).values()))
                t.advance()
        with tracking(f"convert {int8.name}", 1, "model"):
            converted = convert_pt2e(prepared, fold_quantize=False)
            litert_torch.convert(converted, example, quant_config=QuantConfig(
                pt2e_quantizer=quantizer)).export(str(int8))


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


