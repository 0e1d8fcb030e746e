"""Each backend: export -> load in the real runtime -> run, matching PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd import BuildError, UsageError, load_target
from edgekd.backends import BACKENDS, ExportSource, get_backend, predict_batches
from tests.conftest import torch_logits


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, trained_student, digits, onnx_pair
             ) -> dict[str, dict[str, Path]]:
    source = ExportSource(model=trained_student, example=digits.test.x[:1],
                          calibration=digits.calibration.x, onnx=onnx_pair)
    out: dict[str, dict[str, Path]] = {}
    for name in BACKENDS:
        folder = tmp_path_factory.mktemp(name)
        out[name] = get_backend(name).export(source, folder)
    return out


@pytest.mark.parametrize("runtime", list(BACKENDS))
def test_fp32_artifact_matches_torch(runtime: str, exported, trained_student, digits) -> None:
    runner = get_backend(runtime).load(exported[runtime]["fp32"], 2)
    got = predict_batches(runner, digits.test.x)
    want = torch_logits(trained_student, digits.test.x)
    assert got.shape == want.shape == (len(digits.test), 10)
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("runtime", list(BACKENDS))
def test_int8_artifact_agrees_with_torch(runtime: str, exported, trained_student, digits
                                         ) -> None:
    runner = get_backend(runtime).load(exported[runtime]["int8"], 2)
    got = predict_batches(runner, digits.test.x)
    want = torch_logits(trained_student, digits.test.x)
    agreement = float((got.argmax(1) == want.argmax(1)).mean())
    assert agreement >= 0.97, f"{runtime} INT8 agrees on only {agreement:.2%}"
    # Quantized, not a copy of the float model: outputs differ, but not wildly.
    err = np.abs(got - want).max()
    assert 0 < err < 0.2 * np.abs(want).max()


@pytest.mark.parametrize("runtime", ["onnxruntime", "tflite"])
def test_int8_file_is_at_least_3x_smaller(runtime: str, exported) -> None:
    assert exported[runtime]["fp32"].stat().st_size >= 3 * exported[runtime]["int8"].stat().st_size


def test_openvino_int8_weights_are_at_least_3x_smaller(exported) -> None:
    # The weights (.bin) shrink ~4x; the .xml grows, since each quantized weight becomes a
    # small FakeQuantize subgraph. For a 38 k-parameter model the XML dominates the total, for
    # real models the .bin does. Both figures are in the report.
    fp32, int8 = (exported["openvino"][p].with_suffix(".bin") for p in ("fp32", "int8"))
    assert fp32.stat().st_size >= 3 * int8.stat().st_size


def test_tflite_int8_is_full_integer(exported) -> None:
    runner = get_backend("tflite").load(exported["tflite"]["int8"], 2)
    assert runner.input["dtype"] == np.int8
    assert runner.output["dtype"] == np.int8
    details = runner.interpreter.get_tensor_details()
    float_weights = [d["name"] for d in details
                     if d["dtype"] == np.float32 and len(d["shape"]) >= 2
                     and "weight" in d["name"].lower()]
    assert float_weights == []


def test_onnx_int8_quantizes_every_conv_and_gemm(onnx_pair) -> None:
    import onnx

    model = onnx.load(str(onnx_pair["int8"]))
    producers = {o: n for n in model.graph.node for o in n.output}
    compute = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert compute
    for node in compute:
        assert producers[node.input[0]].op_type == "DequantizeLinear", node.name
        assert producers[node.input[1]].op_type == "DequantizeLinear", node.name


def test_openvino_int8_runs_convolutions_in_int8(exported) -> None:
    runner = get_backend("openvino").load(exported["openvino"]["int8"], 2)
    model = runner.compiled.get_runtime_model()
    convs = [op for op in model.get_ordered_ops()
             if op.get_rt_info()["layerType"].astype(str) in ("Convolution", "FullyConnected")]
    assert convs
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in convs}
    assert precisions <= {"i8", "u8"}, precisions


@pytest.mark.parametrize("runtime", list(BACKENDS))
def test_corrupt_artifact_is_a_clear_error(runtime: str, exported, tmp_path: Path) -> None:
    src = exported[runtime]["fp32"]
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 3])
    if src.suffix == ".xml":
        (tmp_path / src.with_suffix(".bin").name).write_bytes(b"\0" * 10)
    with pytest.raises(BuildError, match=bad.name):
        get_backend(runtime).load(bad, 1)


def test_unknown_runtime_lists_the_known_ones() -> None:
    with pytest.raises(UsageError, match="onnxruntime, openvino, tflite"):
        get_backend("tensorrt")


def test_gpu_target_fails_clearly_without_a_gpu_provider() -> None:
    import onnxruntime

    if {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(
            onnxruntime.get_available_providers()):
        pytest.skip("this onnxruntime has GPU providers")
    from edgekd.errors import RuntimeMissingError

    with pytest.raises(RuntimeMissingError, match="onnxruntime-gpu"):
        get_backend("onnxruntime").check(load_target("nvidia-gpu"))
