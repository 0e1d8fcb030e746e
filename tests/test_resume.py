"""Reproducible and resumable builds, for real: separate `edgekd build` processes, SIGKILL
in the middle of training, SIGINT, a changed setting, --fresh (slow); and the stage cache
they resume from, on its own (fast)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from edgekd.train import stage_cache
from edgekd.train.models import student_cnn
from edgekd.train.stage_cache import StageCache, digest

QUICK = ["--set", "teacher.epochs=2", "--set", "student.epochs=2", "--set", "distill.epochs=3",
         "--set", "prune.finetune_epochs=1", "--set", "bench.runs=10", "--set", "bench.warmup=2",
         "--set", "bench.seconds=0", "--set", "robustness.noise_sigmas=[]",
         "--set", "robustness.corruptions=[]"]


def _cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "edgekd", "build", "--target", "raspberrypi", "--out",
            str(out), *QUICK, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def _run(out: Path, *extra: str) -> tuple[int, str]:
    done = subprocess.run(_cmd(out, *extra), capture_output=True, text=True, env=_env(),
                          timeout=600)
    return done.returncode, done.stdout + done.stderr


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.suffix in (".onnx", ".tflite")}


def _accuracies(folder: Path) -> dict[str, float]:
    report = json.loads((folder / "report.json").read_text())
    acc = {s["name"]: s["accuracy"] for s in report["stages"]}
    return acc | {a["path"]: a["accuracy"] for a in report["artifacts"]}


def _cached(output: str) -> dict[str, bool]:
    """Which stages the progress lines mark as taken from the cache."""
    found = {}
    for line in output.splitlines():
        for name in ("teacher", "student_scratch", "student_distilled", "student_pruned",
                     "quantize"):
            if line.startswith(f"✓ {name} ") and not line.startswith("✓ teacher outputs"):
                found[name] = "(cached, " in line
    return found


def _until(proc: subprocess.Popen, marker: str) -> str:
    seen = ""
    assert proc.stdout is not None
    for line in proc.stdout:
        seen += line
        if line.startswith(marker):
            return seen
    raise AssertionError(f"the build ended before {marker!r}:\n{seen}")


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("first")
    code, text = _run(out)
    assert code == 0, text
    assert not any(_cached(text).values())  # an empty cache: everything ran
    return out


@pytest.mark.slow
def test_same_inputs_same_numbers_and_same_sha256(first: Path, tmp_path: Path) -> None:
    code, text = _run(tmp_path)  # another process, another output root, no shared cache
    assert code == 0, text
    a, b = first / "raspberrypi", tmp_path / "raspberrypi"
    assert _accuracies(a) == _accuracies(b)
    hashes = _hashes(a)
    assert set(hashes) == {"student_fp32.onnx", "student_int8.onnx", "student_fp32.tflite",
                           "student_int8.tflite"}
    assert hashes == _hashes(b)
    manifest = json.loads((a / "manifest.json").read_text())
    assert manifest["seeds"]["build"] == 0 and manifest["versions"]["torch"]
    assert manifest["dataset"]["fingerprint"] == json.loads(
        (b / "manifest.json").read_text())["dataset"]["fingerprint"]
    assert all(manifest["sha256"][name] == h for name, h in hashes.items())


@pytest.mark.slow
def test_sigkill_mid_build_resumes_after_the_last_finished_stage(first: Path,
                                                                 tmp_path: Path) -> None:
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=_env(), start_new_session=True)
    try:
        _until(proc, "✓ student_distilled")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "raspberrypi").exists()  # nothing half-written
    code, text = _run(tmp_path)
    assert code == 0, text
    cached = _cached(text)
    assert cached["teacher"] and cached["student_scratch"] and cached["student_distilled"]
    assert not cached["student_pruned"] and not cached["quantize"]
    # The resumed build is the build an uninterrupted run makes.
    assert _hashes(tmp_path / "raspberrypi") == _hashes(first / "raspberrypi")
    assert _accuracies(tmp_path / "raspberrypi") == _accuracies(first / "raspberrypi")
    assert not [p for p in tmp_path.iterdir() if ".staging-" in p.name]
    # Whole cache entries only: no temporary folder survives the resumed build.
    assert not [p for p in (tmp_path / ".cache" / "stages").iterdir() if p.name[0] == "."]


@pytest.mark.slow
def test_a_changed_setting_reruns_only_the_stages_it_affects(first: Path) -> None:
    code, text = _run(first, "--set", "prune.sparsity=0.6")
    assert code == 0, text
    assert _cached(text) == {"teacher": True, "student_scratch": True,
                             "student_distilled": True, "student_pruned": False,
                             "quantize": False}
    code, text = _run(first, "--set", "quant.method=percentile")
    assert code == 0, text
    assert _cached(text) == {"teacher": True, "student_scratch": True,
                             "student_distilled": True, "student_pruned": True,
                             "quantize": False}
    code, text = _run(first, "--fresh")
    assert code == 0, text
    assert not any(_cached(text).values())


@pytest.mark.slow
def test_ctrl_c_leaves_the_previous_build_untouched(first: Path) -> None:
    before = {p.name: p.read_bytes() for p in (first / "raspberrypi").iterdir() if p.is_file()}
    # Started with SIGINT ignored, as a shell starts background jobs (and as some CI runners
    # start tests): Python keeps it ignored, so edgekd must install its own handler, or this
    # Ctrl-C is lost and the build runs on to the end.
    proc = subprocess.Popen(_cmd(first, "--fresh"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        _until(proc, "✓ teacher")  # a stage is done: the signal lands mid-build, never before
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)  # generous: a loaded machine
    finally:
        proc.kill()
    assert proc.returncode == 130, rest
    assert "interrupted" in rest and "Traceback" not in rest
    after = {p.name: p.read_bytes() for p in (first / "raspberrypi").iterdir() if p.is_file()}
    assert after == before
    assert not [p for p in first.iterdir() if ".staging-" in p.name]


# -- the stage cache, without a build -----------------------------------------------------


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return student_cnn()


def test_a_saved_stage_loads_into_a_fresh_model(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    trained = _model(1)
    assert cache.load("student_pruned", "k1", _model(2)) is None
    cache.save("student_pruned", "k1", trained, {"weight_sparsity": 0.5})
    loaded = _model(2)
    assert cache.load("student_pruned", "k1", loaded) == {"weight_sparsity": 0.5}
    for a, b in zip(trained.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert StageCache(tmp_path, fresh=True).load("student_pruned", "k1", _model(2)) is None
    assert [p.name for p in tmp_path.iterdir()] == ["student_pruned-k1"]  # no temp folder


def test_a_damaged_stage_is_recomputed_and_replaced(tmp_path: Path) -> None:
    cache = StageCache(tmp_path)
    cache.save("teacher", "k1", _model(1), {})
    (tmp_path / "teacher-k1" / "model.safetensors").write_bytes(b"not safetensors")
    assert cache.load("teacher", "k1", _model(2)) is None
    cache.save("teacher", "k1", _model(1), {"again": True})
    assert cache.load("teacher", "k1", _model(2)) == {"again": True}


def test_only_rank_0_saves_stages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage_cache, "world", lambda: (1, 2))
    StageCache(tmp_path / "c").save("teacher", "k1", _model(1), {})
    assert not (tmp_path / "c").exists()


def test_stage_keys_follow_their_parts_and_the_torch_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = digest("pruned", {"sparsity": 0.5, "method": "l1"}, 0)
    assert len(key) == 16 and key == digest("pruned", {"method": "l1", "sparsity": 0.5}, 0)
    assert digest("pruned", {"sparsity": 0.6, "method": "l1"}, 0) != key
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert digest("pruned", {"sparsity": 0.5, "method": "l1"}, 0) != key
