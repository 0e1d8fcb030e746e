"""A real OpenSSH server on 127.0.0.1 with throwaway keys, for the remote-benchmark tests."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SshServer:
    port: int
    config: Path  # an ssh_config with Host aliases for the tests
    host: str = "edgekd-test"  # known host key, throwaway user key
    unknown_host: str = "edgekd-test-unknown"  # same server, empty known_hosts
    dead_host: str = "edgekd-test-dead"  # nothing listens there


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sshd_binary() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)


def start_sshd(d: Path) -> tuple[subprocess.Popen[bytes], SshServer]:
    sshd = sshd_binary()
    assert sshd, "sshd not installed (apt-get install openssh-server; .ci/run does it)"
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgekd-test",
                        "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    port, dead = _free_port(), _free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\n"
        "UsePAM no\nLogLevel ERROR\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation folder
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")],
                            stderr=open(d / "sshd.log", "wb"))  # noqa: SIM115
    key = " ".join((d / "host_key.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {key}\n")
    (d / "empty_known_hosts").write_text("")
    common = (f"  HostName 127.0.0.1\n  User {getpass.getuser()}\n"
              f"  IdentityFile {d / 'user_key'}\n  IdentitiesOnly yes\n"
              "  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n")
    (d / "ssh_config").write_text(
        f"Host edgekd-test\n  Port {port}\n{common}  UserKnownHostsFile {d / 'known_hosts'}\n"
        f"Host edgekd-test-unknown\n  Port {port}\n{common}"
        f"  UserKnownHostsFile {d / 'empty_known_hosts'}\n"
        f"Host edgekd-test-dead\n  Port {dead}\n{common}"
        f"  UserKnownHostsFile {d / 'known_hosts'}\n")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(d / 'sshd.log').read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, SshServer(port, d / "ssh_config")
