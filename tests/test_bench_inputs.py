"""The benchmark feeds every input of a model, of any dtype, by name: several named inputs
(float chunk, float state, int64 scalar), int64 token ids drawn inside the vocabulary, fixed
values; and a spec that names an input the model lacks, or misses one, fails in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekd.measure.bench import BenchError, BenchSpec, run_bench

VOCAB = 50
SEQ = 12
RUNTIMES = ("onnxruntime", "openvino")


def _save(graph: onnx.GraphProto, folder: Path, name: str) -> dict[str, Path]:
    """The model as ONNX and as OpenVINO IR (converted from that ONNX)."""
    import openvino as ov

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    xml = folder / f"{name}.xml"
    ov.save_model(ov.Core().read_model(path), xml)
    return {"onnxruntime": path, "openvino": xml}


def _streaming(folder: Path) -> dict[str, Path]:
    """chunk [batch, 64] float, state [2, batch, 16] float, sr [] int64 -> prob [batch, 1]
    and next_state [2, batch, 16]; every input reaches an output."""
    nodes = [
        helper.make_node("Cast", ["sr"], ["sr_f"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["sr_f", "k16000"], ["sr_n"]),
        helper.make_node("Mul", ["chunk", "sr_n"], ["scaled"]),
        helper.make_node("ReduceMean", ["scaled"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Sigmoid", ["m"], ["prob"]),
        helper.make_node("Add", ["state", "m"], ["s"]),
        helper.make_node("Tanh", ["s"], ["next_state"]),
    ]
    graph = helper.make_graph(
        nodes, "streaming",
        [helper.make_tensor_value_info("chunk", TensorProto.FLOAT, ["batch", 64]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 16]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["batch", 1]),
         helper.make_tensor_value_info("next_state", TensorProto.FLOAT, [2, "batch", 16])],
        [helper.make_tensor("k16000", TensorProto.FLOAT, [], [16000.0])])
    return _save(graph, folder, "streaming")


def _tokens(folder: Path) -> dict[str, Path]:
    """ids [batch, 12] int64 -> Gather in a [50, 8] embedding -> mean over the sequence."""
    table = np.random.default_rng(0).standard_normal((VOCAB, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["e"], axis=0),
         helper.make_node("ReduceMean", ["e"], ["pooled"], axes=[1], keepdims=0)],
        "tokens",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", SEQ])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor("emb", TensorProto.FLOAT, [VOCAB, 8], table.ravel().tolist())])
    return _save(graph, folder, "tokens")


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _streaming(tmp_path_factory.mktemp("streaming"))


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _tokens(tmp_path_factory.mktemp("tokens"))


STREAMING_INPUTS = (
    {"name": "chunk", "shape": [1, 64], "dtype": "float32"},
    {"name": "state", "shape": [2, 1, 16], "dtype": "float32", "value": 0.0},
    {"name": "sr", "shape": [], "dtype": "int64", "value": 16000},
)
TOKEN_INPUTS = ({"name": "ids", "shape": [1, SEQ], "dtype": "int64", "low": 0,
                 "high": VOCAB - 1},)


def _bench(path: Path, runtime: str, inputs: tuple[dict, ...] = (), **kw: object) -> dict:
    return run_bench(BenchSpec(path, runtime, 1, warmup=1, runs=5, inputs=inputs,
                               **kw))  # type: ignore[arg-type]


def _fed(result: dict) -> dict[str, tuple[list[int], str]]:
    return {i["name"]: (i["shape"], i["dtype"]) for i in result["inputs"]}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_three_inputs_of_two_dtypes_are_all_fed(streaming, runtime) -> None:
    result = _bench(streaming[runtime], runtime, STREAMING_INPUTS)
    assert "error" not in result and result["latency_ms"]["p50"] > 0
    assert result["runs"] == 5
    assert _fed(result) == {"chunk": ([1, 64], "float32"), "state": ([2, 1, 16], "float32"),
                            "sr": ([], "int64")}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_inputs_in_any_order_and_shapes_from_the_model(streaming, runtime) -> None:
    """Matched by name, not position; no shape given: the declared one, symbolic dims 1."""
    inputs = ({"name": "sr", "dtype": "int64", "value": 16000},
              {"name": "state", "dtype": "float32", "low": -1.0, "high": 1.0},
              {"name": "chunk", "shape": [4, 64], "dtype": "float32"})
    result = _bench(streaming[runtime], runtime, inputs)
    assert _fed(result) == {"chunk": ([4, 64], "float32"), "state": ([2, 1, 16], "float32"),
                            "sr": ([], "int64")}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_token_ids_stay_in_the_vocabulary(tokens, runtime) -> None:
    result = _bench(tokens[runtime], runtime, TOKEN_INPUTS, seed=3)
    assert result["latency_ms"]["p50"] > 0
    assert _fed(result) == {"ids": ([1, SEQ], "int64")}
    longer = _bench(tokens[runtime], runtime,
                    ({**TOKEN_INPUTS[0], "shape": [2, SEQ]},))
    assert _fed(longer) == {"ids": ([2, SEQ], "int64")}


def test_ids_outside_the_vocabulary_fail_in_one_line(tokens) -> None:
    """ONNX Runtime's Gather refuses an index past the table: the draw above stayed inside
    [low, high] because this one, outside it, fails."""
    outside = ({**TOKEN_INPUTS[0], "low": VOCAB, "high": VOCAB + 10},)
    with pytest.raises(BenchError) as exc:
        _bench(tokens["onnxruntime"], "onnxruntime", outside)
    message = str(exc.value)
    assert "\n" not in message and "could not run tokens.onnx" in message
    assert "ids int64 [1, 12]" in message


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_without_inputs_every_input_is_still_fed(streaming, tokens, runtime) -> None:
    """No inputs in the spec: derived from the model, as before, for all its inputs."""
    result = _bench(streaming[runtime], runtime)
    assert _fed(result) == {"chunk": ([1, 64], "float32"), "state": ([2, 1, 16], "float32"),
                            "sr": ([], "int64")}
    assert _fed(_bench(tokens[runtime], runtime)) == {"ids": ([1, SEQ], "int64")}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_name_the_model_lacks_is_one_line_with_its_inputs(streaming, runtime) -> None:
    wrong = (*STREAMING_INPUTS[:2], {**STREAMING_INPUTS[2], "name": "sample_rate"})
    with pytest.raises(BenchError) as exc:
        _bench(streaming[runtime], runtime, wrong)
    message = str(exc.value)
    assert "\n" not in message
    assert "no input named 'sample_rate'" in message and "sr (int64 [])" in message
    assert "fix the names" in message


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_missing_input_is_one_line_naming_it(streaming, runtime) -> None:
    with pytest.raises(BenchError) as exc:
        _bench(streaming[runtime], runtime, STREAMING_INPUTS[:2])
    message = str(exc.value)
    assert "\n" not in message and "also takes sr (int64 [])" in message


def test_wrong_rank_wrong_fixed_dim_and_float_into_ids_are_one_line(streaming, tokens) -> None:
    rank = ({**STREAMING_INPUTS[0], "shape": [64]}, *STREAMING_INPUTS[1:])
    fixed = ({**STREAMING_INPUTS[0], "shape": [1, 32]}, *STREAMING_INPUTS[1:])
    for inputs, expected in ((rank, "has shape [64]"), (fixed, "has shape [1, 32]")):
        with pytest.raises(BenchError, match="model declares chunk") as exc:
            _bench(streaming["onnxruntime"], "onnxruntime", inputs)
        assert expected in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(BenchError, match="declare its dtype as int64"):
        _bench(tokens["onnxruntime"], "onnxruntime",
               ({"name": "ids", "shape": [1, SEQ], "dtype": "float32"},))


def test_the_old_input_shape_still_drives_a_one_input_model(tokens) -> None:
    result = _bench(tokens["onnxruntime"], "onnxruntime", input_shape=(3, SEQ))
    assert _fed(result) == {"ids": ([3, SEQ], "int64")}


@pytest.mark.parametrize("inputs, expected", [
    ([{"shape": [1], "dtype": "float32"}], "needs a name"),
    ([{"name": "x", "dtype": "complex64"}], "dtype must be one of"),
    ([{"name": "x", "dtype": "float32", "mean": 0}], "unknown keys mean"),
    ([{"name": "x", "dtype": "float32", "shape": [1, -2]}], "non-negative integers"),
    ([{"name": "x", "dtype": "float32", "shape": [1 << 20, 1 << 20]}], "elements"),
    ([{"name": "x", "dtype": "int64", "low": 5}], "both low and high"),
    ([{"name": "x", "dtype": "int64", "low": 5, "high": 1}], "above high"),
    ([{"name": "x", "dtype": "int64", "low": 0.5, "high": 9}], "must be an integer"),
    ([{"name": "x", "dtype": "uint8", "low": -1, "high": 9}], "within uint8"),
    ([{"name": "x", "dtype": "float32", "low": 0, "high": float("nan")}], "finite"),
    ([{"name": "x", "dtype": "int64", "value": 3, "low": 0, "high": 9}], "not both"),
    ([{"name": "x", "dtype": "float32", "shape": [2, 3], "value": [1, 2]}], "value is not"),
    ([{"name": "x", "dtype": "float32"}, {"name": "x", "dtype": "float32"}], "more than once"),
    ({"name": "x", "dtype": "float32"}, "list of dicts"),
])
def test_bench_spec_inputs_check_themselves(tmp_path, inputs, expected) -> None:
    with pytest.raises(ValueError, match=expected):
        BenchSpec(tmp_path / "m.onnx", "onnxruntime", 1, inputs=inputs)  # type: ignore[arg-type]


def test_inputs_exclude_input_shape_and_batch(tmp_path) -> None:
    one = [{"name": "x", "dtype": "float32", "shape": [1, 4]}]
    for kw in ({"input_shape": (1, 4)}, {"batch": 8}):
        with pytest.raises(ValueError, match="batch included"):
            BenchSpec(tmp_path / "m.onnx", "onnxruntime", 1, inputs=one, **kw)  # type: ignore[arg-type]


def test_inputs_go_through_the_json_spec(tmp_path) -> None:
    spec = BenchSpec(tmp_path / "m.onnx", "onnxruntime", 1,
                     inputs=[{"name": "sr", "dtype": "int64", "value": 16000},  # type: ignore[arg-type]
                             {"name": "x", "dtype": "float32", "shape": (1, 4)}])
    assert isinstance(spec.inputs, tuple)
    assert spec.to_dict()["inputs"] == [{"name": "sr", "dtype": "int64", "value": 16000},
                                        {"name": "x", "dtype": "float32", "shape": [1, 4]}]


def test_tflite_inputs_follow_forward_order(tmp_path) -> None:
    """LiteRT-Torch names the inputs args_0, args_1, ... in forward's order (and narrows
    int64 ids to int32): bench inputs under the model's own names go by that order."""
    torch = pytest.importorskip("torch")
    litert_torch = pytest.importorskip("litert_torch")

    class Tagger(torch.nn.Module):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.emb, self.lin = torch.nn.Embedding(VOCAB, 8), torch.nn.Linear(64, 8)

        def forward(self, chunk, ids, state):  # type: ignore[no-untyped-def]
            return self.lin(chunk) + self.emb(ids).mean(1) + state.sum(0), state * 2

    example = (torch.randn(1, 64), torch.randint(0, VOCAB, (1, SEQ)), torch.zeros(2, 1, 8))
    path = tmp_path / "tagger.tflite"
    litert_torch.convert(Tagger().eval(), example).export(str(path))
    inputs = ({"name": "chunk", "shape": [1, 64], "dtype": "float32"},
              {**TOKEN_INPUTS[0], "low": VOCAB - 1},  # the last id only: both ends included
              {"name": "state", "dtype": "float32", "value": 0.0})
    result = _bench(path, "tflite", inputs)
    assert _fed(result) == {"args_0": ([1, 64], "float32"), "args_1": ([1, SEQ], "int32"),
                            "args_2": ([2, 1, 8], "float32")}
    with pytest.raises(BenchError, match="index out of bounds") as exc:
        _bench(path, "tflite", (inputs[0], {**inputs[1], "low": VOCAB, "high": VOCAB}, inputs[2]))
    assert "\n" not in str(exc.value)
    with pytest.raises(BenchError, match="has 3 inputs .* give one per input, in forward"):
        _bench(path, "tflite", inputs[:2])
    with pytest.raises(BenchError, match=r"'ids' \(the model's args_0\) has shape \[1, 12\]"):
        _bench(path, "tflite", (inputs[1], inputs[0], inputs[2]))
