"""The ``edgekd`` command line. The only module that prints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.table import Table

import edgekd
from edgekd.errors import EdgekdError, UsageError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Distill, prune, INT8-quantize, export and verify PyTorch models for "
                       "edge runtimes.")
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def _fail(exc: EdgekdError, debug: bool) -> typer.Exit:
    if debug:
        err_console.print_exception()
    err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
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
    from edgekd.targets import all_targets

    try:
        found = all_targets()
    except EdgekdError as exc:
        raise _fail(exc, False) from exc
    table = Table("target", "runtimes", "threads", "description")
    for t in found:
        table.add_row(t.name, ", ".join(t.runtimes), str(t.threads), t.description)
    console.print(table)



@app.command()
def build(
    target: Annotated[str, typer.Option("--target", "-t", help="Target name (edgekd targets).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output root; artifacts go to "
                                      "OUT/<target>.")] = Path("build"),
    seed: Annotated[int, typer.Option(help="Seed for splits, initialisation and "
                                      "shuffling.")] = 0,
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
    debug: Annotated[bool, typer.Option(help="Show tracebacks and converter logs.")] = False,
) -> None:
    """Run the whole pipeline for TARGET on the built-in digits default."""
    from dataclasses import replace

    from edgekd.config import BuildConfig

    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        config = BuildConfig(seed=seed)
        if temperature is not None or alpha is not None or epochs is not None:
            config = replace(config, distill=replace(
                config.distill,
                temperature=config.distill.temperature if temperature is None else temperature,
                alpha=config.distill.alpha if alpha is None else alpha,
                epochs=config.distill.epochs if epochs is None else epochs))
        if epochs is not None:
            config = replace(config, student=replace(config.student, epochs=epochs))
        if sparsity is not None:
            config = replace(config, prune=replace(config.prune, sparsity=sparsity))
        if min_agreement is not None:
            config = replace(config, min_agreement=min_agreement)
        if runs is not None:
            config = replace(config, bench=replace(config.bench, runs=runs))
    except ValueError as exc:
        raise _fail(UsageError(f"bad option: {exc}"), debug) from exc

    from edgekd.pipeline import build as run_build

    status = console.status(f"building for [bold]{target}[/] …", spinner="dots")

    def on_step(name: str, detail: str) -> None:
        console.print(f"[green]✓[/] [bold]{name}[/] {detail}")
        status.update(f"building for [bold]{target}[/] … (done: {name})")

    try:
        with status:
            result = run_build(target, out=out, config=config, on_step=on_step)
    except EdgekdError as exc:
        raise _fail(exc, debug) from exc
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] nothing was written; the previous build "
                          "(if any) is untouched")
        raise typer.Exit(130) from None
    _summary(result.report, result.out_dir)


def _summary(report: dict, out_dir: Path) -> None:
    stages = Table("stage", "params", "non-zero", "accuracy", title="Models", box=box.SIMPLE)
    for s in report["stages"]:
        stages.add_row(s["name"], f"{s['params']:,}", f"{s['nonzero_params']:,}",
                       f"{s['accuracy']:.2%}")
    console.print(stages)
    arts = Table("artifact", "KiB", "acc.", "agree", "p50 ms", "p99 ms", "RSS MB",
                 title="Artifacts, verified in their runtimes", box=box.SIMPLE)
    arts.columns[0].no_wrap = True
    for a in report["artifacts"]:
        arts.add_row(a["path"], f"{a['size_bytes'] / 1024:.1f}", f"{a['accuracy']:.2%}",
                     f"{a['top1_agreement']:.2%}", f"{a['latency_ms']['p50']:.3f}",
                     f"{a['latency_ms']['p99']:.3f}", f"{a['peak_rss_mb']:.0f}")
    console.print(arts)
    s = report["summary"]
    console.print(f"student: {s['compression']:.1f}× fewer parameters than the teacher; "
                  f"distillation {s['distillation_gain_points']:+.2f} points vs scratch; "
                  f"built in {report['build_seconds']:.0f} s")
    console.print(f"reports: {out_dir / 'report.md'}, {out_dir / 'report.json'}, "
                  f"{out_dir / 'manifest.json'}")


def main() -> None:
    app()
