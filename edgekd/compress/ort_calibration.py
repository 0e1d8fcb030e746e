"""ONNX Runtime's static-quantization plumbing shared by the build's INT8
(:mod:`edgekd.compress.quantize`) and its variants (:mod:`edgekd.compress.variants`): the
calibration reader, the calibrator settings every ``quantize_static`` call takes, and the
shape annotations dropped from what it writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.common.progress import Tracker
from edgekd.inputs.dataset import Feeds
from edgekd.settings.config import QuantConfig

INPUT_NAME = "input"
# Calibration samples run per collect_data call: ORT's histogram calibrators (percentile,
# entropy) otherwise hold every intermediate tensor of every sample in memory at once
# (~10 GB for MobileNetV2 at 224x224 and 200 samples).
CALIBRATION_CHUNK = 16


class CalibrationReader:
    """ORT's CalibrationDataReader over preprocessed samples, one sample per ``get_next``,
    with the ``__len__`` / ``set_range`` that ORT's strided calibration (``CalibStridedMinMax``)
    uses to collect a chunk at a time."""

    def __init__(self, samples: np.ndarray | Feeds, input_name: str = INPUT_NAME,
                 tracker: Tracker | None = None) -> None:
        # Every input of the model, by name (fixed and state inputs with each sample).
        self.samples = Feeds.of(samples, input_name)
        self.tracker = tracker  # counts the samples read (progress events)
        self.set_range(0, len(self.samples))

    def __len__(self) -> int:
        return len(self.samples)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next, self._end = start_index, end_index

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= self._end:
            return None
        self._next += 1
        if self.tracker is not None:
            self.tracker.advance()
        return self.samples.batch(self._next - 1, self._next)

    def rewind(self) -> None:
        self.set_range(0, len(self.samples))


@dataclass(frozen=True)
class Calibration:
    """What every ``quantize_static`` call here is given besides the model: ORT's calibrator
    for ``quant.method``, its quantized types, the strided chunk that divides the calibration
    set, and the graph's first data input (a user's model: any name)."""

    method: Any
    types: dict[str, Any]
    chunk: int
    input_name: str

    @classmethod
    def of(cls, pre: Path, calibration: np.ndarray | Feeds, config: QuantConfig) -> Calibration:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantType

        method = {"minmax": CalibrationMethod.MinMax,
                  "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy}[config.method]
        n = len(calibration)
        chunk = max(d for d in range(1, min(CALIBRATION_CHUNK, n) + 1) if n % d == 0)
        graph = onnx.load(str(pre), load_external_data=False).graph
        inits = {i.name for i in graph.initializer}
        name = next(i.name for i in graph.input if i.name not in inits)
        return cls(method, {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}, chunk, name)


def strip_shapes(path: Path) -> Path:
    """The quantized file without pre-processing's shape annotations (``value_info``): every
    runtime re-derives them at load time, and stale ones can disagree with the QDQ graph."""
    import onnx

    model = onnx.load(str(path))
    model.graph.ClearField("value_info")
    onnx.save_model(model, str(path))
    return path
