"""``edgekd build``: the whole pipeline for one target."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated

import typer

from edgekd.cli.app import (
    AcceptNewHostKey,
    LogLevel,
    LogLevelOption,
    RemotePython,
    SshConfig,
    app,
    fail,
    interrupted,
    log_level,
    os_error,
    output_file,
    output_root,
)
from edgekd.cli.check import run_check
from edgekd.cli.display import print_summary
from edgekd.cli.logs import mute_third_party, setup_logging
from edgekd.cli.progress import BuildProgress
from edgekd.common.interrupts import catch_interrupts
from edgekd.errors import EdgekdError, UsageError


def _legacy(seed: int | None, temperature: float | None, alpha: float | None,
            epochs: int | None, sparsity: float | None, min_agreement: float | None,
            runs: int | None, threads: int | None) -> dict[str, str]:
    """The named build flags as ``section.key=value`` settings, each with the flag it came
    from (a bad value is blamed on ``--epochs -1``, not on the project file)."""
    flags = [("seed", "seed", seed), ("distill.temperature", "temperature", temperature),
             ("distill.alpha", "alpha", alpha), ("distill.epochs", "epochs", epochs),
             ("student.epochs", "epochs", epochs), ("prune.sparsity", "sparsity", sparsity),
             ("min_agreement", "min-agreement", min_agreement), ("bench.runs", "runs", runs),
             ("train.threads", "threads", threads)]
    # JSON, as --set reads it: inf and nan stay numbers (and are refused as such).
    return {f"{k}={json.dumps(v)}": f"--{flag} {v}" for k, flag, v in flags if v is not None}


@app.command()
def build(
    target: Annotated[str | None, typer.Option("--target", "-t", help="Target name (edgekd "
                                               "targets); default: the project file's, else "
                                               "raspberrypi.")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Project file "
                                                "(default: ./edgekd.toml if present, else the "
                                                "built-in digits demonstration).")] = None,
    model: Annotated[str | None, typer.Option(help="Build this finished model instead: an "
                                              ".onnx file, or file.py:factory with --weights "
                                              "(no distillation).")] = None,
    weights: Annotated[str | None, typer.Option(help="Weights for --model (.safetensors or "
                                                "a state dict).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output root; artifacts go "
                                             "to OUT/<target> (default: the project's, else "
                                             "build).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for splits, initialisation and "
                                             "shuffling.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Distillation temperature T.")]
    = None,
    alpha: Annotated[float | None, typer.Option(help="Weight of the soft-target loss (0..1).")]
    = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs for the distilled student and "
                                               "for the scratch baseline.")] = None,
    sparsity: Annotated[float | None, typer.Option(help="Fraction of conv/linear weights "
                                                   "pruned (0..1).")] = None,
    min_agreement: Annotated[float | None, typer.Option(
        help="Fail if an artifact's top-1 agreement with PyTorch is below this.")] = None,
    runs: Annotated[int | None, typer.Option(help="Timed benchmark runs per artifact.")] = None,
    settings: Annotated[list[str] | None, typer.Option(
        "--set", help="Any setting, section.key=value (repeatable), e.g. "
        "prune.method=structured, distill.views=16, data.train=data/train, "
        "student_model=student_convnet.")] = None,
    fresh: Annotated[bool, typer.Option(help="Ignore the stage cache of earlier builds "
                                        "(retrain everything).")] = False,
    trust_pickle: Annotated[bool, typer.Option(help="Allow weights files that are full "
                                               "pickles (they can run code when loaded).")]
    = False,
    check: Annotated[bool, typer.Option("--check", help="Exit 1 if a budget is broken "
                                        "(the build and its reports are still written).")]
    = False,
    budget: Annotated[Path | None, typer.Option(help="TOML file with a [budget] table; "
                                                "replaces the target's.")] = None,
    junit: Annotated[Path | None, typer.Option(help="Write the budget checks as JUnit XML "
                                               "here; implies --check.")] = None,
    strict: Annotated[bool, typer.Option("--strict", "--require-device", help="--check, and "
                                         "also exit 1 if a latency or memory budget of a "
                                         "device target was not measured on the device "
                                         "(--remote).")] = False,
    remote: Annotated[list[str] | None, typer.Option(help="Also benchmark the artifacts on "
                                                     "user@host over SSH (repeatable).")]
    = None,
    remote_python: RemotePython = "python3",
    ssh_config: SshConfig = None,
    accept_new_host_key: AcceptNewHostKey = False,
    threads: Annotated[int | None, typer.Option(
        help="Training threads (setting train.threads; default 0 = half the usable cores: "
        "more threads than free cores make training many times slower).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress: no live line, "
                                        "progress lines or step lines; the summary and "
                                        "warnings only.")] = False,
    log_level_: LogLevelOption = LogLevel.warning,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and converter logs (implies "
                                        "--log-level debug).")] = False,
) -> None:
    """Distill, prune, quantize, export, verify and benchmark: the project in ./edgekd.toml
    (or --config, or --model), else the built-in digits demonstration."""
    level = log_level(log_level_, debug)
    setup_logging(level)
    origins = _legacy(seed, temperature, alpha, epochs, sparsity, min_agreement, runs, threads)
    origins |= {s: f"--set {s}" for s in settings or [] if s not in origins}
    if model is not None:
        origins["model"] = f"--model {model}"
    if weights is not None:
        origins["weights"] = f"--weights {weights}"
    items = [*_legacy(seed, temperature, alpha, epochs, sparsity, min_agreement, runs,
                      threads)]
    try:
        from edgekd.measure.remote import Remote

        remotes = [Remote(h, remote_python, ssh_config, accept_new_host_key)
                   for h in remote or []]
    except ValueError as exc:
        raise fail(UsageError(f"bad option: {exc}"), debug) from exc
    try:
        output_file(junit, "--junit", creates=output_root(out, config))
    except UsageError as exc:
        raise fail(exc, debug) from exc

    lead = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 shows the progress
    progress = BuildProgress(target or "the target", quiet=quiet, debug=level == "debug")

    try:
        with catch_interrupts(), progress if lead else contextlib.nullcontext():
            from edgekd.pipeline.api import build as run_build  # torch: seconds to import

            mute_third_party(level == "debug")  # torch has just set up its own loggers
            result = run_build(target, config=config, out=out, settings=items + (settings or []),
                               model=model, weights=weights, budget=budget, fresh=fresh,
                               origins=origins,
                               trust_pickle=trust_pickle, remotes=remotes,
                               on_step=progress.step if lead else None,
                               on_progress=progress.progress if lead else None)
    except EdgekdError as exc:
        raise fail(exc, debug) from exc
    except KeyboardInterrupt:
        raise interrupted("nothing was written; the previous build (if any) is "
                           "untouched") from None
    except OSError as exc:
        raise fail(os_error(exc), debug) from exc
    if not result.report:  # another rank under torchrun; rank 0 reports
        return
    print_summary(result.report, result.out_dir)
    if check or strict or junit is not None:  # --junit implies --check
        raise typer.Exit(run_check(result.out_dir / "report.json", budget, junit, strict))
