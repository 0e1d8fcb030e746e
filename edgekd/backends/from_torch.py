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

    from edgekd.inputs.calls import by_name

    args, names, dynamic = _args(example)
    kwargs: dict[str, Any] | None = None
    if by_name(model, names):  # fed as the pipeline calls it: a mask never lands elsewhere
        kwargs, args = dict(zip(names, args, strict=True)), ()
        dynamic = dict(zip(names, dynamic, strict=True))  # type: ignore[assignment]
    outputs = output_names or [OUTPUT_NAME]
    with quiet("torch.onnx.export"), tracking(f"convert {path.name}", 1, "model"):
        program = torch.onnx.export(model, args, kwargs=kwargs, dynamo=True,
                                    opset_version=OPSET, input_names=names,
                                    output_names=outputs, dynamic_shapes=dynamic,
                                    verbose=False)
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
    from edgekd.inputs.calls import by_name

    first = Feeds.of(example_input).head(1)
    feed = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in first.batch().items()}
    # Several inputs go in by name, as every other step calls the model: a forward
    # (input_ids, token_type_ids=None, attention_mask=None) must get the mask as the mask.
    named = isinstance(example_input, Feeds) and by_name(model, list(feed))
    example, kwargs = ((), feed) if named else (tuple(feed.values()), None)
    with quiet("litert_torch.convert fp32"), tracking(f"convert {fp32.name}", 1, "model"):
        litert_torch.convert(model.eval(), example, kwargs).export(str(fp32))
    if int8 is None:  # FP32 only (the dense reference for pruning's payoff)
        return

    # LiteRT-Torch's documented static-INT8 recipe: PT2E prepare -> calibrate -> convert,
    # with residual adds annotated too and everything computed from integer inputs (token
    # ids, masks) left in float (see _with_adds, _keep_integers_in_float).
    config = get_symmetric_quantization_config(is_per_channel=per_channel,
                                               is_dynamic=False)
    quantizer = _with_adds(PT2EQuantizer, config)().set_global(config)
    with quiet("litert_torch.convert int8"), torch.no_grad():
        samples = Feeds.of(calibration)
        with tracking("calibrate tflite", len(samples), "sample") as t:
            graph = torch.export.export(model.eval(), example, kwargs).module()
            prepared = prepare_pt2e(graph, quantizer)
            for i in range(len(samples)):  # the exported graph has a static batch of 1
                batch = {k: torch.from_numpy(np.ascontiguousarray(v))
                         for k, v in samples.batch(i, i + 1).items()}
                _ = prepared(**batch) if named else prepared(*batch.values())
                t.advance()
        with tracking(f"convert {int8.name}", 1, "model"):
            converted = convert_pt2e(prepared, fold_quantize=False)
            litert_torch.convert(converted, example, kwargs, quant_config=QuantConfig(
                pt2e_quantizer=quantizer)).export(str(int8))


def _with_adds(base: Any, config: Any) -> Any:
    """LiteRT-Torch's PT2E quantizer, also annotating ``aten.add.Tensor``, and never
    annotating what integer inputs compute (:func:`_keep_integers_in_float`, first).

    Its ``add`` annotator finds adds through the nodes' ``source_fn_stack`` metadata, which
    ``torch.export`` (torch 2.13) no longer records for a plain ``x + y``, so every residual
    add of a MobileNetV2 stayed float: DEQUANTIZE -> float ADD -> QUANTIZE around each one in
    the .tflite (13 DEQUANTIZE + 9 QUANTIZE ops). This annotates the adds it missed exactly
    as its own annotator would (input and output activation specs of the same config).

    Not in a transformer (a graph with layer norm and softmax): there the adds carry the
    residual stream, whose outliers one INT8 scale cannot hold; left in float, as ONNX
    Runtime's transformer recipe leaves them. Measured on a tiny BERT (2 layers, width 32,
    100 test sentences): INT8 adds doubled the worst logit error (5.5e-4 without, 1.0e-3
    with) and cost 2 points of top-1 agreement (99 % without, 97 % with).
    """
    from litert_torch.quantize import pt2e_quantizer_utils as utils
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class AddAwarePT2EQuantizer(base):  # type: ignore[misc,valid-type]
        def annotate(self, model: Any) -> Any:
            import torch

            _keep_integers_in_float(model)
            model = super().annotate(model)
            if _is_transformer(model):
                return model
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


def _is_transformer(model: Any) -> bool:
    """Attention blocks: a layer norm and a softmax in the exported graph."""
    ops = {str(n.target).split(".")[1] for n in model.graph.nodes
           if n.op == "call_function" and str(n.target).startswith("aten.")}
    return bool(ops & {"layer_norm", "native_layer_norm"}) and bool(
        ops & {"softmax", "_softmax", "_safe_softmax"})


# Ops that turn integer ids into learned float vectors: their output is an activation, not
# something computed from the ids (which is what an observer must never see).
_LOOKUPS = ("aten.embedding.default", "aten.index_select.default")


def _keep_integers_in_float(model: Any) -> None:
    """Mark every node that computes on integer inputs (token ids, masks, positions) or on
    floats made from them as already annotated with no quantization spec, which is how the
    PT2E annotation API says "leave in float": each annotator skips annotated nodes and
    ``propagate_annotation`` does not spread into them.

    Without it the observers see int64 tensors (a position-id ``arange + offset`` matched as
    an add: ``"histogram_cpu" not implemented for 'Long'``) and the additive attention mask
    (``(1 - mask) * finfo.min``): an INT8 scale spanning -3.4e38 rounds every attention score
    to zero. So: a node is *integer-derived* when its output is not floating point, or when
    every tensor it reads is integer-derived or a constant (``ones``, ``arange`` made in the
    graph count as such); an embedding lookup is not (its output is a learned activation).
    Integer-derived nodes and the nodes that read one (the score + mask add) stay float; the
    lookup's weights and output are left to the quantizer. (A *float* mask input is not
    recognised: it is observed as data.)
    """
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    derived: set[Any] = set()
    for node in model.graph.nodes:
        val = node.meta.get("val")
        dtype = getattr(val, "dtype", None)
        if node.op == "placeholder":
            if dtype is not None and not dtype.is_floating_point:
                derived.add(node)
            continue
        if node.op != "call_function":
            continue
        reads = [a for a in node.all_input_nodes if a.op != "get_attr"]
        if str(node.target) in _LOOKUPS:
            tainted = False
        elif dtype is not None and not dtype.is_floating_point:
            tainted = True
        else:
            tainted = all(a in derived for a in reads)  # a constant made in the graph too
        if tainted:
            derived.add(node)
        if tainted or any(a in derived for a in reads):
            node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
