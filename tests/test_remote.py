"""`edgekd bench --remote` through a real OpenSSH server on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sshd import SshServer, sshd_binary, start_sshd  # tests/sshd.py
from typer.testing import CliRunner

from edgekd.cli.commands import app
from edgekd.measure.bench import BenchError, BenchSpec
from edgekd.measure.remote import Remote, bench_host, bench_hosts

pytestmark = pytest.mark.skipif(sshd_binary() is None and os.environ.get("CI") is None,
                                reason="needs openssh-server (.ci/run installs it)")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    proc, server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    proc.terminate()
    proc.wait(timeout=10)


def _remote(server: SshServer, host: str | None = None, **kw: object) -> Remote:
    return Remote(host or server.host, python=kw.pop("python", sys.executable),  # type: ignore[arg-type]
                  ssh_config=server.config, **kw)  # type: ignore[arg-type]


def test_bench_through_ssh_returns_device_results(sshd: SshServer, onnx_pair) -> None:
    specs = [BenchSpec(onnx_pair[p], "onnxruntime", 1, warmup=2, runs=20)
             for p in ("fp32", "int8")]
    results = bench_host(_remote(sshd), specs)
    assert [r["artifact"] for r in results] == ["student_fp32.onnx", "student_int8.onnx"]
    for r in results:
        assert r["remote"] == "edgekd-test" and r["runs"] == 20
        assert r["device"]["machine"] and r["device"]["cpu"]
        assert r["runtime_version"]
        assert r["latency_ms"]["p50"] > 0 and r["memory"]["peak_rss_mb"] > 0


def test_several_hosts_in_parallel_and_errors_per_host(sshd: SshServer, onnx_pair) -> None:
    spec = [BenchSpec(onnx_pair["int8"], "onnxruntime", 1, warmup=1, runs=10)]
    got = bench_hosts([_remote(sshd), _remote(sshd, sshd.dead_host)], spec)
    assert isinstance(got["edgekd-test"], list)
    assert isinstance(got["edgekd-test-dead"], BenchError)
    assert "ssh failed" in str(got["edgekd-test-dead"])


def test_unknown_host_key_is_refused(sshd: SshServer, onnx_pair) -> None:
    spec = [BenchSpec(onnx_pair["int8"], "onnxruntime", 1, warmup=1, runs=10)]
    with pytest.raises(BenchError, match="host key not verified.*--accept-new-host-key"):
        bench_host(_remote(sshd, sshd.unknown_host), spec)


def test_accept_new_host_key_only_when_asked(sshd: SshServer, onnx_pair, tmp_path: Path
                                             ) -> None:
    config = tmp_path / "ssh_config"  # a fresh, writable known_hosts for accept-new
    config.write_text(sshd.config.read_text().replace(
        str(sshd.config.parent / "empty_known_hosts"), str(tmp_path / "kh")))
    remote = Remote(sshd.unknown_host, sys.executable, config, accept_new_host_key=True)
    spec = [BenchSpec(onnx_pair["int8"], "onnxruntime", 1, warmup=1, runs=10)]
    assert bench_host(remote, spec)[0]["runs"] == 10
    assert "127.0.0.1" in (tmp_path / "kh").read_text()


def test_paths_with_shell_characters_are_quoted(sshd: SshServer, onnx_pair, tmp_path: Path
                                                ) -> None:
    odd = tmp_path / "a b;$(touch pwned)'"
    odd.mkdir()
    (odd / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (odd / "python").chmod(0o755)
    art = tmp_path / "my model $(id).onnx"
    art.write_bytes(onnx_pair["int8"].read_bytes())
    result = bench_host(_remote(sshd, python=str(odd / "python")),
                        [BenchSpec(art, "onnxruntime", 1, warmup=1, runs=10)])
    assert result[0]["artifact"] == "my model $(id).onnx"
    assert not Path("pwned").exists() and not (Path.home() / "pwned").exists()


def test_missing_python_or_runtime_is_one_clear_line(sshd: SshServer, onnx_pair,
                                                     tmp_path: Path) -> None:
    spec = [BenchSpec(onnx_pair["int8"], "onnxruntime", 1, warmup=1, runs=10)]
    with pytest.raises(BenchError, match="no '/nonexistent/python3' there"):
        bench_host(_remote(sshd, python="/nonexistent/python3"), spec)
    bare = tmp_path / "bare"  # a Python with numpy but without onnxruntime
    bare.mkdir()
    (bare / "sitecustomize.py").write_text(
        "import sys\nclass B:\n def find_spec(self, n, p=None, t=None):\n"
        "  if n.split('.')[0] == 'onnxruntime': raise ImportError(n)\n"
        "sys.meta_path.insert(0, B())\n")
    wrapper = tmp_path / "py"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={bare} exec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    with pytest.raises(BenchError, match="onnxruntime is not installed.*pip install onnxruntime"):
        bench_host(_remote(sshd, python=str(wrapper)), spec)


def test_cli_bench_remote_writes_json(sshd: SshServer, onnx_pair, tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    res = CliRunner().invoke(app, [
        "bench", str(onnx_pair["int8"]), "--remote", sshd.host, "--remote-python",
        sys.executable, "--ssh-config", str(sshd.config), "--runs", "20", "--warmup", "2",
        "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["errors"] == [] and data["benchmarks"][0]["remote"] == "edgekd-test"
    res = CliRunner().invoke(app, ["bench", str(onnx_pair["int8"]), "--remote",
                                   sshd.dead_host, "--ssh-config", str(sshd.config)])
    assert res.exit_code == 1 and "ssh failed" in res.output


@pytest.mark.slow
def test_build_on_a_remote_device_with_a_budget_gate(sshd: SshServer, tmp_path: Path) -> None:
    """`edgekd build --remote ... --check`: device figures land in the report and the gate."""
    tight, loose = tmp_path / "tight.toml", tmp_path / "loose.toml"
    tight.write_text("[budget]\nmax_size_kb = 8\nmax_p95_ms = 100\n")
    loose.write_text("[budget]\nmax_size_kb = 64\nmax_p95_ms = 100\nmax_peak_rss_mb = 1024\n")
    out = tmp_path / "out"
    # A fresh process, as a user runs it (the entry point, not the test's own interpreter).
    res = subprocess.run([
        sys.executable, "-m", "edgekd", "build", "--target", "raspberrypi", "--out", str(out),
        "--epochs", "3", "--runs", "10", "--min-agreement", "0.9", "--remote", sshd.host,
        "--remote-python", sys.executable, "--ssh-config", str(sshd.config), "--check",
        "--budget", str(tight), "--junit", str(tmp_path / "j.xml")],
        capture_output=True, text=True, timeout=900, check=False)
    assert res.returncode == 1, res.stdout + res.stderr  # the INT8 files are ~40 KiB > 8 KiB
    assert "BROKEN" in res.stdout and (tmp_path / "j.xml").is_file()
    report = json.loads((out / "raspberrypi" / "report.json").read_text())
    for a in report["artifacts"]:
        (dev,) = a["remote"]
        assert dev["remote"] == "edgekd-test" and dev["threads"] == 4  # the target's count
        assert dev["latency_ms"]["p95"] > 0 and dev["device"]["machine"]
    assert {p["where"] for p in report["payoff"]} == {"host", "edgekd-test"}
    subjects = {c["subject"] for c in report["budget"]["checks"]}
    assert "student_int8.tflite @ edgekd-test" in subjects
    assert "edgekd-test" in (out / "raspberrypi" / "report.md").read_text()
    res = CliRunner().invoke(app, ["check", str(out / "raspberrypi" / "report.json"),
                                   "--budget", str(loose)])
    assert res.exit_code == 0, res.output


def test_build_fails_before_training_when_the_device_is_unreachable(sshd: SshServer,
                                                                    tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["build", "--target", "raspberrypi", "--out", str(tmp_path),
                                   "--remote", sshd.dead_host, "--ssh-config",
                                   str(sshd.config)])
    assert res.exit_code == 1 and "ssh failed" in res.output
    assert list(tmp_path.iterdir()) == []


def _remote_workers(artifact: str) -> dict[int, Path]:
    """Device-side workers (``python worker.py specN.json`` in an ``edgekd-bench`` folder)
    benchmarking a file named ``artifact``: pid -> their folder."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except (OSError, ValueError):
            continue
        if len(args) >= 3 and args[1] == b"worker.py" and (cwd / "a0" / artifact).exists():
            found[int(entry.name)] = cwd
    return found


def test_sigterm_stops_ssh_and_the_device_side_worker(sshd: SshServer, onnx_pair,
                                                      tmp_path: Path) -> None:
    """CI cancel during `bench --remote`: no ssh left here, no worker or folder left there."""
    import signal
    import time

    artifact = tmp_path / f"m{os.getpid()}.onnx"  # a name no other test's worker has
    artifact.write_bytes(onnx_pair["fp32"].read_bytes())
    proc = subprocess.Popen([sys.executable, "-m", "edgekd", "bench", str(artifact), "--seconds",
                             "300", "--remote", sshd.host, "--remote-python", sys.executable,
                             "--ssh-config", str(sshd.config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (workers := _remote_workers(artifact.name)) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.1)
        assert workers, "no device-side worker within 120 s"
        ssh = [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid), "ssh"],
                                              capture_output=True, text=True).stdout.split()]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, out
    assert "interrupted: the benchmark was stopped; nothing was written" in out
    deadline = time.monotonic() + 30  # the watchdog notices the closed channel within ~1 s
    while (_remote_workers(artifact.name) or any(Path(f"/proc/{p}").exists() for p in ssh)
           ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _remote_workers(artifact.name)
    assert not any(Path(f"/proc/{p}").exists() for p in ssh)
    assert not any(folder.exists() for folder in workers.values())
