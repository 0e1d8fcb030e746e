"""Hangs and orphans, for real: `edgekd build` and `edgekd bench` processes stopped with real
SIGINT, SIGTERM (CI cancel, `docker stop`), SIGHUP and SIGKILL while their benchmark worker
runs. Each must end with one `interrupted:` line and exit 128 + the signal, leave no staging
folder, no temporary folder and no worker process, and keep the previous build as it was."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.test_bad_input import finished

ONNX_ONLY = ["--set", 'runtimes=["onnxruntime"]']
LONG_BENCH = ["--set", "bench.seconds=300"]  # the worker outlives any test by far
STOPPED = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGHUP: 129}


def _env(tmp: Path) -> dict[str, str]:
    # Every temporary file of edgekd and its worker goes under `tmp`, which must end empty.
    tmp.mkdir(exist_ok=True)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200", "TMPDIR": str(tmp)}


def _workers(parent: int | None = None) -> list[int]:
    """Live benchmark worker processes (children of ``parent`` if given), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat[0], int(stat[1])
        if (b"edgekd.device.worker" in cmdline and state != "Z"
                and (parent is None or ppid == parent)):
            found.append(int(entry.name))
    return found


def _temporaries(tmp: Path) -> list[str]:
    """What is left in TMPDIR: folders and files; not ONNX Runtime's own ``.ses`` session
    marker, which it keeps there on purpose."""
    return [p.name for p in tmp.iterdir() if p.is_dir() or p.name != ".ses"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(what: str, cond: Callable[[], object], proc: subprocess.Popen,
              timeout: float = 240) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"edgekd ended (exit {proc.returncode}) before {what}:\n{out}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no {what} within {timeout} s")


def _start(cmd: list[str], tmp: Path, cwd: Path, ignore_sigint: bool = False
           ) -> subprocess.Popen:
    # A shell starts background jobs with SIGINT ignored, and Python keeps it so: edgekd must
    # still stop on `kill -INT` (this is how a Ctrl-C got lost).
    preexec = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    return subprocess.Popen([sys.executable, "-m", "edgekd", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(tmp), cwd=cwd,
                            preexec_fn=preexec)


def _stop_while_benchmarking(proc: subprocess.Popen, sig: int) -> tuple[int, str, int]:
    """Wait for the worker, signal edgekd; its exit code, its output and the worker's pid."""
    worker = _wait_for("a benchmark worker", lambda: _workers(proc.pid), proc)[0]  # type: ignore[index]
    proc.send_signal(sig)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, out, worker


def _tiny_onnx(path: Path) -> Path:
    from onnx import TensorProto, helper, save

    w = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor("w", TensorProto.FLOAT, [64, 64], w.ravel().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished-model project with a good build in out/raspberrypi."""
    folder = tmp_path_factory.mktemp("signals")
    finished(folder)
    done = subprocess.run([sys.executable, "-m", "edgekd", "build", "--out", "out",
                           *ONNX_ONLY], capture_output=True, text=True, cwd=folder,
                          env=_env(folder / "tmp"), timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.slow
@pytest.mark.parametrize("sig", list(STOPPED), ids=lambda s: signal.Signals(s).name)
def test_a_signal_stops_a_build_like_ctrl_c(project: Path, sig: int) -> None:
    before = _files(project / "out" / "raspberrypi")
    tmp = project / f"tmp-{sig}"
    proc = _start(["build", "--out", "out", *ONNX_ONLY, *LONG_BENCH], tmp, project,
                  ignore_sigint=sig == signal.SIGINT)
    code, out, worker = _stop_while_benchmarking(proc, sig)
    assert code == STOPPED[sig], out
    assert ("interrupted: nothing was written; the previous build (if any) is untouched"
            in out.replace("\n", " ")), out
    assert "Traceback" not in out
    assert not _alive(worker)
    assert _files(project / "out" / "raspberrypi") == before
    assert not [p.name for p in (project / "out").iterdir() if ".staging-" in p.name]
    assert _temporaries(tmp) == []


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_a_signal_stops_bench_and_its_worker(tmp_path: Path, sig: int) -> None:
    onnx = _tiny_onnx(tmp_path / "tiny.onnx")
    proc = _start(["bench", str(onnx), "--seconds", "300", "--json", "r.json"],
                  tmp_path / "tmp", tmp_path)
    code, out, worker = _stop_while_benchmarking(proc, sig)
    assert code == STOPPED[sig], out
    assert "interrupted: the benchmark was stopped; nothing was written" in out
    assert not _alive(worker)
    assert not (tmp_path / "r.json").exists()
    assert _temporaries(tmp_path / "tmp") == []


@pytest.mark.slow
def test_a_sigkilled_edgekd_leaves_no_worker_running(tmp_path: Path) -> None:
    onnx = _tiny_onnx(tmp_path / "tiny.onnx")
    proc = _start(["bench", str(onnx), "--seconds", "300"], tmp_path / "tmp", tmp_path)
    worker = _wait_for("a benchmark worker", lambda: _workers(proc.pid), proc)[0]  # type: ignore[index]
    proc.kill()
    proc.wait(timeout=30)
    deadline = time.monotonic() + 30  # the kernel's PDEATHSIG, then the worker unwinds
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = _alive(worker)
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the worker outlived edgekd"
    assert _temporaries(tmp_path / "tmp") == []


_SWALLOWED = """
import os, signal, time
from edgekd.common.interrupts import catch_interrupts, interrupt_exit_code, raise_if_interrupted

before = signal.getsignal(signal.SIGTERM)
try:
    with catch_interrupts():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a library replaces the handler ...
        raise_if_interrupted()  # ... and the step boundary puts edgekd's back
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler runs here
        except BaseException:  # what a careless library does
            pass
        raise_if_interrupted()
    print("not raised")
except KeyboardInterrupt:
    print("raised", interrupt_exit_code(), signal.getsignal(signal.SIGTERM) == before)
"""


def test_a_swallowed_or_unhooked_signal_is_raised_at_the_next_step() -> None:
    """A library that catches KeyboardInterrupt (a ``__del__``, a bare except) or replaces the
    handler cannot lose the signal: the next build step raises it again. In a process of its
    own: a SIGTERM sent to the test process would reach every library earlier tests loaded."""
    done = subprocess.run([sys.executable, "-c", _SWALLOWED], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["raised", "143", "True"]  # and the handler put back
