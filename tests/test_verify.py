"""Verification runs the real runtime and fails the build on disagreement, naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekd.errors import VerificationError
from edgekd.measure.verify import require_agreement, verify_artifact
from tests.conftest import torch_logits


def test_matching_artifact_passes(onnx_pair, trained_student, digits) -> None:
    v = verify_artifact(onnx_pair["fp32"], "onnxruntime", x=digits.test.x, y=digits.test.y,
                        reference_logits=torch_logits(trained_student, digits.test.x), threads=1)
    assert v.top1_agreement == 1.0 and v.samples == len(digits.test)
    assert v.max_abs_diff < 1e-3
    require_agreement("student_fp32.onnx", "onnxruntime", "fp32", v, 0.98)


def test_artifact_of_another_model_fails_naming_it(trained_student, digits,
                                                   tmp_path: Path) -> None:
    """An ONNX file of a different (untrained) student must not pass as the trained one."""
    import torch

    from edgekd import student_cnn, to_onnx

    torch.manual_seed(123)
    wrong = to_onnx(student_cnn().eval(), digits.test.x[:1], tmp_path / "student_int8.onnx")
    v = verify_artifact(wrong, "onnxruntime", x=digits.test.x, y=digits.test.y,
                        reference_logits=torch_logits(trained_student, digits.test.x), threads=1)
    assert v.top1_agreement < 0.5
    with pytest.raises(VerificationError, match=r"student_int8\.onnx \(onnxruntime, int8\) "
                                                r"agrees with the PyTorch model on only"):
        require_agreement(wrong.name, "onnxruntime", "int8", v, 0.98)


def test_non_finite_outputs_fail_verification(onnx_pair, trained_student, digits,
                                              tmp_path: Path) -> None:
    """NaN compares false with everything: an artifact (or a reference) with NaN outputs
    fails by name instead of passing on a NaN cosine."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_pair["fp32"]))
    first = model.graph.initializer[0]
    weights = numpy_helper.to_array(first).copy()
    weights.flat[:] = np.nan
    first.CopyFrom(numpy_helper.from_array(weights, first.name))
    broken = tmp_path / "student_fp32.onnx"
    onnx.save(model, str(broken))
    reference = torch_logits(trained_student, digits.test.x)
    with pytest.raises(VerificationError, match=r"student_fp32\.onnx: student_fp32\.onnx's "
                                                r"outputs on the test split are not finite"):
        verify_artifact(broken, "onnxruntime", x=digits.test.x, y=digits.test.y,
                        reference_logits=reference, threads=1)
    reference[3, 0] = np.inf
    with pytest.raises(VerificationError, match=r"the reference model's outputs .* not finite "
                                                r"\(NaN or inf in 1 of"):
        verify_artifact(onnx_pair["fp32"], "onnxruntime", x=digits.test.x, y=digits.test.y,
                        reference_logits=reference, threads=1)
