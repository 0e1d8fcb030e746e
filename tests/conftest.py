"""Shared fixtures: the real digits data and a small student trained on it (once per session)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekd.inputs.dataset import Dataset
from edgekd.inputs.digits import load_digits
from edgekd.settings.resources import default_calibration_file


@pytest.fixture(scope="session")
def digits() -> Dataset:
    return load_digits(default_calibration_file(), seed=0)


@pytest.fixture(scope="session")
def trained_student(digits: Dataset):  # type: ignore[no-untyped-def]
    """The built-in student, trained briefly on real digits so quantization has real ranges."""
    import torch

    from edgekd.train.loop import Schedule, set_seed, train
    from edgekd.train.models import student_cnn

    torch.set_num_threads(2)
    set_seed(0)
    return train(student_cnn(), digits.train, Schedule(epochs=4, lr=3e-3, batch_size=64), seed=0)


@pytest.fixture(scope="session")
def onnx_pair(tmp_path_factory: pytest.TempPathFactory, trained_student, digits: Dataset
              ) -> dict[str, Path]:
    """FP32 and INT8 (QDQ) ONNX files of the trained student."""
    from edgekd.backends.from_torch import to_onnx
    from edgekd.compress.quantize import quantize_int8

    work = tmp_path_factory.mktemp("onnx")
    fp32 = to_onnx(trained_student, digits.test.x[:1], work / "student_fp32.onnx")
    int8 = quantize_int8(fp32, work / "student_int8.onnx", digits.calibration.x, per_channel=True)
    return {"fp32": fp32, "int8": int8}


def torch_logits(model, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    from edgekd.train.loop import logits_of

    return logits_of(model, x).numpy()
