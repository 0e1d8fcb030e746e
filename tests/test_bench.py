"""Benchmarks run in a child process that never imports torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekd.device.worker import latency_stats
from edgekd.measure.bench import BenchError, BenchSpec, run_bench

TORCH_BLOCKER = (
    "import sys\n"
    "class _NoTorch:\n"
    "    def find_spec(self, name, path=None, target=None):\n"
    "        if name == 'torch' or name.startswith('torch.'):\n"
    "            raise ImportError('torch is not installed on this device')\n"
    "sys.meta_path.insert(0, _NoTorch())\n"
)


def test_bench_reports_ordered_statistics_and_memory(onnx_pair) -> None:
    result = run_bench(BenchSpec(onnx_pair["int8"], "onnxruntime", threads=1, warmup=5,
                                 runs=50))
    lat = result["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["min"] <= lat["mean"] <= lat["max"] and lat["std"] >= 0
    lo, hi = lat["p50_ci95"]
    assert lo <= lat["p50"] <= hi
    assert result["runs"] == 50 and result["threads"] == 1 and len(result["samples_ms"]) == 50
    mem = result["memory"]
    # A Python process with numpy and onnxruntime loaded: tens of MB, nowhere near the ~800 MB
    # of the torch process that launched it (ru_maxrss would report that).
    assert 20 < mem["peak_rss_mb"] < 400
    assert 0 < mem["model_rss_mb"] < mem["peak_rss_mb"]
    assert mem["baseline_rss_mb"] + mem["model_rss_mb"] <= mem["peak_rss_mb"] + 1
    assert result["file_size_bytes"] == onnx_pair["int8"].stat().st_size
    assert result["load_ms"] > 0 and result["first_inference_ms"] > 0
    assert result["placement"]["quantized"] is True
    assert result["placement"]["not_as_intended"] == []


def test_seconds_mode_runs_at_least_that_long(onnx_pair) -> None:
    result = run_bench(BenchSpec(onnx_pair["fp32"], "onnxruntime", threads=1, warmup=0,
                                 runs=None, seconds=0.3))
    assert result["timed_seconds"] >= 0.3 and result["runs"] >= 10
    assert len(result["samples_ms"]) <= 2000


def test_batch_changes_the_input(onnx_pair) -> None:
    one = run_bench(BenchSpec(onnx_pair["fp32"], "onnxruntime", 1, warmup=2, runs=20))
    many = run_bench(BenchSpec(onnx_pair["fp32"], "onnxruntime", 1, warmup=2, runs=20,
                               batch=64))
    assert one["batch"] == 1 and many["batch"] == 64


def test_confidence_interval_of_the_median_covers_it() -> None:
    rng = np.random.default_rng(0)
    stats = latency_stats(rng.lognormal(0, 0.5, 1001))
    lo, hi = stats["p50_ci95"]
    assert lo < stats["p50"] < hi
    assert hi - lo < 0.2  # sqrt(n) order statistics around the median, not the whole range


@pytest.mark.parametrize("content,match", [
    (b"garbage", "could not load broken.onnx"),
])
def test_bench_failure_is_one_clear_line(tmp_path: Path, content: bytes, match: str) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(content)
    with pytest.raises(BenchError, match=match):
        run_bench(BenchSpec(bad, "onnxruntime", 1, 1, 10))


def test_bench_command_never_imports_torch(onnx_pair, tmp_path: Path) -> None:
    """`edgekd bench` must work on a device where torch is not installed at all."""
    out = tmp_path / "r.json"
    script = TORCH_BLOCKER + (
        "from edgekd.cli.commands import app\n"
        f"app([ 'bench', {str(onnx_pair['int8'])!r}, '--runs', '20', '--warmup', '2',"
        f" '--json', {str(out)!r}], standalone_mode=False)\n"
        "import edgekd.device.worker, edgekd.measure.remote\n"
        "import edgekd.settings.budgets, edgekd.settings.targets\n"
        "print([m for m in sys.modules if m.split('.')[0] == 'torch'])\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads(out.read_text())["benchmarks"][0]["runs"] == 20


def test_worker_file_runs_on_its_own(onnx_pair, tmp_path: Path) -> None:
    """The remote path copies only worker.py: it must not need edgekd."""
    from edgekd.measure.bench import WORKER_FILES

    for f in WORKER_FILES:
        (tmp_path / f.name).write_text(f.read_text())
    copy = tmp_path / "worker.py"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(BenchSpec(onnx_pair["int8"], "onnxruntime", 1, 1, 10).to_dict()))
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(TORCH_BLOCKER + TORCH_BLOCKER.replace("'torch'", "'edgekd'")
                       .replace("'torch.'", "'edgekd.'").replace("_NoTorch", "_NoEdgekd"))
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(copy), str(spec)], capture_output=True,
                          text=True, cwd=tmp_path, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runtime"] == "onnxruntime"


def test_missing_runtime_is_named(onnx_pair, tmp_path: Path) -> None:
    from edgekd.measure.bench import WORKER

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(BenchSpec(onnx_pair["int8"], "onnxruntime", 1, 1, 10).to_dict()))
    script = (TORCH_BLOCKER.replace("'torch'", "'onnxruntime'").replace("'torch.'",
              "'onnxruntime.'") + f"sys.argv = ['w', {str(spec)!r}]\n"
              f"sys.path.insert(0, {str(WORKER.parent)!r})\n"
              f"exec(open({str(WORKER)!r}).read())\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, check=False)
    assert proc.returncode == 3
    assert "onnxruntime is not installed" in json.loads(proc.stdout)["error"]
    assert "pip install onnxruntime" in json.loads(proc.stdout)["error"]


# -- bounds: a count or a duration past them only exhausts the machine ---------------------

@pytest.mark.parametrize("field,value,says", [
    ("threads", 0, "threads must be 1.."),
    ("threads", 100_000, "threads must be 1.."),
    ("seed", -1, "seed must be 0..4294967295, got -1"),
    ("seed", 2**32, "seed must be 0..4294967295"),
    ("seconds", float("inf"), "seconds must be > 0 and <= 600"),
    ("seconds", float("nan"), "seconds must be > 0 and <= 600"),
    ("seconds", 601.0, "seconds must be > 0 and <= 600"),
    ("runs", 0, "runs must be 1..1000000"),
    ("runs", 10**7, "runs must be 1..1000000"),
    ("warmup", 10**6, "warmup must be 0..100000"),
    ("batch", 10**5, "batch must be 1..4096"),
])
def test_bench_spec_refuses_unbounded_values(tmp_path: Path, field: str, value: float,
                                              says: str) -> None:
    kw = {"threads": 1, field: value}
    with pytest.raises(ValueError, match=says.replace(".", r"\.").replace("(", r"\(")):
        BenchSpec(tmp_path / "m.onnx", "onnxruntime", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("setting,says", [
    ("bench.seconds=1e9", "bench.seconds must be 0..600 per artifact"),
    ("bench.seconds=Infinity", "bench.seconds: expected a finite number"),
    ("bench.runs=100000000", "bench.runs must be <= 1000000"),
    ("bench.warmup=1000000", "bench.warmup must be 0..100000"),
    ("seed=-1", "seed must be 0..4294967295, got -1"),
    ("seed=4294967296", "seed must be 0..4294967295"),
])
def test_build_settings_are_bounded(setting: str, says: str) -> None:
    from edgekd.settings.config import BuildConfig, apply_overrides

    with pytest.raises(ValueError, match=says.replace(".", r"\.")):
        apply_overrides(BuildConfig(), [setting])


def _cli(*args: str) -> tuple[int, str]:
    from typer.testing import CliRunner

    from edgekd.cli.commands import app

    got = CliRunner().invoke(app, list(args))
    return got.exit_code, got.output


@pytest.mark.parametrize("args,says", [
    (["--threads", "100000"], "error: bad option: threads must be 1.."),
    (["--seed", "-1"], "error: bad option: seed must be 0..4294967295, got -1"),
    (["--seconds", "1e9"], "error: bad option: seconds must be > 0 and <= 600"),
    (["--json", "no/such/folder/r.json"], "error: --json no/such/folder/r.json: the folder "
                                          "no/such/folder does not exist"),
])
def test_bench_command_refuses_bad_options_before_any_work(onnx_pair, tmp_path: Path,
                                                           args: list[str], says: str,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.chdir(tmp_path)
    code, out = _cli("bench", str(onnx_pair["fp32"]), *args)
    assert code == 2, out
    assert " ".join(out.split()).startswith(says), out
    assert len(out.strip().splitlines()) <= 2  # one line, wrapped at most once by the console
    assert list(tmp_path.iterdir()) == []  # no folder created, no JSON written


def test_junit_into_a_missing_folder_is_refused_before_any_work(tmp_path: Path) -> None:
    junit = tmp_path / "missing" / "junit.xml"
    # `check` refuses before reading the report (which does not exist either) ...
    code, out = _cli("check", str(tmp_path / "report.json"), "--junit", str(junit))
    assert code == 2 and "the folder" in out and "does not exist" in out, out
    # ... and `build --check` before it trains or writes anything.
    code, out = _cli("build", "--out", str(tmp_path / "out"), "--check", "--junit", str(junit))
    assert code == 2 and "--junit" in out and "does not exist" in out, out
    assert not (tmp_path / "out").exists() and not junit.parent.exists()


def test_junit_inside_the_output_root_the_build_creates(tmp_path: Path) -> None:
    """The README's `edgekd build --check --junit build/budgets.xml` on a fresh clone: the
    folder does not exist yet, but it is the build's own output root."""
    from tests.test_bad_input import finished

    project = finished(tmp_path / "p")
    junit = tmp_path / "out" / "budgets.xml"
    budget = tmp_path / "budget.toml"
    budget.write_text("[budget]\nmax_size_kb = 1000\n")
    code, out = _cli("build", "--config", str(project), "--target", "x86-cpu", "--out",
                     str(tmp_path / "out"), "--check", "--budget", str(budget), "--junit",
                     str(junit))
    assert code == 0, out
    assert junit.is_file() and "<testsuites" in junit.read_text()
