"""The ``edgekd`` command line. It and :mod:`edgekd.cli.display` are the only modules that
print."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

import edgekd
from edgekd.cli.display import (
    BuildProgress,
    console,
    err_console,
    print_bench,
    print_checks,
    print_summary,
    setup_logging,
)
from edgekd.common.interrupts import catch_interrupts, interrupt_exit_code
from edgekd.errors import EdgekdError, UsageError
from edgekd.measure.bench import bench_specs

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distill, prune, INT8-quantize, export and verify PyTorch models for "
                       "edge runtimes.")


def _fail(exc: EdgekdError, debug: bool) -> typer.Exit:
    if debug:
        err_console.print_exception()
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _version(value: bool) -> None:
    if value:
        console.print(f"edgekd {edgekd.__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version,
                                                is_eager=True, help="Print the version.")]
          = False) -> None:
    """edgekd: one command from PyTorch to verified ONNX Runtime, OpenVINO and LiteRT models."""


@app.command()
def targets() -> None:
    """List the deployment targets."""
    from edgekd.settings.targets import all_targets

    try:
        found = all_targets()
    except EdgekdError as exc:
        raise _fail(exc, False) from exc
    table = Table("target", "runtimes", "threads", "description")
    for t in found:
        table.add_row(t.name, ", ".join(t.runtimes), str(t.threads), t.description)
    console.print(table)



def _output_file(path: Path | None, flag: str, creates: Path | None = None) -> None:
    """Refuse, before any work, a file that could not be written at the end. Folders are not
    created: a typo in a path should not leave new folders behind. The one exception is a
    folder inside ``creates``, the output root the build itself makes (``--junit
    build/budgets.xml`` beside the build)."""
    if path is None:
        return
    folder = path.parent
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a folder: give the path of a file")
    inside = creates is not None and (folder.resolve() == creates.resolve()
                                      or creates.resolve() in folder.resolve().parents)
    if inside:
        return
    if not folder.is_dir():
        raise UsageError(f"{flag} {path}: the folder {folder} does not exist: create it "
                         "first or choose another path")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                   and not os.access(path, os.W_OK)):
        raise UsageError(f"{flag} {path} is not writable: choose another path or fix its "
                         "permissions")


def _output_root(out: Path | None, config: Path | None) -> Path:
    """Where a build writes: --out, else the project file's ``out``, else ./build."""
    if out is not None:
        return out
    from edgekd.settings.project import PROJECT_FILE, load_project

    try:
        project = load_project(config, cwd=Path.cwd()) if (
            config or Path(PROJECT_FILE).is_file()) else None
    except EdgekdError:  # a broken project file is reported by the build itself
        project = None
    return project.root / project.out if project and project.out else Path("build")


def _interrupted(what: str) -> typer.Exit:
    """SIGINT, SIGTERM or SIGHUP: one line, exit 128 + the signal (130, 143, 129)."""
    err_console.print(f"[bold red]interrupted:[/] {what}", soft_wrap=True)
    return typer.Exit(interrupt_exit_code())


# Options shared by `bench --remote` and `build --remote`.
RemotePython = Annotated[str, typer.Option(help="Python on the remote device.")]
SshConfig = Annotated[Path | None, typer.Option(help="ssh -F FILE.")]
AcceptNewHostKey = Annotated[bool, typer.Option(
    help="Trust a host key seen for the first time (ssh accept-new).")]


@app.command()
def bench(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifact(s): .onnx, .xml (OpenVINO "
                                                    "IR) or .tflite.", show_default=False)],
    target: Annotated[str | None, typer.Option("--target", "-t", help="Take threads and "
                                               "execution providers from this target.")] = None,
    runtime: Annotated[str | None, typer.Option(help="onnxruntime | openvino | tflite "
                                                "(default: from the file suffix).")] = None,
    threads: Annotated[int | None, typer.Option(help="Runtime threads (default: the "
                                                "target's, else all cores).")] = None,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 50,
    runs: Annotated[int | None, typer.Option(help="Timed runs (at least).")] = None,
    seconds: Annotated[float | None, typer.Option(help="Time spent on timed runs (at "
                                                  "least).")] = None,
    batch: Annotated[int, typer.Option(help="Batch size of the input.")] = 1,
    shape: Annotated[str | None, typer.Option(help="Full input shape, e.g. 1,3,224,224, for "
                                              "models with dynamic dimensions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the input tensors.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results to this "
                                                  "JSON file.")] = None,
    remote: Annotated[list[str] | None, typer.Option(help="Benchmark on user@host over SSH "
                                                     "(repeat for several, run in parallel)."
                                                     )] = None,
    remote_python: RemotePython = "python3",
    ssh_config: SshConfig = None,
    accept_new_host_key: AcceptNewHostKey = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks.")] = False,
) -> None:
    """Measure latency and memory of artifacts, here or on devices over SSH (no torch needed)."""
    from edgekd.measure.bench import run_bench

    try:
        _output_file(json_out, "--json")
        if runs is None and seconds is None:
            runs, seconds = 200, 2.0  # at least 200 runs and 2 s, whichever takes longer
        try:
            input_shape = tuple(int(v) for v in shape.split(",")) if shape else None
            specs = bench_specs(artifacts, runtime, target, threads, bool(remote),
                                 warmup=warmup, runs=runs, seconds=seconds, batch=batch,
                                 input_shape=input_shape, seed=seed)
        except ValueError as exc:
            raise UsageError(f"bad option: {exc}") from exc
        results: list[dict] = []
        errors: list[str] = []
        if remote:
            from edgekd.measure.remote import Remote, bench_hosts

            try:
                hosts = [Remote(h, remote_python, ssh_config, accept_new_host_key)
                         for h in remote]
            except ValueError as exc:
                raise UsageError(str(exc)) from exc
            with catch_interrupts(), console.status(f"benchmarking on {', '.join(remote)} …"):
                for got in bench_hosts(hosts, specs).values():
                    if isinstance(got, EdgekdError):
                        errors.append(str(got))
                    else:
                        results += got
        else:
            with catch_interrupts(), console.status("benchmarking …"):
                results = [run_bench(s) for s in specs]
    except EdgekdError as exc:
        raise _fail(exc, debug) from exc
    except KeyboardInterrupt:
        raise _interrupted("the benchmark was stopped; nothing was written") from None
    for r in results:
        print_bench(r)
    if json_out:
        from edgekd.report.model import write_json

        try:
            write_json(json_out, {"benchmarks": results, "errors": errors})
        except OSError as exc:
            raise _fail(_os_error(exc), debug) from exc
    for e in errors:
        err_console.print(f"[bold red]error:[/] {escape(e)}", soft_wrap=True)
    if errors:
        raise typer.Exit(1)


@app.command()
def check(
    report: Annotated[Path, typer.Argument(help="report.json of a build (or edgekd bench "
                                           "--json output).", show_default=False)],
    budget: Annotated[Path | None, typer.Option(help="TOML file with a [budget] table "
                                                "(default: the target's budget recorded "
                                                "in the report).")] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write JUnit XML here.")] = None,
) -> None:
    """Compare a report against its budgets: exit 1 if any is broken, 0 if all hold."""
    raise typer.Exit(_check(report, budget, junit))


def _check(report_path: Path, budget_path: Path | None, junit: Path | None) -> int:
    from edgekd.report.gate import budget_checks, junit_xml, load_report
    from edgekd.settings.budgets import load_budget_file, parse_budget

    try:
        _output_file(junit, "--junit")
        report = load_report(report_path)
        if budget_path:
            budget, source = load_budget_file(budget_path), str(budget_path)
        else:
            recorded = report.get("budget") or {}
            budget = parse_budget(recorded.get("limits", {}), str(report_path),
                                  "budget.limits")
            source = recorded.get("source", str(report_path))
        if budget.empty:
            raise UsageError(f"no budgets to check in {source}: add a [budget] table to the "
                             "target file or pass --budget FILE")
        checks = budget_checks(report, budget)
    except EdgekdError as exc:
        raise _fail(exc, False) from exc
    print_checks([c.to_dict() for c in checks], source)
    if junit:
        try:
            junit.parent.mkdir(parents=True, exist_ok=True)  # checked first: see _output_file
            junit.write_text(junit_xml(checks, source), encoding="utf-8")
        except OSError as exc:
            raise _fail(_os_error(exc), False) from exc
    return 1 if any(not c.ok for c in checks) else 0


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the project file.")]
    = Path("edgekd.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter project file (edgekd.toml) to fill in."""
    from edgekd.settings.project import STARTER

    if path.exists() and not force:
        raise _fail(UsageError(f"{path} already exists: edit it, or pass --force to replace it"),
                    False)
    try:
        path.write_text(STARTER, encoding="utf-8")
    except OSError as exc:
        raise _fail(UsageError(f"cannot write {path} ({exc.strerror}): choose another path"),
                    False) from exc
    console.print(f"wrote {path}: name your model and data in it, then run `edgekd build`")


def _legacy(seed: int | None, temperature: float | None, alpha: float | None,
            epochs: int | None, sparsity: float | None, min_agreement: float | None,
            runs: int | None) -> list[str]:
    """The named build flags as ``section.key=value`` settings."""
    pairs = [("seed", seed), ("distill.temperature", temperature), ("distill.alpha", alpha),
             ("distill.epochs", epochs), ("student.epochs", epochs),
             ("prune.sparsity", sparsity), ("min_agreement", min_agreement),
             ("bench.runs", runs)]
    # JSON, as --set reads it: inf and nan stay numbers (and are refused as such).
    return [f"{k}={json.dumps(v)}" for k, v in pairs if v is not None]


def _os_error(exc: OSError) -> EdgekdError:
    """A failed write (full disk, quota, permissions) as one line; the staging folder is gone
    by now and an earlier build is untouched."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return EdgekdError(f"no space left on the device{where}: free some disk space or "
                           "choose another --out; nothing was written and the previous build "
                           "is untouched")
    return EdgekdError(f"{exc.strerror or exc}{where}: check the path and its permissions "
                       "(--debug shows where it happened)")


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
    junit: Annotated[Path | None, typer.Option(help="With --check: JUnit XML here.")] = None,
    remote: Annotated[list[str] | None, typer.Option(help="Also benchmark the artifacts on "
                                                     "user@host over SSH (repeatable).")]
    = None,
    remote_python: RemotePython = "python3",
    ssh_config: SshConfig = None,
    accept_new_host_key: AcceptNewHostKey = False,
    threads: Annotated[int | None, typer.Option(
        help="Training threads (setting train.threads; default 0 = half the usable cores: "
        "more threads than free cores make training many times slower).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress: no spinner, "
                                        "epoch bars or step lines; the summary and "
                                        "warnings only.")] = False,
    debug: Annotated[bool, typer.Option(help="Show tracebacks and converter logs.")] = False,
) -> None:
    """Distill, prune, quantize, export, verify and benchmark: the project in ./edgekd.toml
    (or --config, or --model), else the built-in digits demonstration."""
    setup_logging(debug)
    items = _legacy(seed, temperature, alpha, epochs, sparsity, min_agreement, runs)
    if threads is not None:
        items.append(f"train.threads={threads}")
    try:
        from edgekd.measure.remote import Remote

        remotes = [Remote(h, remote_python, ssh_config, accept_new_host_key)
                   for h in remote or []]
    except ValueError as exc:
        raise _fail(UsageError(f"bad option: {exc}"), debug) from exc
    try:
        _output_file(junit, "--junit", creates=_output_root(out, config))
    except UsageError as exc:
        raise _fail(exc, debug) from exc

    lead = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 shows the progress
    progress = BuildProgress(target or "the target", quiet=quiet)

    try:
        with catch_interrupts(), progress if lead else contextlib.nullcontext():
            from edgekd.pipeline.api import build as run_build  # torch: seconds to import

            result = run_build(target, config=config, out=out, settings=items + (settings or []),
                               model=model, weights=weights, budget=budget, fresh=fresh,
                               trust_pickle=trust_pickle, remotes=remotes,
                               on_step=progress.step if lead else None,
                               on_epoch=progress.epoch if lead else None)
    except EdgekdError as exc:
        raise _fail(exc, debug) from exc
    except KeyboardInterrupt:
        raise _interrupted("nothing was written; the previous build (if any) is "
                           "untouched") from None
    except OSError as exc:
        raise _fail(_os_error(exc), debug) from exc
    if not result.report:  # another rank under torchrun; rank 0 reports
        return
    print_summary(result.report, result.out_dir)
    if check:
        raise typer.Exit(_check(result.out_dir / "report.json", budget, junit))


def main() -> None:
    app()
