"""LiteRT INT8 is full-integer end to end, residual adds included (no float islands)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekd import ExportSource, predict_batches
from edgekd.backends import tflite as backend
from edgekd.train.models import InvertedResidual


def test_residual_adds_run_in_int8(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU6(),
                          InvertedResidual(16, 16, 1, 4), InvertedResidual(16, 16, 1, 4),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    x = np.random.default_rng(0).standard_normal((32, 3, 16, 16)).astype(np.float32)
    source = ExportSource(model, x[:1], x, {"fp32": tmp_path / "x", "int8": tmp_path / "y"},
                          stem="res")
    paths = backend.export(source, tmp_path)
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(paths["int8"]),
                              experimental_op_resolver_type=OpResolverType.
                              BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    ops = Counter(d["op_name"] for d in interpreter._get_ops_details())
    assert ops["ADD"] == 2
    assert ops["DEQUANTIZE"] == 0 and ops["QUANTIZE"] == 0, ops
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    got = predict_batches(backend.load(paths["int8"], 1), x)
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.8
