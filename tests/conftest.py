"""Shared fixtures: the real digits data and a small student trained on it (once per session);
and a check, at the end of the session, of every report.json the tests' builds wrote."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgekd.inputs.dataset import Dataset
from edgekd.inputs.digits import load_digits
from edgekd.report.schema import validate_report
from edgekd.settings.resources import default_calibration_file


def _report_problems(path: Path) -> list[str]:
    """Schema problems of a report a build wrote (manifest.json beside it) or that claims a
    schema_version; other report.json files are tests' own stand-ins (a staging placeholder,
    a trimmed older report for the gate) and are not checked."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        data = exc
    written = (path.parent / "manifest.json").is_file() or (
        isinstance(data, dict) and "schema_version" in data)
    if not written:
        return []
    if isinstance(data, Exception):
        return [f"not JSON ({data})"]
    return validate_report(data)


@pytest.fixture(scope="session", autouse=True)
def every_report_matches_the_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After the last test: every report.json under the session's temporary folder must
    match edgekd/report/report.schema.json, so each build a test runs checks the schema."""
    yield
    bad = []
    for path in sorted(tmp_path_factory.getbasetemp().rglob("report.json")):
        problems = _report_problems(path)
        if problems:
            bad.append(f"{path}:\n  " + "\n  ".join(problems[:5]))
    if bad:
        pytest.fail("report.json that does not match the schema:\n" + "\n".join(bad),
                    pytrace=False)


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
