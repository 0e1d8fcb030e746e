"""Payoff verdicts come from a paired measurement: both files timed alternately in one
worker, so load that comes and goes on the machine cannot read as a speed difference."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.measure.bench import BenchSpec, PairSpec, run_pair
from edgekd.measure.payoff import PAIRED, paired_speedup, payoff

SIZE = 192


def matmul_chain(path: Path, depth: int) -> Path:
    """[1, SIZE] -> ``depth`` MatMuls by SIZE x SIZE weights: ``depth`` times the work."""
    rng = np.random.default_rng(depth)
    nodes, inits, prev = [], [], "x"
    for i in range(depth):
        w = (rng.standard_normal((SIZE, SIZE)) / np.sqrt(SIZE)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == depth - 1 else f"h{i}"
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, SIZE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SIZE])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _spec(path: Path) -> BenchSpec:
    return BenchSpec(path, "onnxruntime", threads=1, warmup=20, runs=10)


def test_a_pair_of_different_cost_reads_faster_and_slower(tmp_path: Path) -> None:
    light = matmul_chain(tmp_path / "light.onnx", 1)
    heavy = matmul_chain(tmp_path / "heavy.onnx", 8)
    result = run_pair(PairSpec(_spec(heavy), _spec(light), seconds=1.0))
    assert result["pair"] == ["heavy.onnx", "light.onnx"] and result["rounds"] >= 10
    assert len(result["round_p50_ms"]) == result["rounds"]
    faster = paired_speedup(result)
    assert faster["verdict"] == "faster" and faster["speedup"] > 2
    lo, hi = faster["speedup_ci95"]
    assert 1.05 < lo <= faster["speedup"] <= hi
    slower = paired_speedup(run_pair(PairSpec(_spec(light), _spec(heavy), seconds=1.0)))
    assert slower["verdict"] == "slower" and slower["speedup"] < 0.5


BUSY = "while True:\n    pass\n"


def test_identical_files_show_no_change_while_load_comes_and_goes(tmp_path: Path) -> None:
    """Two byte-identical models, measured while CPU-bound processes are stopped and
    started again and again (SIGSTOP / SIGCONT): no measurable change."""
    a = matmul_chain(tmp_path / "a.onnx", 4)
    b = tmp_path / "b.onnx"
    shutil.copyfile(a, b)
    assert a.read_bytes() == b.read_bytes()
    busy = [subprocess.Popen([sys.executable, "-c", BUSY])
            for _ in range(min(4, os.cpu_count() or 1))]
    got: dict[str, Any] = {}

    def measure() -> None:
        try:
            got["result"] = run_pair(PairSpec(_spec(a), _spec(b), seconds=2.0), timeout_s=300)
        except Exception as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            got["error"] = exc

    worker = threading.Thread(target=measure)
    try:
        worker.start()
        running, toggles = True, 0
        while worker.is_alive():  # the load flips every ~0.1 s for as long as it measures
            worker.join(timeout=0.1)
            running = not running
            toggles += 1
            for p in busy:
                p.send_signal(signal.SIGCONT if running else signal.SIGSTOP)
    finally:
        for p in busy:
            p.send_signal(signal.SIGCONT)
            p.kill()
            p.wait(timeout=30)
        worker.join(timeout=300)
    if "error" in got:
        raise got["error"]
    assert toggles >= 2  # the load did change during the measurement
    same = paired_speedup(got["result"])
    assert same["verdict"] == "no measurable change", same
    lo, hi = same["speedup_ci95"]
    assert lo <= 1.05 and hi >= 1 / 1.05


def _entry(path: str, precision: str, p50: float, ci: list[float]) -> dict[str, Any]:
    return {"path": path, "runtime": "onnxruntime", "precision": precision,
            "size_bytes": 1000, "size_gzip_bytes": 500,
            "latency_ms": {"p50": p50, "p50_ci95": ci}}


def test_payoff_rows_use_the_paired_rounds_and_say_so() -> None:
    """Separate benches that disagree (the INT8 file "1.5× slower", measured under load)
    lose to the paired rounds, which say INT8 is about 2× faster; the private key goes."""
    fp32 = _entry("student_fp32.onnx", "fp32", 0.010, [0.0099, 0.0101])
    int8 = _entry("student_int8.onnx", "int8", 0.015, [0.0149, 0.0151])
    dense = _entry("reference/dense_fp32.onnx", "fp32", 0.010, [0.0099, 0.0101])
    rounds = [[0.010 + i * 1e-5, 0.005 + i * 0.5e-5] for i in range(20)]
    int8[PAIRED] = {fp32["path"]: {"rounds": 20, "round_p50_ms": rounds}}
    same = [[0.010, 0.010 * (1 + 0.01 * ((-1) ** i))] for i in range(20)]
    fp32[PAIRED] = {dense["path"]: {"rounds": 20, "round_p50_ms": same}}
    rows = {r["step"]: r for r in payoff([fp32, int8], [dense])}
    assert PAIRED not in int8 and PAIRED not in fp32
    q = rows["int8"]
    assert q["verdict"] == "faster" and q["speedup"] == pytest.approx(2.0, rel=0.01)
    assert q["method"] == "paired, 20 alternating rounds in one process" and q["rounds"] == 20
    assert q["speedup_ci95"][0] > 1.05 and "2.00× faster" in q["detail"]
    assert "(95 % CI 2.00–2.00× faster; paired, 20 alternating rounds" in q["detail"]
    assert rows["pruning"]["verdict"] == "no measurable change"
    assert "pruning compressed size only" in rows["pruning"]["detail"]
    json.dumps(rows)  # plain JSON, as report.json holds it


def test_payoff_rows_validate_against_the_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parents[1] / "edgekd" / "report" /
                         "report.schema.json").read_text(encoding="utf-8"))
    fp32 = _entry("student_fp32.onnx", "fp32", 0.010, [0.0099, 0.0101])
    int8 = _entry("student_int8.onnx", "int8", 0.005, [0.0049, 0.0051])
    int8[PAIRED] = {fp32["path"]: {"rounds": 12, "round_p50_ms": [[0.01, 0.005]] * 12}}
    dense = _entry("reference/dense_fp32.onnx", "fp32", 0.010, [0.0099, 0.0101])
    for row in payoff([fp32, int8], [dense]):  # one paired row, one from separate runs
        jsonschema.validate(row, {"$schema": schema["$schema"], "$defs": schema["$defs"],
                                  "$ref": "#/$defs/payoff_row"})


def test_float_matmuls_a_transformer_recipe_keeps_are_not_flagged() -> None:
    """The transformer recipe keeps attention's activation x activation MatMuls in float: in
    its INT8 artifact they are the recipe, not a fallback (a user test saw every transformer
    build flagged); a float Conv, or a MatMul on another provider, still is."""
    from edgekd.measure.payoff import flags

    art = {"path": "student_int8.onnx", "placement": {"not_as_intended": [
        {"node": "attn", "op": "MatMul", "ran": "CPUExecutionProvider, float"},
        {"node": "fused", "op": "FusedMatMul", "ran": "CPUExecutionProvider, float"}]}}
    assert flags([], [art], float_by_design=("MatMul", "FusedMatMul")) == []
    assert len(flags([], [art])) == 1  # a CNN's INT8: every float MatMul is a finding
    conv = {"path": "cnn_int8.onnx", "placement": {"not_as_intended": [
        {"node": "c", "op": "Conv", "ran": "CPUExecutionProvider, float"},
        {"node": "m", "op": "MatMul", "ran": "CPUExecutionProvider (not CUDAExecutionProvider)"}]}}
    (flag,) = flags([], [conv], float_by_design=("MatMul", "FusedMatMul"))
    assert "2 node(s)" in flag
