"""The report model: assembled in one place, checked by its schema, strict JSON (no NaN), read
back by ``edgekd check`` without tracebacks, and rendered alike by Markdown, HTML and the CLI.

The measured values below are a real ``edgekd build --target x86-cpu`` build's (latency
samples cut to four); every report.json a build writes in the other tests is checked against
the schema at the end of the session (tests/conftest.py).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from edgekd.cli import display
from edgekd.cli.commands import app
from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset
from edgekd.report import format as fmt
from edgekd.report import model, schema
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.report.model import SCHEMA_VERSION, Report, assemble, write_json
from edgekd.report.reading import load_report
from edgekd.settings.config import BuildConfig
from edgekd.settings.targets import load_target

_HOW = ("ONNX Runtime profiling: the kernels that ran, after graph optimisation, with their "
        "execution provider")


def _measured(p50: float, p95: float, ci: list[float], quantized: bool, nodes: int,
              samples: list[float]) -> dict[str, Any]:
    return {"latency_ms": {"p50": p50, "p90": p50 * 1.02, "p95": p95, "p99": p95 * 1.7,
                           "mean": 0.028, "std": 0.39, "min": p50 * 0.97, "max": 12.3,
                           "p50_ci95": ci},
            "memory": {"baseline_rss_mb": 33.12, "model_rss_mb": 30.86, "peak_rss_mb": 64.25},
            "load_ms": 9.722, "first_inference_ms": 0.1322, "threads": 2, "runs": 33327,
            "placement": {"quantized": quantized, "nodes": nodes, "not_as_intended": [],
                          "how": _HOW},
            "device": {"hostname": "vm", "machine": "x86_64", "cpu": "AMD EPYC", "model": None,
                       "cpus": 2}, "latency_samples_ms": samples}


def _file(path: str, precision: str, size: int, gz: int, sha: str) -> dict[str, Any]:
    return {"path": path, "files": [path], "format": "onnx", "precision": precision,
            "runtime": "onnxruntime", "runtime_version": "1.32.0", "size_bytes": size,
            "size_gzip_bytes": gz, "sha256": sha * 64}


ARTIFACTS = [
    {**_file("student_fp32.onnx", "fp32", 129872, 70624, "b"),
     "accuracy": 0.89375, "top1_agreement": 1.0, "max_abs_diff": 2e-06, "max_rel_error": 0.0,
     "cosine_min": 1.0, "cosine_mean": 1.0,
     **_measured(0.00926, 0.0098, [0.00926, 0.00926], False, 6,
                 [0.01256, 0.00939, 0.00943, 0.0164])},
    {**_file("student_int8.onnx", "int8", 40310, 25231, "5"),
     "accuracy": 0.89375, "top1_agreement": 0.99375, "max_abs_diff": 0.563937,
     "max_rel_error": 0.145963, "cosine_min": 0.989463, "cosine_mean": 0.999127,
     **_measured(0.01391, 0.0264, [0.0139, 0.01391], True, 9,
                 [0.01643, 0.01433, 0.01429, 0.01413])},
]
REFERENCES = [{**_file("dense_fp32.onnx", "fp32", 129872, 118089, "1"),
               **_measured(0.00947, 0.01414, [0.00947, 0.00947], False, 6,
                           [0.0119, 0.00971, 0.00967, 0.00968])}]
STAGES = [
    {"name": "teacher", "params": 900042, "nonzero_params": 900042, "accuracy": 0.9875,
     "cached": False, "trained": True},
    {"name": "student_scratch", "params": 31574, "nonzero_params": 31574, "accuracy": 0.7125},
    {"name": "student_distilled", "params": 31574, "nonzero_params": 31574, "accuracy": 0.875,
     "temperature": 4.0, "pairs": [["2", "5"]]},
    {"name": "student_pruned", "params": 31574, "nonzero_params": 15876, "accuracy": 0.89375,
     "method": "unstructured", "schedule": "gradual", "target_sparsity": 0.5,
     "weight_sparsity": 0.5, "layers": [{"layer": "0", "type": "Conv2d", "before": [4, 1, 3, 3],
                                         "after": [4, 1, 3, 3], "zero_fraction": 0.1111}]},
]
QUANTIZATION = {
    "path": "student_int8.onnx", "method": "minmax", "float_layers": [], "fp32_accuracy": 0.895,
    "int8_accuracy": 0.895, "steps": [{"float_layers": [], "accuracy": 0.895}], "cached": False,
    "by_runtime": {"onnxruntime": {"tool": "ONNX Runtime quantize_static (QDQ)",
                                   "when": "before export", "applies": ["method", "per_channel"],
                                   "ignored": []}}}
ORDER = ["schema_version", "edgekd_version", "target", "target_description", "input", "inputs",
         "outputs", "dataset",
         "stages", "summary", "artifacts", "bench", "host", "build_seconds", "task", "model",
         "references", "payoff", "quantization", "flags", "budget"]


def _assemble(digits: Dataset, **changes: Any) -> Report:
    args: dict[str, Any] = {
        "target": load_target("x86-cpu"), "data": digits, "config": BuildConfig(),
        "task": "classification",
        "model": {"teacher": "edgekd.train.models:teacher_cnn",
                  "student": "edgekd.train.models:student_cnn"},
        "stages": copy.deepcopy(STAGES), "artifacts": copy.deepcopy(ARTIFACTS),
        "references": copy.deepcopy(REFERENCES), "quantization": copy.deepcopy(QUANTIZATION),
        "robustness": None, "threads": 2, "output_shapes": [[1, 10]], "build_seconds": 69.64,
        "budget": {"source": "target x86-cpu", "limits": {"max_size_kb": 64, "max_p95_ms": 5}}}
    return assemble(**(args | changes))


@pytest.fixture
def report(digits: Dataset) -> Report:
    return _assemble(digits)


@pytest.fixture(params=["jsonschema", "built-in"])
def validator(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each schema test runs with the jsonschema library and with the built-in fallback."""
    if request.param == "jsonschema":
        pytest.importorskip("jsonschema")
    else:
        monkeypatch.setattr(schema, "_has_jsonschema", lambda: False)
    yield request.param


def test_assemble_computes_summary_payoff_flags_and_budget(report: Report) -> None:
    assert list(report) == ORDER and report["schema_version"] == SCHEMA_VERSION == "1.4"
    assert report["summary"] == {"compression": 28.51, "scratch_accuracy": 0.7125,
                                 "distilled_accuracy": 0.875, "distillation_gain_points": 16.25}
    int8 = next(p for p in report["payoff"] if p["step"] == "int8")
    assert int8["verdict"] == "slower" and int8["speedup"] == pytest.approx(0.666, abs=1e-3)
    assert report["flags"][0].startswith("SLOWER: INT8 vs FP32 on onnxruntime: 1.50× slower")
    checks = {c["budget"]: c for c in report["budget"]["checks"]}
    assert checks["max_size_kb"]["measured"] == pytest.approx(40310 / 1024, abs=1e-4)
    assert all(c["ok"] for c in checks.values()) and report["bench"]["threads"] == 2
    assert report["input"]["output"] == {"name": "logits", "shape": [1, 10], "dtype": "float32"}
    assert "nulls" not in report


def test_schema_accepts_the_report_as_written(report: Report, tmp_path: Path,
                                              validator: str) -> None:
    write_json(tmp_path / "report.json", report)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == report and schema.validate_report(on_disk) == []
    assert load_report(tmp_path / "report.json") == on_disk


def _broken(report: Report, change: str) -> dict[str, Any]:
    r: dict[str, Any] = copy.deepcopy(dict(report))
    int8 = r["artifacts"][1]
    if change == "no artifacts":
        del r["artifacts"]
    elif change == "p95 null":
        int8["latency_ms"]["p95"] = None
    elif change == "size as string":
        int8["size_bytes"] = "40310"
    elif change == "artifact without path":
        del int8["path"]
    elif change == "unknown artifact key":
        int8["latency"] = 1.0
    elif change == "bad by_runtime":
        r["quantization"]["by_runtime"]["onnxruntime"]["when"] = "later"
    return r


BROKEN = {
    "no artifacts": "artifacts: missing",
    "p95 null": "artifacts[1].latency_ms.p95: must be a number, got null",
    "size as string": "artifacts[1].size_bytes: must be an integer, got a string ('40310')",
    "artifact without path": "artifacts[1].path: missing",
    "unknown artifact key": "artifacts[1]: unknown key(s) 'latency'",
    "bad by_runtime": 'quantization.by_runtime.onnxruntime.when: must be one of "before export", '
                      '"during conversion", got a string (\'later\')',
}


@pytest.mark.parametrize("change", list(BROKEN))
def test_schema_rejects_a_broken_report(report: Report, change: str, validator: str) -> None:
    assert schema.validate_report(_broken(report, change)) == [BROKEN[change]]


def test_non_finite_numbers_become_null_and_say_why(digits: Dataset, tmp_path: Path) -> None:
    arts = copy.deepcopy(ARTIFACTS)
    arts[1] |= {"cosine_min": math.nan, "max_abs_diff": math.inf}
    report = _assemble(digits, artifacts=arts)
    assert report["artifacts"][1]["cosine_min"] is None
    assert report["nulls"] == [
        {"field": "artifacts[1].max_abs_diff", "why": "not finite (inf)"},
        {"field": "artifacts[1].cosine_min", "why": "not finite (nan)"}]
    path = tmp_path / "report.json"
    write_json(path, report)

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in report.json")

    assert json.loads(path.read_text(), parse_constant=refuse) == report
    assert schema.validate_report(report) == []
    md, page = render_markdown(dict(report)), render_html(dict(report))
    assert "<code>artifacts\\[1\\].cosine_min</code>: not finite (nan)" in md
    assert "<td>artifacts[1].cosine_min</td><td>not finite (nan)</td>" in page


def test_write_json_maps_nan_anywhere(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    write_json(path, {"benchmarks": [{"latency_ms": {"p50": -math.inf}}], "errors": []})
    data = json.loads(path.read_text())
    assert data["benchmarks"][0]["latency_ms"]["p50"] is None
    assert data["nulls"] == [{"field": "benchmarks[0].latency_ms.p50",
                              "why": "not finite (-inf)"}]


def _check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["check", str(path)])
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("change", ["p95 null", "size as string", "artifact without path"])
@pytest.mark.parametrize("versioned", [True, False], ids=["schema 1.0", "older report"])
def test_check_refuses_a_malformed_report_in_one_line(report: Report, tmp_path: Path,
                                                      change: str, versioned: bool,
                                                      validator: str) -> None:
    data = _broken(report, change)
    if not versioned:  # as written before schema 1.0: the gate checks what it reads
        del data["schema_version"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(data))
    code, out = _check(path)
    assert code == 2 and "Traceback" not in out, out
    assert out.startswith(f"error: {path}: not a valid edgekd report: {BROKEN[change]}"), out


def test_check_names_why_a_field_is_null(report: Report, tmp_path: Path) -> None:
    data: dict[str, Any] = copy.deepcopy(dict(report))
    data["artifacts"][1]["latency_ms"]["p95"] = math.nan
    path = tmp_path / "nan.json"
    write_json(path, data)
    code, out = _check(path)
    assert code == 2 and ("artifacts[1].latency_ms.p95: must be a number, got null "
                          "(written as null: not finite (nan))") in out, out


@pytest.mark.parametrize(("text", "says"), [
    ('{"benchmarks": [{}]}', "not a valid edgekd bench --json file: benchmarks[0].artifact: "
                             "missing"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"artifacts": ' + "[" * 900 + "]" * 900 + "}", "artifacts[0]: must be an object, got an "
                                                    "array"),
    ('{"artifacts": "all"}', "artifacts: must be an array, got a string ('all')"),
    ("[]", "not an edgekd report (no 'artifacts' or 'benchmarks')"),
])
def test_check_refuses_malformed_files(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "odd.json"
    path.write_text(text)
    with pytest.raises(UsageError, match="^" + re.escape(str(path))) as info:
        load_report(path)
    assert says in str(info.value) and "\n" not in str(info.value)
    assert _check(path)[0] == 2


def test_bench_json_is_still_a_report(report: Report, tmp_path: Path) -> None:
    entry = {"artifact": "student_int8.onnx", "runtime": "onnxruntime",
             "runtime_version": "1.32.0", "file_size_bytes": 40310,
             "latency_ms": report["artifacts"][1]["latency_ms"],
             "memory": report["artifacts"][1]["memory"], "placement": {"quantized": True}}
    path = tmp_path / "bench.json"
    write_json(path, {"benchmarks": [entry, {**entry, "remote": "pi@pi"}], "errors": []})
    (art,) = load_report(path)["artifacts"]
    assert art["path"] == "student_int8.onnx" and art["precision"] == "int8"
    budget = tmp_path / "b.toml"
    budget.write_text("[budget]\nmax_size_kb = 64\nmax_p95_ms = 1\n")
    result = CliRunner().invoke(app, ["check", str(path), "--budget", str(budget)])
    assert result.exit_code == 0, result.output


def test_fallback_knows_every_keyword_the_schema_uses() -> None:
    """The built-in validator must not silently skip a keyword someone adds to the schema."""
    def keywords(node: Any, named: bool = False) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if not named:
                    yield key
                yield from keywords(value, named=key in ("properties", "$defs") and not named)
        elif isinstance(node, list):
            for item in node:
                yield from keywords(item)

    assert set(keywords(schema.report_schema())) <= schema.KEYWORDS


@pytest.mark.parametrize(("typed", "where"), [
    (model.Report, ""), (model.Artifact, "artifact"), (model.Reference, "reference"),
    (model.RemoteMeasurement, "remote_measurement"), (model.Latency, "latency"),
    (model.Memory, "memory"), (model.Quantization, "quantization"),
    (model.RuntimeQuantizer, "runtime_quantizer"), (model.PayoffRow, "payoff_row"),
    (model.BudgetCheck, "budget_check"), (model.Input, "input"), (model.NullNote, "null_note"),
    (model.Stage, "stage")])
def test_typed_model_and_schema_name_the_same_keys(typed: Any, where: str) -> None:
    part = schema.report_schema()
    part = part["$defs"][where] if where else part
    assert typed.__required_keys__ == set(part["required"])
    if part["additionalProperties"] is False:  # a closed object: nothing else either
        assert typed.__required_keys__ | typed.__optional_keys__ == set(part["properties"])


def _summary_text(report: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> str:
    console = Console(width=250, record=True, highlight=False)
    monkeypatch.setattr(display, "console", console)
    display.print_summary(report, Path("out"))
    return console.export_text()


def test_renderers_print_the_same_number_the_same_way(
        report: Report, monkeypatch: pytest.MonkeyPatch) -> None:
    r: dict[str, Any] = dict(report)
    md, page, cli = render_markdown(r), render_html(r), _summary_text(r, monkeypatch)
    same = ["89.38 %", "99.38 %", "13.9 µs", "26.4 µs", "126.8", "39.4", "28.5×", "+16.25",
            "69.6 s"]
    for text in same:
        assert text in md and text in page and text in cli, text
    assert "64.2" in md and "64.2" in page and "64.2" in cli  # peak RSS, MiB
    assert "onnxruntime 1.32.0" in md and "onnxruntime 1.32.0" in page
    # A model that is not a classifier: the CLI and both pages show its cosine alike.
    r["task"] = "regression"
    assert fmt.cosine(0.989463) == "0.98946"
    assert all("0.98946" in out for out in (render_markdown(r), render_html(r),
                                            _summary_text(r, monkeypatch)))


@pytest.mark.parametrize(("value", "text"), [
    (None, "–"), (math.nan, "–"), ("12", "–"), (True, "–"), (0.89375, "89.38 %")])
def test_formatters_never_raise(value: Any, text: str) -> None:
    assert fmt.percent(value) == text
    assert fmt.version("2026.4.1-22982-e213a147257-releases/2026/4") == "2026.4.1"
    assert fmt.version("ai-edge-litert 2.3.0") == "ai-edge-litert 2.3.0"


def _compression(report: Report) -> dict[str, Any]:
    """The report with a two-step mixed-precision search, the settings recorded, and a
    payoff row from a device."""
    r: dict[str, Any] = copy.deepcopy(dict(report))
    r["quantization"] |= {"float_layers": ["/0/Conv"], "fp32_accuracy": 0.895,
                          "int8_accuracy": 0.89, "steps": [
                              {"float_layers": [], "accuracy": 0.86},
                              {"float_layers": ["/0/Conv"], "accuracy": 0.89}],
                          "settings": {"per_channel": True, "activation_type": "uint8",
                                       "weight_type": "int8", "reduce_range": True,
                                       "equalize": False, "calibration_samples": 200,
                                       "max_accuracy_drop": 1.0}}
    r["payoff"].append({**next(p for p in r["payoff"] if p["step"] == "int8"),
                        "where": "pi@pi", "speedup": 2.1, "verdict": "faster"})
    return r


def test_markdown_says_how_int8_was_made_and_what_it_gave(report: Report) -> None:
    md = render_markdown(_compression(report))
    section = md[md.index("## Quantization"):md.index("## Latency")]
    assert "calibrated with <code>minmax</code> on the calibration split (" in section
    assert ("Settings: per-channel weights, uint8 activations, int8 weights (7-bit: "
            "reduce_range), no equalisation, 200 calibration samples, accuracy budget 1.0 "
            "points.") in section
    assert "| 0 | none | 86.00 % | -3.50 |" in section  # every layer INT8: over budget
    assert "| 1 | <code>/0/Conv</code> | 89.00 % | -0.50 |" in section
    assert "Excluded from INT8 (kept in float): <code>/0/Conv</code>; INT8 89.00 %." in section
    row = next(line for line in section.splitlines() if line.startswith("| onnxruntime |"))
    assert "89.38 % → 89.38 %" in row and "126.8 → 39.4" in row and "9.26 µs → 13.9 µs" in row
    assert "1.50× slower (host); 2.10× faster (pi@pi)" in row
    # without the settings (reports so far): where to find them, not a guess
    plain = render_markdown(dict(report))
    assert "in manifest.json (config.quant)" in plain and "Settings:" not in plain
    assert "no mixed-precision search was needed and no layer is kept in float" in plain


def test_markdown_says_what_pruning_cost_and_removed(report: Report) -> None:
    md = render_markdown(dict(report))
    assert md.index("## Pruning") < md.index("## Quantization")  # the order they ran in
    assert ("Test accuracy 87.50 % before pruning (student_distilled) → 89.38 % after "
            "pruning and fine-tuning (student_pruned), +1.88 points; non-zero parameters "
            "31,574 → 15,876") in md
    r: dict[str, Any] = copy.deepcopy(dict(report))
    pruned = r["stages"][-1]
    pruned |= {"method": "structured", "schedule": "oneshot", "params": 15200,
               "params_before": 31574, "macs_before": 60000, "macs_after": 30000,
               "layers": [{"layer": "0", "type": "Conv2d", "before": [8, 1, 3, 3],
                           "after": [4, 1, 3, 3], "params": 36, "zeros": 0,
                           "zero_fraction": 0.0}]}
    md, page = render_markdown(r), render_html(r)
    assert "| <code>0</code> | Conv2d | 4 → 4 |" not in md
    assert "| <code>0</code> | Conv2d | 8 → 4 | 8×1×3×3 → 4×1×3×3 |" in md
    assert "parameters 31,574 → 15,200; pruned once, then fine-tuned" in md
    assert '<td class="num">8 → 4</td>' in page and "<th>channels before → after</th>" in page


def test_finished_model_says_pruning_was_not_applied(report: Report) -> None:
    r: dict[str, Any] = dict(report) | {"stages": []}
    assert "## Pruning\n\nNot applied: a finished model" in render_markdown(r)
    assert "<h2>Pruning</h2><p>Not applied: a finished model" in render_html(r)


def test_schema_takes_the_resolved_quant_settings(report: Report) -> None:
    r = _compression(report)
    assert schema.validate_report(r) == []
    r["quantization"]["settings"]["activation_type"] = "auto"  # unresolved: not a report value
    assert any("activation_type" in e for e in schema.validate_report(r))


@pytest.mark.slow
def test_a_build_records_its_quant_settings_resolved(tmp_path: Path) -> None:
    """A real build on a finished student: report.json holds ``quant.*`` as used (``auto``
    activations and ``reduce_range`` resolved for an x86 target, the samples calibrated on),
    where manifest.json holds them as written; report.md and report.html say them."""
    from edgekd.pipeline.api import load
    from edgekd.pipeline.run import build
    from edgekd.settings.targets import Target
    from tests.test_bad_input import finished

    project = load(finished(tmp_path / "p"), cwd=tmp_path / "p")
    # ship = "fp32": no INT8 variant is tried, so student_int8.onnx is the build's own (a
    # variant that replaced it would be described with its settings instead).
    target = Target("ort", "ONNX Runtime on this host", ("onnxruntime",), threads=1,
                    ship="fp32")
    out = build(target, out=tmp_path / "build", project=project).out_dir
    report = json.loads((out / "report.json").read_text())
    written = json.loads((out / "manifest.json").read_text())["config"]["quant"]
    assert written["activation_type"] == "auto" and written["reduce_range"] is None
    calibrated = min(written["calibration_samples"], report["dataset"]["splits"]["calibration"])
    assert report["schema_version"] == "1.4"
    assert report["quantization"]["settings"] == {
        "calibration_samples": calibrated, "per_channel": True, "activation_type": "uint8",
        "weight_type": "int8", "reduce_range": True, "percentile": written["percentile"],
        "equalize": False, "max_accuracy_drop": written["max_accuracy_drop"]}
    said = (f"Settings: per-channel weights, uint8 activations, int8 weights (7-bit: "
            f"reduce_range), no equalisation, {calibrated} calibration samples, accuracy budget "
            f"{written['max_accuracy_drop']} points.")
    assert said in (out / "report.md").read_text()
    assert said in (out / "report.html").read_text()
    assert "manifest.json (config.quant)" not in (out / "report.md").read_text()


def test_reports_say_the_int8_recipe_and_what_ships_fp32(report: Report) -> None:
    """Schema 1.4: the recipe, why, the search's trials and quant.keep_float / skip_int8 sit
    at the top of the quantization section, and report.md / report.html say them in a line."""
    r = _compression(report)
    r["quantization"] |= {
        "recipe": "transformer", "recipe_reason": "transformer graph (MatMul + Softmax)",
        "search_figure": "cosine", "keep_float": [], "skip_int8": ["openvino"],
        "search": [{"recipe": "transformer", "float_layers": [], "figure": "cosine",
                    "value": 0.97, "mean": 0.99, "holds": False},
                   {"recipe": "dynamic", "float_layers": [], "figure": "cosine",
                    "value": 0.995, "mean": 0.999, "holds": True}]}
    assert schema.validate_report(r) == []
    said = ("INT8 recipe: transformer (transformer graph (MatMul + Softmax)); shipped FP32 "
            "only: openvino.")
    md = render_markdown(r)
    assert said in md[md.index("## Quantization"):md.index("## Latency")]
    assert said in render_html(r)
    bad = copy.deepcopy(r)
    bad["quantization"]["recipe"] = "int4"
    assert any("recipe" in e for e in schema.validate_report(bad))
    bad["quantization"] |= {"recipe": "static", "search": [{"recipe": "static"}]}
    assert schema.validate_report(bad)  # a trial names its figure, value and verdict
    assert "INT8 recipe:" not in render_markdown(dict(report))  # reports before 1.4


def test_a_dynamic_int8_is_described_as_dynamic(report: Report) -> None:
    """quant.recipe = "dynamic" makes MatMulInteger with run-time activation ranges: the
    section says so, not "static" and calibrated (found by the user test)."""
    r = _compression(report)
    r["quantization"] |= {"recipe": "dynamic", "recipe_reason": 'quant.recipe = "dynamic"'}
    for text in (render_markdown(r), render_html(r)):
        assert "Quantization: dynamic INT8" in text and "quantize_dynamic" in text
        assert "Quantization: static INT8" not in text


@pytest.mark.slow
def test_a_transformer_build_reports_its_int8_recipe(tmp_path: Path) -> None:
    """A real build of a finished tiny BERT (random weights, token ids + mask): report.json
    holds the recipe at the top of its quantization section and validates; report.md and
    report.html say it in one line, with the runtime that ships FP32 only."""
    pytest.importorskip("transformers")
    from tests.test_transformer_int8 import _build, _project, _report

    config = _project(tmp_path / "p", "encoder", labels=False,
                      quant='skip_int8 = ["openvino"]\n')
    done = _build(config, tmp_path / "out", "--set", "min_cosine=0.9")
    assert done.returncode == 0, done.stderr[-3000:]
    report = _report(tmp_path / "out")
    q = report["quantization"]
    assert report["schema_version"] == "1.4" and schema.validate_report(report) == []
    assert q["recipe"] in ("transformer", "dynamic") and q["search_figure"] == "cosine"
    assert q["skip_int8"] == ["openvino"] and "recipe" not in q["settings"]
    assert q["search"] and q["search"][-1]["holds"]
    md = (tmp_path / "out" / "x86-cpu" / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("INT8 recipe: "))
    assert line.startswith(f"INT8 recipe: {q['recipe']} (")
    assert line.endswith("; shipped FP32 only: openvino.")
    assert "INT8 recipe: " in (tmp_path / "out" / "x86-cpu" / "report.html").read_text()
