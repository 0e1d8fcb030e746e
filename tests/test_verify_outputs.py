"""Verification per output, in ONNX Runtime, of a streaming model with three inputs (a float
chunk, a float recurrent state, an int64 sample rate) and two outputs (a probability and the
next state); and the streaming check that feeds the state back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgekd.errors import UsageError, VerificationError
from edgekd.inputs.dataset import InputSpec, OutputSpec
from edgekd.measure.stream import require_stream, stream_check
from edgekd.measure.verify import Limits, compare_output, require_outputs, verify_artifact
from edgekd.settings.config import BuildConfig

SPECS = (InputSpec("chunk", "float32", (64,), kind="signal"),
         InputSpec("state", "float32", (16,), role="state", value=np.zeros(16, np.float32),
                   batch_axis=0, from_output="next_state"),
         InputSpec("sr", "int64", (), role="fixed", value=np.array(16000, np.int64)))
OUTPUTS = (OutputSpec("prob", threshold=0.5), OutputSpec("next_state", state="state"))
STATE_PATH = ["ca", "sb", "pre"]  # nodes that make next_state only
PROB_PATH = ["cw", "cwg", "sv", "l0", "logit", "probs"]  # nodes that make prob only


def stream_model(path: Path, recur: float = 0.9, nan: bool = False) -> Path:
    """prob = sigmoid(chunk @ w * sr / 16000 + state @ v + c), next_state = tanh(chunk @ A +
    state @ B) with B ``recur`` times an orthogonal matrix (state memory over chunks)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(0)
    w = {"A": r.normal(0, 0.4, (64, 16)), "B": recur * np.linalg.qr(r.normal(size=(16, 16)))[0],
         "w": r.normal(0, 0.5, (64, 1)), "v": r.normal(0, 0.5, (16, 1)),
         "c": np.full((1,), np.nan if nan else 0.1), "k": np.array(1 / 16000)}
    node = helper.make_node
    # Each path reads its own copy of the inputs, so quantizing one path (its inputs'
    # ranges included) leaves the other in float.
    nodes = [node("Identity", [x], [f"{x}_{path}"], name=f"{x}_{path}")
             for x in ("chunk", "state") for path in ("s", "p")]
    nodes += [node("MatMul", ["chunk_s", "A"], ["ca"], name="ca"),
              node("MatMul", ["state_s", "B"], ["sb"], name="sb"),
              node("Add", ["ca", "sb"], ["pre"], name="pre"),
              node("Tanh", ["pre"], ["next_state"], name="tanh"),
              node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT, name="cast"),
              node("Mul", ["srf", "k"], ["g"], name="g"),
              node("MatMul", ["chunk_p", "w"], ["cw"], name="cw"),
              node("Mul", ["cw", "g"], ["cwg"], name="cwg"),
              node("MatMul", ["state_p", "v"], ["sv"], name="sv"),
              node("Add", ["cwg", "sv"], ["l0"], name="l0"),
              node("Add", ["l0", "c"], ["logit"], name="logit"),
              node("Sigmoid", ["logit"], ["prob"], name="probs")]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        nodes, "stream",
        [value("chunk", TensorProto.FLOAT, ["batch", 64]),
         value("state", TensorProto.FLOAT, ["batch", 16]), value("sr", TensorProto.INT64, [])],
        [value("prob", TensorProto.FLOAT, ["batch", 1]),
         value("next_state", TensorProto.FLOAT, ["batch", 16])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def session(path: Path) -> Any:
    """The model at ``path`` in ONNX Runtime as a plain callable: inputs -> every output."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: s.run(None, feed)


def int8(fp32: Path, out: Path, chunks: np.ndarray, states: np.ndarray,
         nodes: list[str] | None = None) -> Path:
    """Static INT8 (QDQ) of ``fp32`` calibrated on these chunks and states. reduce_range:
    7-bit weights, as x86 CPUs without VNNI need (their u8 x s8 kernels saturate)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.feeds = iter([{"chunk": c[None], "state": s[None],
                                "sr": np.array(16000, np.int64)}
                               for c, s in zip(chunks, states, strict=True)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    per_channel=False, reduce_range=True, nodes_to_quantize=nodes)
    return out


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The FP32 model, audio-like chunks (test: the last 200), the states an FP32 stream goes
    through (calibration), and the FP32 model's outputs on the test chunks (state zeros)."""
    from edgekd.backends import get_backend, predict_all

    work = tmp_path_factory.mktemp("stream")
    fp32 = stream_model(work / "model_fp32.onnx")
    chunks = np.random.default_rng(1).uniform(-1, 1, (400, 64)).astype(np.float32)
    run, state, states = session(fp32), np.zeros(16, np.float32), []
    for c in chunks[:200]:
        states.append(state)
        state = run({"chunk": c[None], "state": state[None], "sr": np.array(16000)})[1][0]
    test = {"chunk": chunks[200:]}
    references = predict_all(get_backend("onnxruntime").load(fp32, 1), SPECS, test)
    return {"work": work, "fp32": fp32, "calibration": chunks[:200], "states": np.array(states),
            "test": test, "references": references}


def verify(path: Path, stream: dict[str, Any]) -> Any:
    return verify_artifact(path, "onnxruntime", threads=1, inputs=SPECS, arrays=stream["test"],
                           references=stream["references"], outputs=OUTPUTS)


def test_fp32_and_good_int8_pass_every_output_and_the_stream(stream: dict[str, Any]) -> None:
    same = verify(stream["fp32"], stream)
    assert [o.name for o in same.outputs] == ["prob", "next_state"]
    assert all(o.max_abs_error < 1e-5 and o.samples == 200 for o in same.outputs)
    good = int8(stream["fp32"], stream["work"] / "model_int8.onnx", stream["calibration"],
                stream["states"])
    v = verify(good, stream)
    prob, state = v.outputs
    assert prob.rel_error < 0.1 and prob.decision_agreement >= 0.98  # measured 0.027, 0.995
    assert state.rel_error < 0.1 and state.cosine_min > 0.99  # measured 0.052, 0.9978
    require_outputs(good.name, "onnxruntime", "int8", v.outputs, Limits.of(BuildConfig()))
    s = stream_check(session(stream["fp32"]), session(good), SPECS, OUTPUTS, stream["test"],
                     chunks=100)
    assert s.chunks == 100 and [o.samples for o in s.outputs] == [100, 100]
    require_stream(good.name, "onnxruntime", "int8", s, Limits())
    # the old top-level figures are the first output's
    assert v.max_abs_diff == prob.max_abs_error and v.to_dict()["outputs"][1]["name"] == \
        "next_state"


@pytest.mark.parametrize(("nodes", "damaged", "intact"), [(STATE_PATH, "next_state", "prob"),
                                                           (PROB_PATH, "prob", "next_state")])
def test_int8_calibrated_on_zeros_fails_naming_the_damaged_output(
        stream: dict[str, Any], nodes: list[str], damaged: str, intact: str) -> None:
    """Calibrated on zeros, the quantized layers clip everything: the message names the
    output they make, the figure, the limit, and advises calibration data first."""
    zeros = np.zeros((50, 64), np.float32)
    bad = int8(stream["fp32"], stream["work"] / f"{damaged}_int8.onnx", zeros,
               np.zeros((50, 16), np.float32), nodes)
    v = verify(bad, stream)
    by_name = {o.name: o for o in v.outputs}
    assert by_name[intact].rel_error < 0.05
    with pytest.raises(VerificationError) as err:
        require_outputs(bad.name, "onnxruntime", "int8", v.outputs, Limits())
    message = str(err.value)
    assert message.startswith(f"{bad.name} (onnxruntime, int8) against its reference model: "
                              f"output {damaged!r}")
    assert "also failing" not in message and repr(intact) not in message
    assert message.index("quant.calibration_samples") < message.index("quant.method") \
        < message.index("relax")
    if damaged == "prob":
        assert by_name["prob"].decision_agreement < 0.98
        assert "decisions (> 0.5) differ" in message and "min_decision_agreement" in message
    else:
        assert by_name["next_state"].cosine_min < 0.9
        assert "cosine similarity" in message and "min_cosine 0.99" in message


def test_flipped_decisions_and_a_probability_off_by_023_fail() -> None:
    """The hand-frozen audio model of issue 13: decisions flipped on 7.7 % of chunks, or a
    probability off by 0.23, each fails; small noise passes."""
    r = np.random.default_rng(0)
    ref = r.uniform(0, 1, (1000, 1)).astype(np.float32)
    spec = OutputSpec("prob", threshold=0.5)
    noisy = ref + r.normal(0, 0.01, ref.shape).astype(np.float32)
    healthy = compare_output("prob", noisy, ref, spec)
    require_outputs("vad_int8.onnx", "onnxruntime", "int8", [healthy], Limits())

    near = np.argsort(np.abs(ref[:, 0] - 0.5))[:77]  # 7.7 % of chunks across 0.5 by <= 0.1
    flipped = ref.copy()
    flipped[near, 0] = np.where(ref[near, 0] > 0.5, ref[near, 0] - 0.1, ref[near, 0] + 0.1)
    check = compare_output("prob", flipped, ref, spec)
    assert check.decision_agreement == pytest.approx(0.923)
    assert check.rel_error < 0.2  # the error alone would pass: the decisions fail
    with pytest.raises(VerificationError, match=r"vad_int8\.onnx \(onnxruntime, int8\) against "
                       r"its reference model: output 'prob': decisions \(> 0\.5\) differ from "
                       r"the reference model's on 7\.70% of the samples on the test split "
                       r"\(agreement 92\.30% < min_decision_agreement 98\.00%\); first try"):
        require_outputs("vad_int8.onnx", "onnxruntime", "int8", [check], Limits())

    off = ref.copy()
    far = int(np.argmin(np.abs(ref[:, 0] - 0.9)))
    off[far, 0] -= 0.23  # 0.9 -> 0.67: same decision, a wrong probability
    check = compare_output("prob", off, ref, spec)
    assert check.decision_agreement == 1.0 and check.cosine_min is None
    with pytest.raises(VerificationError, match=r"output 'prob' is off by up to 0\.23 on the "
                       r"test split, 23\.\d% of its range 0\.99\d* \(max_output_error 20\.0%; "
                       r"99% of samples within \d\.\d%\)"):
        require_outputs("vad_int8.onnx", "onnxruntime", "int8", [check], Limits())


def test_one_element_output_never_reports_cosine(stream: dict[str, Any]) -> None:
    """The cosine of one element is +-1 whatever the error: not reported, not gated."""
    v = verify(stream["fp32"], stream)
    assert v.outputs[0].elements == 1 and v.outputs[0].cosine_min is None
    assert v.to_dict()["outputs"][0]["cosine_mean"] is None
    assert v.outputs[1].elements == 16 and v.outputs[1].cosine_min == pytest.approx(1.0)
    ref = np.linspace(-1, 1, 50, dtype=np.float32)
    check = compare_output("score", -ref, ref)  # 1-D: one element per sample, sign flipped
    assert check.cosine_min is None and check.rel_error == pytest.approx(1.0)
    with pytest.raises(VerificationError, match="output 'score' is off by up to 2"):
        require_outputs("m.onnx", "onnxruntime", "fp32", [check], Limits())


def test_nan_in_any_output_fails(stream: dict[str, Any]) -> None:
    broken = stream_model(stream["work"] / "nan_fp32.onnx", nan=True)  # prob only is NaN
    with pytest.raises(VerificationError, match=r"nan_fp32\.onnx: nan_fp32\.onnx's outputs "
                       r"\('prob'\) on the test split are not finite \(NaN or inf in 200 of "
                       r"200 samples\)"):
        verify(broken, stream)
    ref = np.ones((10, 16), np.float32)
    out = ref.copy()
    out[3, 5] = np.inf
    check = compare_output("next_state", out, ref)
    assert check.non_finite == 1 and check.reference_non_finite == 0
    with pytest.raises(VerificationError, match=r"against its reference model: the artifact's "
                       r"output 'next_state' is NaN or inf on 1 of 10 samples over a "
                       r"10-chunk stream; check the model's weights"):
        require_outputs("m.onnx", "onnxruntime", "int8", [check], Limits(),
                        where="over a 10-chunk stream")


def test_stream_check_shows_state_drift_the_test_split_cannot(stream: dict[str, Any]) -> None:
    """An artifact whose recurrence differs matches on every test sample (each starts from
    zero state) and drifts over a stream: only the streaming check sees it."""
    drifting = stream_model(stream["work"] / "drift_fp32.onnx", recur=1.2)
    v = verify(drifting, stream)
    require_outputs(drifting.name, "onnxruntime", "fp32", v.outputs, Limits())
    s = stream_check(session(stream["fp32"]), session(drifting), SPECS, OUTPUTS,
                     stream["test"], chunks=100)
    whole, last = {o.name: o for o in s.outputs}, {o.name: o for o in s.last}
    assert last["next_state"].samples == 1 and last["next_state"].decision_agreement is None
    assert last["next_state"].max_abs_error > 0.05 and v.outputs[1].max_abs_error == 0
    assert last["next_state"].scale == whole["next_state"].scale  # the stream's range
    with pytest.raises(VerificationError, match=r"drift_fp32\.onnx \(onnxruntime, fp32\) "
                       r"against its reference model: output '(next_state|prob)'.* over a "
                       r"100-chunk stream"):
        require_stream(drifting.name, "onnxruntime", "fp32", s, Limits())


def test_state_input_without_a_source_is_refused(stream: dict[str, Any]) -> None:
    orphan = (SPECS[0], InputSpec("state", "float32", (16,), role="state",
                                  value=np.zeros(16, np.float32), batch_axis=0), SPECS[2])
    run = session(stream["fp32"])
    with pytest.raises(UsageError, match=r"state input 'state' is carried from no output; set "
                                         r"its from_output to one of the model's outputs: "
                                         r"prob, next_state"):
        stream_check(run, run, orphan, (OUTPUTS[0], OutputSpec("next_state")), stream["test"])


def test_limits_come_from_the_config_and_are_checked() -> None:
    assert Limits.of(BuildConfig()) == Limits(0.98, 0.99, 0.2, 0.98)
    with pytest.raises(ValueError, match="max_output_error must be > 0"):
        BuildConfig(max_output_error=0.0)
    with pytest.raises(ValueError, match=r"min_decision_agreement must be in \[0, 1\]"):
        BuildConfig(min_decision_agreement=1.5)


def test_a_near_chance_classifier_is_named_as_the_likely_cause() -> None:
    """Flat scores (a model that learned nothing) flip top-1 under tiny INT8 changes: the
    failure says the model is near chance instead of only blaming calibration."""
    rng = np.random.default_rng(0)
    reference = rng.normal(0, 1e-3, size=(400, 10)).astype(np.float32)
    artifact = reference + rng.normal(0, 1e-3, size=reference.shape).astype(np.float32)
    labels = rng.integers(0, 10, 400)
    check = compare_output("logits", artifact, reference, OutputSpec("logits", True), labels)
    with pytest.raises(VerificationError) as err:
        require_outputs("m_int8.onnx", "onnxruntime", "int8", [check], Limits())
    assert "the model is near chance (accuracy" in str(err.value)
    assert "chance 10.0%" in str(err.value)
