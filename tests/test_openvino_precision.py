"""OpenVINO IR as deployed: INT8 weights stored as INT8 (the INT8 IR is smaller than the FP32
one, outputs unchanged), and the precision a plain ``compile_model`` runs each file at,
recorded by every backend's ``inference_precision``. Real OpenVINO and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.backends import ExportSource, get_backend

pytest.importorskip("openvino")
torch = pytest.importorskip("torch")
nn = torch.nn


class Residual2d(nn.Module):
    """A 3-channel CNN with skip connections (not an ``nn.Sequential``)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.a = nn.Conv2d(32, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.head = nn.Linear(32 * 8 * 8, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.a(x))
        x = torch.nn.functional.max_pool2d(torch.relu(x + self.b(x)), 2)
        return self.head(x.flatten(1))


class Cnn1d(nn.Module):
    """A 1-D CNN over 8 sensor channels, as the user's whose INT8 IR was 2x larger."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv1d(8, 48, 5, padding=2)
        self.b = nn.Conv1d(48, 48, 5, padding=2)
        self.head = nn.Linear(48 * 32, 6)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = torch.relu(self.b(torch.relu(self.a(x))))
        return self.head(torch.nn.functional.max_pool1d(x, 2).flatten(1))


MODELS = {"residual2d": (Residual2d, (3, 16, 16)), "cnn1d": (Cnn1d, (8, 64))}


def _float_weight_qdq(qdq: Path, out: Path) -> Path:
    """The same QDQ model with each weight stored in float behind a QuantizeLinear, as other
    quantizers write it: OpenVINO reads each as a FakeQuantize on float weights."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qdq))
    inits = {i.name: i for i in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        w = inits.get(node.input[0])
        if node.op_type == "DequantizeLinear" and w is not None and w.data_type in (
                onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            q = numpy_helper.to_array(w).astype(np.float32)
            scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            if scale.ndim:
                shape[axis] = -1
            real = (q - zero.reshape(shape)) * scale.reshape(shape)
            model.graph.initializer.remove(w)
            model.graph.initializer.append(numpy_helper.from_array(real, f"{w.name}_float"))
            nodes.append(onnx.helper.make_node(
                "QuantizeLinear", [f"{w.name}_float", *node.input[1:]], [w.name],
                name=f"{w.name}_quantize", **({"axis": axis} if scale.ndim else {})))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(out))
    return out


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from edgekd.backends.from_torch import to_onnx
    from edgekd.compress.quantize import quantize_int8

    factory, shape = MODELS[request.param]
    torch.manual_seed(0)
    model = factory().eval()
    x = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    work = tmp_path_factory.mktemp(request.param)
    fp32 = to_onnx(model, x[:1], work / "m_fp32.onnx")
    int8 = quantize_int8(fp32, work / "m_int8.onnx", x, per_channel=True)
    onnx = {"fp32": fp32, "int8": int8,
            "int8float": _float_weight_qdq(int8, work / "m_int8float.onnx")}
    source = ExportSource(model=model, example=x[:1], calibration=x, onnx=onnx)
    xml = get_backend("openvino").export(source, work / "ir")
    return {"onnx": onnx, "xml": xml, "x": x, "work": work}


def _ir_size(xml: Path) -> int:
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def _ov(xml: Path, x: np.ndarray) -> np.ndarray:
    return get_backend("openvino").load(xml, 2).run(x)


def _ort(onnx: Path, x: np.ndarray) -> np.ndarray:
    return get_backend("onnxruntime").load(onnx, 2).run(x)


@pytest.mark.parametrize("int8", ["int8", "int8float"])
def test_int8_ir_is_smaller_than_fp32(exported, int8: str) -> None:
    xml = exported["xml"]
    fp32, small = _ir_size(xml["fp32"]), _ir_size(xml[int8])
    assert small < fp32, (small, fp32)
    # The weights are stored as INT8: ~4x fewer weight bytes (scales and biases add a little).
    assert 3 * xml[int8].with_suffix(".bin").stat().st_size < xml["fp32"].with_suffix(
        ".bin").stat().st_size


@pytest.mark.parametrize("int8", ["int8", "int8float"])
def test_int8_ir_holds_int8_weights_not_float_fake_quantize(exported, int8: str) -> None:
    import openvino as ov

    model = ov.Core().read_model(str(exported["xml"][int8]))
    weights = [op for op in model.get_ops() if op.get_type_name() == "Constant"
               and len(op.get_output_shape(0)) >= 2]
    assert weights
    big = [op for op in weights if np.prod(op.get_output_shape(0)) > 256]
    assert big and all(op.get_element_type().get_type_name() in ("i8", "u8") for op in big)
    # Activations keep their FakeQuantize (that is what makes the plugin run INT8 kernels).
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def test_outputs_match_the_onnx_models(exported) -> None:
    x, onnx, xml = exported["x"], exported["onnx"], exported["xml"]
    want = _ort(onnx["fp32"], x)
    np.testing.assert_allclose(_ov(xml["fp32"], x), want, rtol=1e-4, atol=1e-4)
    span = float(np.abs(want).max())
    q_ort = _ort(onnx["int8"], x)
    for name in ("int8", "int8float"):
        got = _ov(xml[name], x)
        # INT8 kernels of two runtimes round differently; far closer than to a wrong model.
        assert np.abs(got - q_ort).max() < 0.05 * span, name
        assert np.abs(got - want).max() < 0.15 * span, name


def test_folding_weights_does_not_change_outputs(exported) -> None:
    """The INT8-constant IR computes what OpenVINO's plain reading of the QDQ file does."""
    import openvino as ov

    plain = exported["work"] / "plain_int8.xml"
    ov.save_model(ov.Core().read_model(str(exported["onnx"]["int8"])), str(plain),
                  compress_to_fp16=False)
    x = exported["x"]
    np.testing.assert_allclose(_ov(exported["xml"]["int8"], x), _ov(plain, x),
                               rtol=1e-5, atol=1e-5)


def _name(ov_type) -> str:  # type: ignore[no-untyped-def]
    return {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[ov_type.get_type_name()]


def test_fp32_precision_is_what_a_plain_compile_model_gives(exported) -> None:
    """``inference_precision`` of the FP32 IR is what ``compile_model(xml, "CPU")`` with no
    config runs. This CPU has no bf16, so both say fp32 here; the IR also carries the f32
    hint in its runtime info, so a runtime that applies ``runtime_options`` runs it f32 on a
    bf16 CPU too (the CPU plugin of OpenVINO 2026.4 does not: there the report says bf16)."""
    import openvino as ov

    from edgekd.backends.openvino import inference_precision

    xml = exported["xml"]["fp32"]
    plain = ov.Core().compile_model(str(xml), "CPU")
    assert inference_precision(xml) == _name(plain.get_property("INFERENCE_PRECISION_HINT"))
    saved = ov.Core().read_model(str(xml))
    assert saved.get_rt_info(["runtime_options", "INFERENCE_PRECISION_HINT"]).astype(
        str) == "f32"
    assert "<INFERENCE_PRECISION_HINT value=\"f32\"" in xml.read_text()


def test_int8_precision_says_int8_and_the_hint_keeps_int8_kernels(exported) -> None:
    import openvino as ov

    from edgekd.backends.openvino import inference_precision
    from edgekd.device.runtimes import OV_COMPUTE, openvino_config

    xml = exported["xml"]["int8"]
    plain = ov.Core().compile_model(str(xml), "CPU")
    assert inference_precision(xml) == \
        f"int8 + {_name(plain.get_property('INFERENCE_PRECISION_HINT'))}"
    # The f32 hint edgekd measures with (and records in the IR) leaves INT8 kernels INT8.
    pinned = ov.Core().compile_model(str(xml), "CPU", openvino_config(2))
    ran = {op.get_rt_info()["runtimePrecision"].astype(str)
           for op in pinned.get_runtime_model().get_ops()
           if op.get_rt_info()["layerType"].astype(str) in OV_COMPUTE}
    assert ran and ran <= {"i8", "u8"}, ran


def test_onnxruntime_precision_from_the_graph(exported, tmp_path: Path) -> None:
    from edgekd.backends.onnxruntime import inference_precision, to_fp16

    onnx = exported["onnx"]
    assert inference_precision(onnx["fp32"]) == "fp32"
    assert inference_precision(onnx["int8"]) == "int8 (QDQ)"
    assert inference_precision(to_fp16(onnx["fp32"], tmp_path / "m_fp16.onnx")) == "fp16"


def test_tflite_precision_from_the_tensor_types(tmp_path: Path) -> None:
    pytest.importorskip("litert_torch")
    from edgekd.backends.tflite import inference_precision

    torch.manual_seed(0)
    model = Residual2d().eval()
    x = np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32)
    source = ExportSource(model=model, example=x[:1], calibration=x,
                          onnx={"fp32": tmp_path / "unused", "int8": tmp_path / "unused"})
    paths = get_backend("tflite").export(source, tmp_path)
    assert inference_precision(paths["fp32"]) == "fp32"
    assert inference_precision(paths["int8"]) == "int8"  # full-integer: no float operator
