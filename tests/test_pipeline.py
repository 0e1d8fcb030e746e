"""The whole pipeline, end to end, on a reduced config with the real runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekd import BenchConfig, BuildConfig, DistillConfig, PruneConfig, TrainConfig
from edgekd.common.cache import sha256_file
from edgekd.pipeline.run import build

QUICK = BuildConfig(
    teacher=TrainConfig(epochs=3), student=TrainConfig(epochs=3, lr=3e-3),
    distill=DistillConfig(epochs=3), prune=PruneConfig(sparsity=0.5, finetune_epochs=1),
    bench=BenchConfig(warmup=3, runs=20), min_agreement=0.9,
)
ARTIFACT_KEYS = {"path", "format", "precision", "runtime", "size_bytes", "size_gzip_bytes",
                 "sha256", "accuracy", "top1_agreement", "latency_ms", "memory", "placement",
                 "latency_samples_ms", "load_ms", "first_inference_ms"}


@pytest.fixture(scope="module")
def pi_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("build")
    steps: list[str] = []
    result = build("raspberrypi", out=root, config=QUICK, on_step=lambda n, d: steps.append(n))
    assert "teacher" in steps and "quantize" in steps
    return root, result.report


@pytest.mark.slow
def test_report_contract(pi_build) -> None:
    root, report = pi_build
    out = root / "raspberrypi"
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert report["target"] == "raspberrypi"
    assert report["input"]["shape"] == [1, 1, 8, 8] and report["input"]["dtype"] == "float32"
    assert {"scale", "mean", "std"} <= set(report["input"]["preprocessing"])
    assert report["dataset"]["splits"]["test"] > 0 and report["dataset"]["seed"] == 0
    stages = {s["name"]: s for s in report["stages"]}
    assert list(stages) == ["teacher", "student_scratch", "student_distilled", "student_pruned"]
    for s in stages.values():
        assert {"params", "nonzero_params", "accuracy"} <= set(s)
        assert 0.5 < s["accuracy"] <= 1.0
    distilled = stages["student_distilled"]
    assert distilled["pairs"] == [["2", "5"]]  # attention transfer on the automatic pair
    assert distilled["attention_weight"] > 0
    pruned = stages["student_pruned"]
    assert pruned["nonzero_params"] < 0.6 * pruned["params"]
    assert report["quantization"]["method"] == "minmax"
    assert report["quantization"]["int8_accuracy"] is not None  # judged on calibration labels
    conditions = report["robustness"]["conditions"]
    assert conditions and all("student_int8.onnx" in c["accuracy"] for c in conditions)
    assert stages["teacher"]["params"] >= 20 * pruned["params"]

    kinds = {(a["format"], a["precision"]) for a in report["artifacts"]}
    assert kinds == {("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32"), ("onnx", "int8")}
    for a in report["artifacts"]:
        assert set(a) >= ARTIFACT_KEYS
        path = out / a["path"]
        assert path.stat().st_size == a["size_bytes"]
        assert sha256_file(path) == a["sha256"]
        assert a["top1_agreement"] >= QUICK.min_agreement
        lat = a["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"]
        assert lat["p50_ci95"][0] <= lat["p50"] <= lat["p50_ci95"][1]
        assert a["memory"]["peak_rss_mb"] > 10 and a["memory"]["model_rss_mb"] > 0
        assert a["placement"]["quantized"] == (a["precision"] == "int8")
        assert a["placement"]["not_as_intended"] == []
    by = {(a["format"], a["precision"]): a for a in report["artifacts"]}
    for fmt in ("tflite", "onnx"):
        assert by[(fmt, "fp32")]["size_bytes"] >= 3 * by[(fmt, "int8")]["size_bytes"]


@pytest.mark.slow
def test_payoff_references_and_budget(pi_build) -> None:
    root, report = pi_build
    refs = {(r["role"], r["runtime"], r["precision"]) for r in report["references"]}
    assert refs == {(role, rt, "fp32") for role in ("dense", "teacher")
                    for rt in ("tflite", "onnxruntime")}
    assert all((root / "raspberrypi" / "reference" / r["path"]).is_file()
               for r in report["references"])
    steps = {(p["runtime"], p["step"]) for p in report["payoff"]}
    assert steps == {(rt, st) for rt in ("tflite", "onnxruntime")
                     for st in ("int8", "pruning", "teacher")}
    assert {r["runtime"] for r in report["headline"]["rows"]} == {"tflite", "onnxruntime"}
    for p in report["payoff"]:
        assert p["verdict"] in ("faster", "slower", "no measurable change")
        if p["step"] == "pruning":  # same dense kernels: gzip shrinks, the file does not
            assert p["gzip_size_ratio"] > 1.3 and 0.98 < p["size_ratio"] < 1.02
        shipped = next(a for a in report["artifacts"] if a["path"] == p["candidate"])
        if p["verdict"] == "slower" and shipped.get("shipped", True):
            assert any(p["detail"] in f for f in report["flags"])
    checks = report["budget"]["checks"]  # the raspberrypi target file has a [budget]
    assert {c["budget"] for c in checks} >= {"max_size_kb", "max_p95_ms", "max_peak_rss_mb"}


@pytest.mark.slow
def test_manifest_and_markdown(pi_build) -> None:
    root, report = pi_build
    out = root / "raspberrypi"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["versions"]["torch"].startswith("2.13")
    assert manifest["versions"]["onnxruntime"] and manifest["versions"]["ai-edge-litert"]
    assert manifest["seeds"]["build"] == 0
    assert BuildConfig.from_dict(manifest["config"]) == QUICK
    for a in report["artifacts"]:
        assert manifest["sha256"][a["path"]] == a["sha256"]
    md = (out / "report.md").read_text()
    assert "| teacher |" in md and "student_int8.tflite" in md
    assert "## Does each step pay off?" in md and "## What ran where" in md
    html = (out / "report.html").read_text()
    assert 'id="plot-accuracy-size"' in html and 'id="plot-latency"' in html
    # Nothing left over from staging; the teacher is cached for the next build.
    assert sorted(p.name for p in root.iterdir()) == [".cache", "raspberrypi"]
    stages = root / ".cache" / "stages"
    for name in ("teacher", "student_scratch", "student_distilled", "student_pruned", "int8"):
        assert len(list(stages.glob(f"{name}-*"))) == 1, name
    assert not list(stages.glob(".*"))  # no half-written entry


@pytest.mark.slow
def test_second_build_reuses_teacher_and_openvino_target(pi_build) -> None:
    root, first = pi_build
    steps: dict[str, str] = {}
    result = build("intel-cpu", out=root, config=QUICK,
                   on_step=lambda n, d: steps.__setitem__(n, d))
    for name in ("teacher", "student_scratch", "student_distilled", "student_pruned"):
        assert "(cached, " in steps[name], name  # every training stage from the stage cache
    report = result.report
    assert report["stages"][0]["accuracy"] == first["stages"][0]["accuracy"]
    arts = {a["precision"]: a for a in report["artifacts"]}
    assert {a["format"] for a in report["artifacts"]} == {"openvino"}
    assert set(arts) == {"fp32", "int8"}
    out = root / "intel-cpu"
    assert (out / "student_int8.xml").is_file() and (out / "student_int8.bin").is_file()
    # INT8 weights are >= 3x smaller; the IR's .xml is larger (see test_backends).
    bins = [(out / f"student_{p}.bin").stat().st_size for p in ("fp32", "int8")]
    assert bins[0] >= 3 * bins[1]
    assert (root / "raspberrypi" / "report.json").is_file()  # the other target is untouched
