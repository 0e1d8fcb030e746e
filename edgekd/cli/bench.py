"""``edgekd bench``: latency and memory of artifacts, here or on devices over SSH."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

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
)
from edgekd.cli.display import console, err_console, print_bench
from edgekd.cli.logs import setup_logging
from edgekd.common.interrupts import catch_interrupts
from edgekd.errors import EdgekdError, UsageError
from edgekd.measure.bench import bench_specs


@app.command()
def bench(
    artifacts: Annotated[list[Path], typer.Argument(help="Artifact(s): .onnx, .xml (OpenVINO "
                                                    "IR) or .tflite.", show_default=False)],
    target: Annotated[str | None, typer.Option("--target", "-t", help="Take threads and "
                                               "execution providers from this target (--json "
                                               "records it: edgekd check takes its budget)."
                                               )] = None,
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
    log_level_: LogLevelOption = LogLevel.warning,
    debug: Annotated[bool, typer.Option(help="Show tracebacks (implies --log-level debug).")]
    = False,
) -> None:
    """Measure latency and memory of artifacts, here or on devices over SSH (no torch needed)."""
    from edgekd.measure.bench import run_bench

    setup_logging(log_level(log_level_, debug))

    try:
        output_file(json_out, "--json")
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
            with catch_interrupts(), console.status("benchmarking …") as status:
                for i, s in enumerate(specs, 1):  # one worker process per artifact, in turn
                    what = f"benchmarking {s.artifact.name} ({i} of {len(specs)}) …"
                    status.update(escape(what))
                    if not console.is_terminal:  # a log: a line per artifact
                        console.print(escape(what), soft_wrap=True)
                    results.append(run_bench(s))
    except EdgekdError as exc:
        raise fail(exc, debug) from exc
    except KeyboardInterrupt:
        raise interrupted("the benchmark was stopped; nothing was written") from None
    for r in results:
        print_bench(r)
    if json_out:
        from edgekd.report.model import write_json

        try:
            # The target, so that edgekd check takes its budget from it.
            write_json(json_out, {"benchmarks": results, "errors": errors}
                       | ({"target": target} if target else {}))
        except OSError as exc:
            raise fail(os_error(exc), debug) from exc
    for e in errors:
        err_console.print(f"[bold red]error:[/] {escape(e)}", soft_wrap=True)
    if errors:
        raise typer.Exit(1)
