"""OpenVINO backend: IR (.xml + .bin) converted from the ONNX files with OpenVINO's own
converter, and a compiled-model runner on the CPU plugin.

The INT8 IR comes from the QDQ ONNX model through ``ov.convert_model``, the converter's whole
pipeline (what ``ovc`` runs): each QuantizeLinear/DequantizeLinear pair becomes a
FakeQuantize, and its offline ``CompressQuantizeWeights`` pass folds the FakeQuantize on each
constant weight into an INT8 constant with a Convert/Subtract/Multiply (so the ``.bin``
holds INT8 weights, ~4x smaller than FP32, even when a QDQ file keeps its weights in float).
The CPU plugin executes the quantized convolutions and matmuls in INT8 (see the compiled
model's runtime precisions, :meth:`OpenVinoRunner.runtime_precisions`).

Precision as deployed: edgekd verifies and benchmarks with ``INFERENCE_PRECISION_HINT=f32``
(:func:`edgekd.device.runtimes.openvino_config`). Each IR carries that hint in its runtime
info (``runtime_options``), as OpenVINO's own tools record runtime hints, but the CPU plugin
of OpenVINO 2026.4 applies only the KV-cache and dynamic-quantization entries of
``runtime_options`` (``Config::applyRtInfo``), so on a CPU with AVX512-BF16/AMX a plain
``compile_model`` still runs float layers in bf16: pass the hint when compiling (the deploy
package's run script does). :func:`inference_precision` says what a plain ``compile_model``
runs on *this* machine, and the report records it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekd.backends import ExportSource, Quantizer
from edgekd.device.runtimes import OV_COMPUTE, OV_INT8, openvino_config
from edgekd.errors import BuildError, RuntimeMissingError

if TYPE_CHECKING:
    from edgekd.settings.targets import Target

FORMAT = "openvino"
SUFFIX = ".xml"
# OpenVINO converts the QDQ model ORT made: every quant.* applies, as for ONNX Runtime.
QUANTIZER = Quantizer("ONNX Runtime quantize_static (QDQ), converted to IR by OpenVINO",
                      "before export")


def _decline_telemetry() -> None:
    """Record "no" to OpenVINO's usage telemetry unless the user already answered.

    ``import openvino`` imports its converter, which sends a usage event over the network
    whenever no consent file exists. edgekd runs in CI jobs and on air-gapped devices and must
    not phone home on a user's behalf, so where the user never chose, it writes the same "0"
    that OpenVINO's own opt-in dialog writes when it is declined. An existing answer (opt-in
    with ``opt_in_out --opt_in``) is left alone.
    """
    consent = Path.home() / "intel" / "openvino_telemetry"
    if consent.exists():
        return
    try:
        consent.parent.mkdir(parents=True, exist_ok=True)
        consent.write_text("0", encoding="ascii")
    except OSError:
        pass  # read-only home: OpenVINO then finds no place to store a client id either


def _ov() -> Any:
    _decline_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise RuntimeMissingError("openvino is not installed: pip install openvino") from exc
    return openvino


def runtime_version() -> str:
    return str(_ov().__version__)


def check(target: Target) -> None:
    _ov()


# Where an IR records the settings it was measured with (OpenVINO's runtime_options).
RUNTIME_OPTIONS = "runtime_options"
# OpenVINO element types as edgekd names precisions.
_PRECISION_NAMES = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def export(source: ExportSource, out_dir: Path) -> dict[str, Path]:
    ov = _ov()
    paths = {}
    for precision, onnx_path in source.onnx.items():
        xml = out_dir / f"{source.stem}_{precision}{SUFFIX}"
        # The converter's pipeline, not Core.read_model: only convert_model runs the offline
        # passes that store quantized weights as INT8 constants. (A model OpenVINO cannot
        # convert raises here; the pipeline's ``converting`` turns that into one line.)
        model = ov.convert_model(str(onnx_path))
        model.set_rt_info("f32", [RUNTIME_OPTIONS, "INFERENCE_PRECISION_HINT"])
        # FP32 stays FP32: save_model would otherwise compress float weights to FP16.
        ov.save_model(model, str(xml), compress_to_fp16=False)
        paths[precision] = xml
    return paths


def inference_precision(path: Path) -> str:
    """The precision OpenVINO's CPU plugin runs ``path`` at with its *default* settings
    (``core.compile_model(xml, "CPU")``, no config), as a deployer's plain call would.

    From the compiled model: the runtime precision of its convolutions and matmuls, else
    its ``INFERENCE_PRECISION_HINT`` (bf16 on CPUs with AVX512-BF16/AMX, whatever the IR
    says). ``"int8 + fp32"``: the quantized layers run INT8, the rest at fp32.
    """
    ov = _ov()
    try:
        compiled = ov.Core().compile_model(str(path), "CPU")
    except Exception as exc:  # OpenVINO raises RuntimeError for any read/compile problem
        raise BuildError(f"{path}: OpenVINO cannot load it ({exc}); keep the .xml and its "
                         ".bin together and re-export if either is damaged") from exc
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    ran = [str(op.get_rt_info()["runtimePrecision"].astype(str))
           for op in compiled.get_runtime_model().get_ops()
           if op.get_rt_info()["layerType"].astype(str) in OV_COMPUTE]
    floats = [p for p in ran if p not in OV_INT8]
    name = max(set(floats), key=floats.count) if floats else hint
    name = _PRECISION_NAMES.get(name, name)
    return f"int8 + {name}" if any(p in OV_INT8 for p in ran) else name


class OpenVinoRunner:
    runtime = "openvino"

    def __init__(self, path: Path, threads: int) -> None:
        ov = _ov()
        core = ov.Core()
        # The same settings as the benchmarks (f32 precision hint: see openvino_config).
        config = openvino_config(threads)
        try:
            self.compiled = core.compile_model(str(path), "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError for any read/compile problem
            raise BuildError(f"{path}: OpenVINO cannot load it ({exc}); keep the .xml and its "
                             ".bin together and re-export if either is damaged") from exc
        self.request = self.compiled.create_infer_request()
        self.threads = threads
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() if p.get_names() else f"output{i}"
                             for i, p in enumerate(self.compiled.outputs)]
        self._dtypes = {p.get_any_name(): p.get_element_type().to_dtype()
                        for p in self.compiled.inputs}
        # The batch of the first input with an axis (a scalar input has none).
        shapes = [p.get_partial_shape() for p in self.compiled.inputs]
        shape = next((s for s in shapes if s.rank.is_static and s.rank.get_length() > 0),
                     shapes[0])
        static = shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_static
        self.fixed_batch = shape[0].get_length() if static else None

    def run(self, x: np.ndarray) -> np.ndarray:
        result = self.request.infer({0: x.astype(np.float32)})
        return np.asarray(result[self.compiled.output(0)])

    def run_all(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        if len(feed) == 1 and len(self.input_names) == 1:  # one input: whatever its name
            feed = {self.input_names[0]: next(iter(feed.values()))}
        given = {n: np.asarray(feed[n]).astype(self._dtypes[n], copy=False)
                 for n in self.input_names}
        result = self.request.infer(given)
        return [np.array(result[p]) for p in self.compiled.outputs]

    def runtime_precisions(self) -> dict[str, str]:
        """Executed layer name -> precision, from the compiled model's runtime info."""
        model = self.compiled.get_runtime_model()
        return {op.get_friendly_name(): str(op.get_rt_info()["runtimePrecision"].astype(str))
                for op in model.get_ordered_ops()}


def load(path: Path, threads: int, providers: tuple[str, ...] = ()) -> OpenVinoRunner:
    return OpenVinoRunner(path, threads)
