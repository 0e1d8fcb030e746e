"""Benchmarks on the user's own devices over SSH.

The device needs Python 3 with NumPy and one runtime; it does not need edgekd. For each host,
one ``ssh`` call streams a tar archive (:mod:`edgekd.device.worker` and its one companion,
the artifacts and one JSON spec per artifact) into a fresh ``mktemp -d`` folder, runs the
benchmarks one after another (never two at once on one device), prints one JSON line per
artifact and removes the folder on exit. Several hosts run in parallel.

The system OpenSSH client is used rather than a Python SSH library so that the user's
``~/.ssh/config``, agent, jump hosts and ``known_hosts`` apply unchanged. Host keys are
verified (``StrictHostKeyChecking=yes``); ``accept_new_host_key`` switches to OpenSSH's
``accept-new`` (trust on first use), and only when asked. Every value that reaches the
remote shell passes through :func:`shlex.quote`; file names inside the archive are chosen
here, not taken from the user.
"""

from __future__ import annotations

import io
import json
import shlex
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.common.interrupts import kill_children, run_child
from edgekd.measure.bench import WORKER_FILES, BenchError, BenchSpec, parse_result


@dataclass(frozen=True)
class Remote:
    host: str  # [user@]host, or a Host alias from the ssh config
    python: str = "python3"
    ssh_config: Path | None = None
    accept_new_host_key: bool = False
    connect_timeout_s: int = 10
    timeout_s: float = 900

    def __post_init__(self) -> None:
        if not self.host or self.host.startswith("-") or any(c.isspace() for c in self.host):
            raise ValueError(f"bad remote host {self.host!r}: expected user@host")

    def preflight(self) -> None:
        preflight(self)

    def ssh_command(self, remote_command: str) -> list[str]:
        cmd = ["ssh", "-T", "-o", "BatchMode=yes",
               "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host_key else 'yes'}",
               "-o", f"ConnectTimeout={self.connect_timeout_s}",
               "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        if self.ssh_config:
            cmd += ["-F", str(self.ssh_config)]
        # Through sh -c: the user's login shell may be fish or csh.
        return [*cmd, "--", self.host, "sh -c " + shlex.quote(remote_command)]


def preflight(remote: Remote) -> None:
    """Fail in seconds, before a build trains anything, if the device cannot be used."""
    script = (f"command -v {shlex.quote(remote.python)} >/dev/null 2>&1 || "
              "{ echo 'EDGEKD-NO-PYTHON' >&2; exit 127; }")
    try:
        got = run_child(remote.ssh_command(script), input=None,
                        timeout=remote.connect_timeout_s + 30)
    except FileNotFoundError as exc:
        raise BenchError("ssh not found: install the OpenSSH client") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{remote.host}: no answer within {remote.connect_timeout_s + 30} s"
                         ) from exc
    if got.returncode != 0:
        raise _ssh_error(remote, _decoded(got))


def _decoded(proc: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(proc.args, proc.returncode,
                                       proc.stdout.decode(errors="replace"),
                                       proc.stderr.decode(errors="replace"))


def _archive(specs: list[BenchSpec]) -> tuple[bytes, list[str]]:
    """The tar stream for one host and the spec file names in it."""
    buf = io.BytesIO()
    names = []
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in WORKER_FILES:
            tar.add(f, arcname=f.name)
        for i, spec in enumerate(specs):
            files = ([spec.artifact, spec.artifact.with_suffix(".bin")]
                     if spec.artifact.suffix == ".xml" else [spec.artifact])
            for f in files:
                tar.add(f, arcname=f"a{i}/{f.name}")
            data = json.dumps(spec.to_dict(f"a{i}/{spec.artifact.name}")).encode()
            info = tarfile.TarInfo(f"spec{i}.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            names.append(f"spec{i}.json")
    return buf.getvalue(), names


def _script(remote: Remote, spec_names: list[str]) -> str:
    py = shlex.quote(remote.python)
    # The worker prints one JSON line (exit 0, or 3 with an error); anything else (a crash,
    # a signal) gets a JSON error line here so each artifact has exactly one line.
    # Each worker runs beside a watchdog that writes an empty line to stderr every second:
    # when edgekd or its ssh dies, the channel closes, the write fails and the watchdog ends
    # the worker, so that nothing is left running on the device (and the trap removes $d).
    runs = "\n".join(
        f"{py} worker.py {shlex.quote(n)} & w=$!\n"
        "( while kill -0 $w 2>/dev/null; do sleep 1; "
        "echo >&2 || { kill $w; exit; }; done ) & g=$!\n"
        "wait $w; rc=$?; kill $g 2>/dev/null; "
        "[ $rc -eq 0 ] || [ $rc -eq 3 ] || "
        f'echo "{{\\"error\\": \\"the benchmark process exited with status $rc\\"}}"'
        for n in spec_names)
    return ("set -e\n"
            'd=$(mktemp -d "${TMPDIR:-/tmp}/edgekd-bench.XXXXXX")\n'
            "trap 'rm -rf \"$d\"' EXIT\n"
            "trap '' PIPE\n"  # a closed channel fails writes; it must not kill the trap
            'tar -xf - -C "$d"\n'
            'cd "$d"\n'
            f"command -v {py} >/dev/null 2>&1 || {{ echo 'EDGEKD-NO-PYTHON' >&2; exit 127; }}\n"
            "set +e\n"
            f"{runs}\n")


def _ssh_error(remote: Remote, proc: subprocess.CompletedProcess[str]) -> BenchError:
    err = proc.stderr.strip().splitlines()
    last = err[-1] if err else f"exit {proc.returncode}"
    if "EDGEKD-NO-PYTHON" in proc.stderr:
        return BenchError(f"{remote.host}: no {remote.python!r} there: install Python 3 with "
                          "numpy and a runtime, or pass --remote-python PATH")
    if "Host key verification failed" in proc.stderr or "host key" in proc.stderr.lower():
        return BenchError(f"{remote.host}: host key not verified ({last}); add it to "
                          "known_hosts after checking its fingerprint (ssh-keyscan HOST), "
                          "or pass --accept-new-host-key to trust it on first use")
    return BenchError(f"{remote.host}: ssh failed: {last}; check that the host is reachable "
                      "and `ssh HOST true` works without a password prompt")


def bench_host(remote: Remote, specs: list[BenchSpec]) -> list[dict[str, Any]]:
    """Run ``specs`` on one device, one after another; results in the same order."""
    data, names = _archive(specs)
    cmd = remote.ssh_command(_script(remote, names))
    try:
        proc = run_child(cmd, input=data, timeout=remote.timeout_s)
    except FileNotFoundError as exc:
        raise BenchError("ssh not found: install the OpenSSH client") from exc
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{remote.host}: no answer within {remote.timeout_s:.0f} s; the "
                         "device is busy or unreachable (raise the timeout or lower --runs)"
                         ) from exc
    text = _decoded(proc)
    if text.returncode in (127, 255) or not text.stdout.strip():
        raise _ssh_error(remote, text)
    lines = [ln for ln in text.stdout.splitlines() if ln.startswith("{")]
    if len(lines) != len(specs):
        raise _ssh_error(remote, text)
    results = []
    for spec, line in zip(specs, lines, strict=True):
        result = parse_result(line, f"{remote.host}: {spec.artifact.name}", text.returncode,
                              text.stderr)
        result["remote"] = remote.host
        results.append(result)
    return results


def bench_hosts(remotes: list[Remote], specs: list[BenchSpec]
                ) -> dict[str, list[dict[str, Any]] | BenchError]:
    """Every spec on every host, hosts in parallel: each host's results, or its error."""
    def one(remote: Remote) -> list[dict[str, Any]] | BenchError:
        try:
            return bench_host(remote, specs)
        except BenchError as exc:
            return exc

    pool = ThreadPoolExecutor(max_workers=max(1, len(remotes)))
    try:
        return dict(zip([r.host for r in remotes], pool.map(one, remotes), strict=True))
    except BaseException:  # Ctrl-C, SIGTERM: the other threads' ssh processes go now
        kill_children()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
