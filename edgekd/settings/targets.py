"""Deployment targets: small flat TOML files in ``targets/``, checked against :class:`Target`.

A target says which runtimes get an artifact and how they run there (threads, execution
providers). It holds data only; anything that needs logic belongs in a backend module.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from edgekd.errors import UsageError
from edgekd.settings.budgets import Budget
from edgekd.settings.config import ShipPolicy
from edgekd.settings.resources import read_text_file, targets_dir
from edgekd.settings.typed import OneOf, from_table

# The runtimes a target may name: one module each in edgekd.backends.
RUNTIMES = ("onnxruntime", "openvino", "tflite")
Runtime = Annotated[str, OneOf(RUNTIMES, "runtime")]

# A target's CPU architecture, as Python's platform.machine() names it on Linux. A figure
# measured on a machine of another architecture is not the target's (edgekd.report.gate).
MACHINES = ("aarch64", "x86_64", "armv7l", "riscv64")
# What other systems call the same architectures (macOS "arm64", Windows "AMD64").
_MACHINE_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "x64": "x86_64"}


def canonical_machine(name: str) -> str:
    """``platform.machine()`` of any system, as :data:`MACHINES` spells it ("" stays "")."""
    lower = name.strip().lower()
    return _MACHINE_ALIASES.get(lower, lower)


def did_you_mean(name: str, known: Sequence[str]) -> str | None:
    """The one known name ``name`` is most likely a typo of, if any is close enough."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else None


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    runtimes: tuple[Runtime, ...]
    threads: int
    cpu: str = ""
    # The device's architecture when the target is a device other than the build host (a
    # Raspberry Pi, a Jetson): latency and memory measured on a host of another architecture
    # are reported as "not measured on the target". "": the target runs where it is built.
    machine: str = ""
    # ONNX Runtime execution providers, in order of preference. A GPU target lists only GPU
    # providers: the build fails when none of them is available instead of using the CPU.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    # Which artifact of each runtime ships when INT8 is not faster than FP32 ("int8",
    # "fastest", "smallest"; see edgekd.pipeline.choosing); a project's ``ship`` overrides it.
    ship: ShipPolicy = "int8"
    # Why the target ships what it ships, in one sentence: the report's "what ships" section
    # and the flag of an INT8 artifact shipped although slower here quote it.
    ship_reason: str = ""
    budget: Budget = Budget()  # the [budget] table (see edgekd.settings.budgets)

    def __post_init__(self) -> None:
        if not self.runtimes:
            raise ValueError(f"target {self.name!r}: runtimes is empty; choose from "
                             f"{', '.join(RUNTIMES)}")
        unknown = [r for r in self.runtimes if r not in RUNTIMES]
        if unknown:
            guess = did_you_mean(unknown[0], RUNTIMES)
            hint = f"did you mean {guess!r}? " if guess else ""
            raise ValueError(f"target {self.name!r}: unknown runtime {unknown[0]!r}; {hint}"
                             f"choose from {', '.join(RUNTIMES)}")
        machine = canonical_machine(self.machine)
        if machine and machine not in MACHINES:
            guess = did_you_mean(machine, MACHINES)
            hint = f"did you mean {guess!r}? " if guess else ""
            raise ValueError(f"target {self.name!r}: unknown machine {self.machine!r}; {hint}"
                             f"choose from {', '.join(MACHINES)} (as platform.machine() "
                             "names it), or leave machine out for the build host")
        object.__setattr__(self, "machine", machine)  # "arm64" is "aarch64"
        if self.threads < 1:
            raise ValueError(f"target {self.name!r}: threads must be >= 1, got {self.threads}")
        if not self.providers:
            raise ValueError(f"target {self.name!r}: providers is empty")

    @property
    def needs_gpu(self) -> bool:
        return "CPUExecutionProvider" not in self.providers


def target_names(directory: Path | None = None) -> list[str]:
    return sorted(p.stem for p in (directory or targets_dir()).glob("*.toml"))


def parse_target(name: str, text: str, source: str) -> Target:
    """Build a :class:`Target` from TOML text; every problem is a one-line UsageError."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: TOML syntax error: {exc}") from exc
    try:  # the name is the file's, never a key in it
        return from_table(Target, raw, fixed={"name": name})
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from exc


def load_target(name: str, directory: Path | None = None) -> Target:
    """The target called ``name``; names are looked up among the files, never joined blindly.
    A target file that cannot be read (a folder, a dangling link, not UTF-8, unreadable) is
    one :class:`UsageError` naming it; it never affects loading the other targets."""
    directory = directory or targets_dir()
    known = target_names(directory)
    if name not in known:
        guess = did_you_mean(name, known)
        if guess:
            raise UsageError(f"unknown target {name!r}: did you mean {guess!r}? (edgekd "
                             "targets lists them)")
        raise UsageError(f"unknown target {name!r}; known targets: {', '.join(known)}")
    path = directory / f"{name}.toml"
    try:
        text = read_text_file(path)
    except (OSError, ValueError) as exc:  # OSError: removed since it was listed
        why = f"cannot be read ({exc.strerror or exc})" if isinstance(exc, OSError) else exc
        raise UsageError(f"target file {path} {why}: make it a UTF-8 TOML file or remove "
                         "it") from exc
    return parse_target(name, text, str(path))


def load_targets(directory: Path | None = None) -> tuple[list[Target], list[UsageError]]:
    """Every target that loads, and one error per target file that does not (for a listing
    that shows the good ones and names the broken ones)."""
    found, broken = [], []
    for name in target_names(directory):
        try:
            found.append(load_target(name, directory))
        except UsageError as exc:
            broken.append(exc)
    return found, broken


def all_targets(directory: Path | None = None) -> list[Target]:
    """Every target; the first broken target file is one :class:`UsageError` naming it."""
    found, broken = load_targets(directory)
    if broken:
        more = f" (and {len(broken) - 1} more broken target file(s))" if len(broken) > 1 else ""
        raise UsageError(f"{broken[0]}{more}") from broken[0]
    return found
