"""INT8 quantization with ONNX Runtime's tools, run in the real ONNX Runtime: calibration
methods, per-channel vs per-tensor weights, and the accuracy-aware mixed-precision search."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
from onnx import numpy_helper

from edgekd.backends.from_torch import to_onnx
from edgekd.compress.quantize import Quantized, layers, ort_accuracy, quantize, quantize_cached
from edgekd.inputs.dataset import Dataset
from edgekd.settings.config import QuantConfig


def _weight_scales(path: Path) -> list[tuple[int, ...]]:
    """Shapes of the scales of the weight DequantizeLinear nodes (inputs that are
    initializers)."""
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    shapes = []
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            shapes.append(tuple(numpy_helper.to_array(inits[node.input[1]]).shape))
    return shapes


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_each_calibration_method_agrees_with_fp32(method: str, onnx_pair: dict[str, Path],
                                                   digits: Dataset, tmp_path: Path) -> None:
    out = quantize(onnx_pair["fp32"], tmp_path / f"{method}.onnx", digits.calibration.x[:64],
                   QuantConfig(method=method, max_accuracy_drop=None))
    fp_acc, fp_logits = ort_accuracy(onnx_pair["fp32"], digits.test.x, digits.test.y)
    agree, _ = ort_accuracy(out.path, digits.test.x, None, fp_logits)
    q_acc, _ = ort_accuracy(out.path, digits.test.x, digits.test.y)
    assert agree >= 0.97, (method, agree)
    assert q_acc >= fp_acc - 0.02, (method, q_acc, fp_acc)


def test_per_tensor_and_per_channel_weight_scales(onnx_pair: dict[str, Path], digits: Dataset,
                                                  tmp_path: Path) -> None:
    per_channel = quantize(onnx_pair["fp32"], tmp_path / "pc.onnx", digits.calibration.x[:32],
                           QuantConfig(per_channel=True, max_accuracy_drop=None)).path
    per_tensor = quantize(onnx_pair["fp32"], tmp_path / "pt.onnx", digits.calibration.x[:32],
                          QuantConfig(per_channel=False, max_accuracy_drop=None)).path
    assert any(len(s) == 1 and s[0] > 1 for s in _weight_scales(per_channel))
    assert all(s in ((), (1,)) for s in _weight_scales(per_tensor))


def test_mixed_precision_keeps_the_damaged_layer_in_float(trained_student, digits: Dataset,
                                                          tmp_path: Path) -> None:
    # One huge weight in the first hidden layer: per-tensor INT8 then has a step size far
    # too coarse for all its other weights, and that layer alone ruins the INT8 model.
    model = copy.deepcopy(trained_student)
    with torch.no_grad():
        model[4].weight[0, 0] = 60.0
    fp32 = to_onnx(model, digits.test.x[:1], tmp_path / "fp32.onnx")
    config = QuantConfig(per_channel=False, max_accuracy_drop=1.0)
    validation = (digits.calibration.x, digits.calibration.y)
    plain = quantize(fp32, tmp_path / "plain.onnx", digits.calibration.x,
                     QuantConfig(per_channel=False, max_accuracy_drop=None))
    fp_acc, _ = ort_accuracy(fp32, *validation)
    plain_acc, _ = ort_accuracy(plain.path, *validation)
    assert fp_acc - plain_acc > 0.05, (fp_acc, plain_acc)  # the damage is real

    q = quantize(fp32, tmp_path / "mixed.onnx", digits.calibration.x, config,
                 validation=validation)
    assert q.float_layers and len(q.float_layers) < len(layers(fp32))
    assert q.fp32_accuracy is not None and q.int8_accuracy is not None
    assert q.fp32_accuracy - q.int8_accuracy <= 0.01
    assert q.steps[0]["float_layers"] == [] and q.steps[-1]["float_layers"] == list(
        q.float_layers)
    # the layers kept in float have no QDQ on their weights in the written model
    graph = onnx.load(str(q.path)).graph
    kept = [n for n in graph.node if n.name in q.float_layers]
    assert kept and all(n.op_type in ("Gemm", "MatMul", "Conv") for n in kept)
    test_acc, _ = ort_accuracy(q.path, digits.test.x, digits.test.y)
    assert test_acc > plain_acc


def test_quantize_cached_reuses_replaces_and_ignores_entries(onnx_pair: dict[str, Path],
                                                              digits: Dataset,
                                                              tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    calibration = digits.calibration.x[:32]
    validation = (digits.calibration.x, digits.calibration.y)
    config = QuantConfig(max_accuracy_drop=5.0)

    def run(name: str, config: QuantConfig = config, **kw: Any) -> Quantized:
        return quantize_cached(cache, "model-1", onnx_pair["fp32"], tmp_path / name,
                               calibration, config, validation=validation, **kw)

    first = run("a.onnx")
    again = run("b.onnx")
    assert not first.cached and again.cached
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert replace(again, path=first.path, cached=False) == first
    [entry] = cache.iterdir()  # one entry, no temporary folder
    assert entry.name.startswith("int8-")
    # Other settings, samples or model: another entry.
    assert not run("c.onnx", QuantConfig(per_channel=False, max_accuracy_drop=5.0)).cached
    assert not quantize_cached(cache, "model-1", onnx_pair["fp32"], tmp_path / "d.onnx",
                               calibration[:16], config, validation=validation).cached
    assert not quantize_cached(cache, "model-2", onnx_pair["fp32"], tmp_path / "e.onnx",
                               calibration, config, validation=validation).cached
    assert len(list(cache.iterdir())) == 4
    assert not run("f.onnx", fresh=True).cached
    (entry / "model.onnx").unlink()  # damaged: quantized again, and the entry repaired
    assert not run("g.onnx").cached
    assert run("h.onnx").cached and len(list(cache.iterdir())) == 4


def test_config_rejects_unknown_method() -> None:
    with pytest.raises(ValueError, match="minmax, percentile, entropy"):
        QuantConfig(method="kl")


def test_cross_layer_equalisation_keeps_the_function_and_evens_the_ranges() -> None:
    from torch import nn

    from edgekd.compress.equalize import equalize, out_ranges, pairs

    torch.manual_seed(0)
    block = nn.Sequential(  # expand -> depthwise -> project, joined by ReLU
        nn.Conv2d(3, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 4, 1))
    for bn in (block[1], block[4]):  # trained BatchNorm spreads channel scales widely
        bn.weight.data = torch.logspace(-2, 1, 8)[torch.randperm(8)]
        bn.running_var.data = torch.rand(8) + 0.1
        bn.running_mean.data = torch.randn(8)
    block.eval()
    x = torch.randn(4, 3, 6, 6)
    eq = equalize(block)
    assert len(pairs(eq)) == 2
    torch.testing.assert_close(eq(x), block(x), rtol=1e-4, atol=1e-4)
    assert isinstance(eq, nn.Sequential)
    depthwise, conv, bn = eq[3], block[3], block[4]
    assert isinstance(depthwise, nn.Conv2d) and isinstance(conv, nn.Conv2d)
    assert isinstance(bn, nn.BatchNorm2d)
    spread = float(out_ranges(depthwise).max() / out_ranges(depthwise).min())
    before = nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
    spread_before = float(out_ranges(before).max() / out_ranges(before).min())
    assert spread < spread_before / 5, (spread, spread_before)


def test_nan_weights_or_samples_are_refused_before_calibration(onnx_pair: dict[str, Path],
                                                               digits: Dataset,
                                                               tmp_path: Path) -> None:
    """ORT's calibrator fails with `AssertionError: scale issue` on NaN activations: the
    FP32 model's outputs and the samples are checked first, in one line."""
    import numpy as np

    from edgekd.errors import BuildError

    model = onnx.load(str(onnx_pair["fp32"]))
    first = model.graph.initializer[0]
    weights = numpy_helper.to_array(first).copy()
    weights.flat[:] = np.nan
    first.CopyFrom(numpy_helper.from_array(weights, first.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    config = QuantConfig(max_accuracy_drop=None)
    with pytest.raises(BuildError, match=r"cannot calibrate INT8: the FP32 model's outputs on "
                                         r"the calibration samples are not finite"):
        quantize(tmp_path / "nan.onnx", tmp_path / "q.onnx", digits.calibration.x[:32], config)
    samples = digits.calibration.x[:32].copy()
    samples[5, 0, 0, 0] = np.nan
    with pytest.raises(BuildError, match=r"the samples are not finite \(NaN or inf in 1 of 32"):
        quantize(onnx_pair["fp32"], tmp_path / "q.onnx", samples, config)


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_of_an_infinite_activation_is_one_line(method: str,
                                                                      digits: Dataset,
                                                                      tmp_path: Path) -> None:
    """ORT's histogram calibrators raise `ValueError: supplied range of [-inf, inf] is not
    finite` when an activation inside the model overflows (here exp, clamped afterwards, so
    the outputs are finite): one BuildError naming the cause and the fix."""
    from edgekd.errors import BuildError

    class Overflow(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(torch.clamp(torch.exp(x.flatten(1) * 1000), max=1.0))

    fp32 = to_onnx(Overflow().eval(), digits.test.x[:1], tmp_path / "overflow.onnx")
    with pytest.raises(BuildError, match=rf'quant.method = "{method}" failed: an activation '
                                         r"inside the model is infinite on the calibration"):
        quantize(fp32, tmp_path / "q.onnx", digits.calibration.x[:16],
                 QuantConfig(method=method, max_accuracy_drop=None))
