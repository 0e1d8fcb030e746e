""""What ran where": ops that did not run as intended, read from each real runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd import BenchSpec, run_bench


def _placement(path: Path, runtime: str) -> dict:
    return run_bench(BenchSpec(path, runtime, 1, warmup=1, runs=10))["placement"]


@pytest.fixture(scope="module")
def partly_quantized(tmp_path_factory: pytest.TempPathFactory, onnx_pair, digits) -> Path:
    """The student's QDQ model with only its Conv quantized: the Linear layers stay float.

    (Excluding a single Gemm is not enough: both runtimes then quantize it on their own.)
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(digits.calibration.x[:32])

        def get_next(self) -> dict | None:
            x = next(self.it, None)
            return None if x is None else {"input": x[None]}

    out = tmp_path_factory.mktemp("partial") / "partial_int8.onnx"
    quantize_static(str(onnx_pair["fp32"]), str(out), Reader(), per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    op_types_to_quantize=["Conv"])
    return out


def test_fully_quantized_models_run_as_intended(onnx_pair) -> None:
    for runtime in ("onnxruntime", "openvino"):
        p = _placement(onnx_pair["int8"], runtime)
        assert p["quantized"] and p["not_as_intended"] == [], (runtime, p)


def test_onnxruntime_names_the_node_left_in_float(partly_quantized: Path) -> None:
    p = _placement(partly_quantized, "onnxruntime")
    assert p["quantized"]
    ops = {n["op"] for n in p["not_as_intended"]}
    assert ops and ops <= {"Gemm", "FusedGemm", "MatMul", "FusedMatMul"}
    assert all("float" in n["ran"] for n in p["not_as_intended"])


def test_openvino_names_the_layer_not_in_int8(partly_quantized: Path) -> None:
    p = _placement(partly_quantized, "openvino")
    assert p["quantized"]
    off = p["not_as_intended"]
    assert off and {n["op"] for n in off} <= {"FullyConnected", "MatMul"}
    assert all(n["ran"] not in ("i8", "u8") for n in off)


def test_tflite_names_ops_xnnpack_did_not_take(tmp_path: Path) -> None:
    import litert_torch
    import torch

    class WithCumsum(torch.nn.Module):  # XNNPACK has no CUMSUM kernel
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(torch.cumsum(self.a(x), 1)[:, :8])

    path = tmp_path / "cumsum.tflite"
    litert_torch.convert(WithCumsum().eval(), (torch.from_numpy(
        np.zeros((1, 16), np.float32)),)).export(str(path))
    p = _placement(path, "tflite")
    assert [n["op"] for n in p["not_as_intended"]] == ["CUMSUM"]
    assert "not XNNPACK" in p["not_as_intended"][0]["ran"]
    assert p["delegated"] == p["nodes"] - 1 and p["partitions"] == 2
