"""``edgekd quantize``, ``edgekd export``, ``edgekd verify``: one step of a build each, on
the user's own files (:mod:`edgekd.pipeline.steps`), with a short table of the figures.
Nothing is half-written (staged, then moved into place) and an existing file is replaced only
with ``--force``; bad input is one ``error:`` line and exit 2, a failing check exit 1."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from edgekd.cli.app import LogLevel, LogLevelOption, app, fail, interrupted, log_level, os_error
from edgekd.cli.display import console, err_console
from edgekd.cli.logs import setup_logging
from edgekd.common.interrupts import catch_interrupts
from edgekd.errors import EdgekdError, UsageError

Debug = Annotated[bool, typer.Option(help="Show tracebacks (implies --log-level debug).")]
Force = Annotated[bool, typer.Option(help="Replace an existing output file.")]
Task = Annotated[str | None, typer.Option(help="classification | regression (default: "
                                          "outputs shaped [samples, classes] are compared "
                                          "by top-1).")]
LimitOption = Annotated[list[str] | None, typer.Option(
    "--limit", help="A check's limit, NAME=VALUE (repeatable): min_agreement, min_cosine, "
    "max_output_error, min_decision_agreement (default: the build's).", show_default=False)]


def _run(what: str, step: Callable[[], Any], level: LogLevel, debug: bool) -> Any:
    """``step()`` under the CLI's rules: one error line, exit 1 or 2, Ctrl-C handled;
    other libraries' warnings only with --log-level debug."""
    setup_logging(log_level(level, debug))
    try:
        with catch_interrupts(), console.status(f"{what} …"):
            return step()
    except EdgekdError as exc:
        raise fail(exc, debug) from exc
    except OSError as exc:
        raise fail(os_error(exc), debug) from exc
    except KeyboardInterrupt:
        raise interrupted(f"{what} was stopped; nothing was written") from None


def _fig(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _table(checked: Sequence[Any]) -> None:
    labelled = any(c.verification.accuracy is not None for c in checked)
    table = Table("artifact", "runtime", "precision", "samples", "top-1 agreement",
                  "cosine (min)", "max |Δ|", *(("accuracy", "reference accuracy")
                                               if labelled else ()), "check")
    for c in checked:
        v = c.verification
        table.add_row(escape(str(c.path)), c.runtime, c.precision, str(v.samples),
                      _fig(v.top1_agreement, ".2%"), _fig(v.cosine_min, ".4f"),
                      _fig(v.max_abs_diff, ".3g"),
                      *((_fig(v.accuracy, ".2%"), _fig(c.reference_accuracy, ".2%"))
                        if labelled else ()),
                      "[green]pass[/]" if c.passed else "[red]fail[/]")
    console.print(table)
    for on in dict.fromkeys(c.checked_on for c in checked if c.checked_on):
        console.print(f"checked on the {escape(on)}", soft_wrap=True)


def _limits(given: Sequence[str] | None) -> Any:
    """--limit NAME=VALUE over the build's limits."""
    from dataclasses import fields

    from edgekd.measure.verify import Limits

    limits, names = Limits(), [f.name for f in fields(Limits)]
    for item in given or ():
        name, sep, value = item.partition("=")
        try:
            if not sep or name.strip() not in names:
                raise ValueError
            limits = replace(limits, **{name.strip(): float(value)})
        except ValueError:
            raise UsageError(f"--limit {item!r}: give NAME=VALUE, NAME one of "
                             f"{', '.join(names)} (e.g. --limit min_agreement=0.95)") from None
    return limits


def _problems(checked: Sequence[Any]) -> None:
    failed = [c for c in checked if not c.passed]
    for c in failed:
        err_console.print(f"[bold red]error:[/] {escape(c.problem)}", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(v) for v in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise UsageError(f"--example-shape {text!r}: give whole positive numbers separated by "
                         "commas, batch first (e.g. 1,3,32,32)")
    return dims


@app.command()
def quantize(
    model: Annotated[str, typer.Argument(help="The FP32 model: an .onnx file, or a PyTorch "
                                         "factory file.py:function.", show_default=False)],
    data: Annotated[Path, typer.Option(help="Calibration samples: .npy, or .npz (x, or one "
                                       "array per input name), preprocessed as the model "
                                       "takes them.", show_default=False)],
    out: Annotated[Path | None, typer.Option(help="The INT8 file (default: MODEL.int8.onnx "
                                             "beside an ONNX model).")] = None,
    target: Annotated[str | None, typer.Option("--target", "-t", help="Quantize for this "
                                               "target's execution providers.")] = None,
    runtime: Annotated[str, typer.Option(help="onnxruntime (QDQ ONNX) | openvino (IR) | "
                                         "tflite (from a PyTorch factory).")] = "onnxruntime",
    samples: Annotated[int | None, typer.Option(help="Calibration samples used (default: "
                                                "quant.calibration_samples).")] = None,
    method: Annotated[str, typer.Option(help="minmax | percentile | entropy.")] = "minmax",
    weights: Annotated[Path | None, typer.Option(help="Trained weights of a PyTorch factory "
                                                 "(required: without them every call builds "
                                                 "a new random model).")] = None,
    check_data: Annotated[Path | None, typer.Option(help="Samples to check the INT8 model on "
                                                    "(default: --data's samples past the "
                                                    "calibration ones, else a held-out fifth)."
                                                    )] = None,
    limit: LimitOption = None,
    task: Task = None,
    force: Force = False,
    log_level_: LogLevelOption = LogLevel.warning,
    debug: Debug = False,
) -> None:
    """INT8 of one model (static, edgekd's settings), checked against the FP32 model on
    samples it was not calibrated on: nothing else of a build runs."""
    from edgekd.pipeline.steps import quantize as quantize_step

    def step() -> Any:
        from edgekd.settings.config import QuantConfig

        try:
            config = QuantConfig(method=method)
            if samples is not None:
                config = replace(config, calibration_samples=samples)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"bad option: {exc}") from exc
        _model_arg(model, weights)
        return quantize_step(model, data, out=out, runtime=runtime, config=config,
                             weights=weights, target=target, task=task, force=force,
                             check_data=check_data, limits=_limits(limit))

    checked = _run("quantizing", step, log_level_, debug)
    _table([checked])


def _model_arg(model: str, weights: Path | None) -> None:
    """An .onnx file, or a factory (with its weights)."""
    if model.endswith(".onnx"):
        if weights is not None:
            raise UsageError("--weights is for a PyTorch factory; an ONNX file holds its own")
    elif ":" not in model:
        raise UsageError(f"{model!r}: give an .onnx file or a PyTorch factory as "
                         "path/to/file.py:function")


@app.command()
def export(
    model: Annotated[str, typer.Argument(help="The PyTorch model: file.py:function or "
                                         "package.module:function.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Folder for model_fp32.onnx / .xml / .tflite.",
                                      show_default=False)],
    example_shape: Annotated[str | None, typer.Option(
        help="One float input's shape, batch first, e.g. 1,3,32,32 (random values).",
        show_default=False)] = None,
    example: Annotated[Path | None, typer.Option(
        help="Example samples instead: .npy for one input, .npz with one array per input "
        "name (integer token ids stay integers).", show_default=False)] = None,
    weights: Annotated[Path | None, typer.Option(help="Trained weights (.safetensors or a "
                                                 "state dict).")] = None,
    runtime: Annotated[str, typer.Option(help="Comma-separated: onnxruntime, openvino, "
                                         "tflite.")] = "onnxruntime",
    limit: LimitOption = None,
    task: Task = None,
    force: Force = False,
    log_level_: LogLevelOption = LogLevel.warning,
    debug: Debug = False,
) -> None:
    """FP32 artifacts of a PyTorch model for each runtime (the build's exporters), each run
    in its runtime on the --example samples (or a random input of --example-shape) and
    compared with the model. Without --weights: the untrained architecture, with a warning."""
    from edgekd.pipeline.steps import _export

    def step() -> Any:
        import numpy as np

        if (example is None) == (example_shape is None):
            raise UsageError("give one of --example FILE (.npy, or .npz with one array per "
                             "input name) or --example-shape 1,3,32,32 (one float input)")
        given: Any = example
        if example_shape is not None:
            given = np.random.default_rng(0).standard_normal(_shape(example_shape)).astype(
                np.float32)
        runtimes = tuple(r.strip() for r in runtime.split(",") if r.strip())
        if not runtimes:
            raise UsageError("--runtime names no runtime: give onnxruntime, openvino or tflite")
        return _export(model, given, "--example" if example else "--example-shape", out=out,
                       runtimes=runtimes, weights=weights, task=task, limits=_limits(limit),
                       force=force, strict=True, threads=1)

    checked = _run("exporting", step, log_level_, debug)
    _table(checked)


@app.command()
def verify(
    artifact: Annotated[Path, typer.Argument(help="The artifact: .onnx, .xml (OpenVINO IR) "
                                             "or .tflite.", show_default=False)],
    reference: Annotated[str, typer.Option(help="The model it was made from: an .onnx file or "
                                           "file.py:function.", show_default=False)],
    data: Annotated[Path, typer.Option(help="Samples: .npy, or .npz (x and optional labels "
                                       "y, or one array per input name).",
                                       show_default=False)],
    weights: Annotated[Path | None, typer.Option(help="Weights of a PyTorch reference.")]
    = None,
    runtime: Annotated[str | None, typer.Option(help="onnxruntime | openvino | tflite "
                                                "(default: from the file suffix).")] = None,
    limit: LimitOption = None,
    task: Task = None,
    log_level_: LogLevelOption = LogLevel.warning,
    debug: Debug = False,
) -> None:
    """Run an artifact in its runtime and compare it with its reference model (the build's
    verification): exit 1 if it misses the build's limits."""
    from edgekd.pipeline.steps import verify as verify_step

    def step() -> Any:
        _model_arg(reference, weights)
        return verify_step(artifact, reference, data, runtime=runtime, weights=weights,
                           task=task, limits=_limits(limit))

    checked = _run("verifying", step, log_level_, debug)
    _table([checked])
    _problems([checked])
