"""``build``: the whole pipeline, top to bottom.

    project inputs (data, models)
      -> training stages (pipeline.training: teacher -> student from scratch, the baseline ->
         distilled student -> pruned + fine-tuned student, each in the stage cache)
      -> deploy steps (pipeline.deploy: quantize -> export -> verify -> choose -> measure ->
         assemble)
      -> report.json, report.md, report.html, manifest.json in OUT/<target>

A finished model (trained weights or an ONNX file) skips the training stages. Everything is
written into a staging folder that replaces OUT/<target> only when the build succeeds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgekd.backends import get_backend
from edgekd.common.interrupts import raise_if_interrupted
from edgekd.common.progress import ProgressCallback, emit, reporting
from edgekd.errors import UsageError
from edgekd.inputs.digits import load_digits
from edgekd.inputs.objects import InMemory
from edgekd.inputs.resolve import Inputs, resolve
from edgekd.measure.remote import Remote
from edgekd.pipeline.choosing import choose
from edgekd.pipeline.deploy import (
    Deploy,
    Model,
    assemble,
    export,
    model_of,
    quantize,
)
from edgekd.pipeline.measuring import measure
from edgekd.pipeline.training import EpochCallback, run_training
from edgekd.pipeline.verifying import verify
from edgekd.report.html import render_html
from edgekd.report.markdown import render_markdown
from edgekd.report.model import build_manifest, write_json
from edgekd.report.package import write_package
from edgekd.report.staging import build_lock, check_replaceable, staged_dir
from edgekd.settings.budgets import Budget
from edgekd.settings.config import BuildConfig
from edgekd.settings.project import Project
from edgekd.settings.resources import default_calibration_file
from edgekd.settings.targets import Target, load_target
from edgekd.train.loop import distributed
from edgekd.train.stage_cache import StageCache, save_weights
from edgekd.train.students import student_from_teacher

log = logging.getLogger(__name__)

StepCallback = Callable[[str, str], None]  # (step name, one-line result)


@dataclass(frozen=True)
class BuildResult:
    out_dir: Path
    report: dict[str, Any]


@dataclass
class _Steps:
    """Times each step and tells the caller (the CLI's progress display) when one starts
    and ends; what runs inside a step reports its progress as that step's
    (:func:`edgekd.common.progress.reporting`).

    A step's time is its own work: a step that runs inside another (the teacher's outputs,
    computed when the distilled student first needs them) is taken out of the outer one's.

    Between steps, a Ctrl-C or SIGTERM that a library swallowed (a KeyboardInterrupt raised
    inside a ``__del__`` or a callback is only printed) is raised again, and edgekd's signal
    handler is put back if a library replaced it (see :func:`raise_if_interrupted`)."""

    on_step: StepCallback | None
    on_progress: ProgressCallback | None = None
    _inner: list[float] = field(default_factory=list)  # time of the steps inside, per level

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, str]]:
        raise_if_interrupted()
        result = {"detail": ""}
        start = time.perf_counter()
        self._inner.append(0.0)
        try:
            with reporting(self.on_progress, name):
                emit("step", 0, 1, "step")
                yield result
                own = time.perf_counter() - start - self._inner[-1]
                emit("step", 1, 1, "step", seconds=own)
        finally:
            self._inner.pop()
            if self._inner:
                self._inner[-1] += time.perf_counter() - start
        raise_if_interrupted()
        log.info("%s: %s (%.1f s)", name, result["detail"], own)
        if self.on_step:
            detail = result["detail"]
            timing = f"({own:.1f} s)"
            if detail.endswith(" (cached)"):  # one parenthesis: "99.38% (cached, 0.2 s)"
                detail, timing = detail.removesuffix(" (cached)"), f"(cached, {own:.1f} s)"
            self.on_step(name, f"{detail} {timing}")


def _threads(target: Target) -> int:
    # A target's thread count is for its own device; on a host with fewer cores, more
    # threads than cores only measure contention.
    return max(1, min(target.threads, os.cpu_count() or 1))


def _builtin(project: Project) -> Inputs:
    """The demonstration without a project file: digits, the built-in teacher and student."""
    from edgekd.train.models import student_model, teacher_cnn

    config = project.build
    data = load_digits(default_calibration_file(), seed=config.seed)
    return Inputs(data=data, task="classification",
                  student=lambda: student_model(config.student_model, data.num_classes or 10),
                  teacher=lambda: teacher_cnn(data.num_classes or 10), teacher_trains=True,
                  teacher_key="edgekd.train.models:teacher_cnn",
                  student_key=f"edgekd.train.models:{config.student_model}",
                  model={"teacher": "edgekd.train.models:teacher_cnn",
                         "student": f"edgekd.train.models:{config.student_model}"})


def target_for(target: str | Target, project: Project) -> Target:
    """The target by name (or as given), cut to the project's ``runtimes`` when it names some."""
    target = load_target(target) if isinstance(target, str) else target
    if project.runtimes:  # a subset of the target's runtimes, in the target's order
        extra = [r for r in project.runtimes if r not in target.runtimes]
        if extra:
            raise UsageError(f"runtimes: {extra[0]!r} is not a runtime of target "
                             f"{target.name!r} ({', '.join(target.runtimes)}): choose from those")
        target = replace(target, runtimes=tuple(r for r in target.runtimes
                                                if r in project.runtimes))
    return target


def build(target: str | Target = "raspberrypi", *, out: Path | str = "build",
          config: BuildConfig | None = None, project: Project | None = None,
          on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None,
          on_progress: ProgressCallback | None = None,
          budget: Budget | None = None, budget_source: str | None = None,
          remotes: Sequence[Remote] = (), fresh: bool = False, trust_pickle: bool = False,
          objects: InMemory | None = None, search: dict[str, Any] | None = None
          ) -> BuildResult:
    """Run the whole pipeline for ``target``; artifacts and reports go to ``out/<target>``.

    ``project`` says what to build from (default: the built-in digits demonstration);
    ``config`` replaces its settings. ``budget`` replaces the target's ``[budget]``; its
    checks are recorded in the report (``edgekd check`` or ``build --check`` turn them into
    an exit code). ``remotes`` are devices the artifacts are also benchmarked on, over SSH.
    Training stages are cached under ``out/.cache``; ``fresh`` ignores that cache.
    ``trust_pickle`` lets weights files that are full pickles run their code when loaded.
    ``objects``: modules and data given in memory (``edgekd.build(student=..., data=...)``),
    in place of the project's ``[model]`` / ``[data]``.
    ``search``: the summary of the ``edgekd search`` that chose this model
    (:mod:`edgekd.search`), kept as ``report["search"]``.
    ``on_step(name, detail)`` hears each step as it ends, ``on_epoch(stage, report)`` each
    epoch of a training stage (:class:`edgekd.train.loop.EpochReport`), ``on_progress``
    every :class:`edgekd.common.progress.Progress` event (each step's start and end,
    training epochs and batches, calibration, conversions).
    """
    started = time.perf_counter()
    project = project or Project(root=Path.cwd(), source="built-in")
    if config is not None:
        project = replace(project, build=config)
    target = target_for(target, project)
    for runtime in target.runtimes:  # fail now, not after minutes of training
        get_backend(runtime).check(target)
    for remote in remotes:
        remote.preflight()
    out = Path(out)
    step = _Steps(on_step, on_progress)
    # Under torchrun only rank 0 writes the build, so only rank 0 holds the folder's lock.
    lead = int(os.environ.get("RANK", "0")) == 0
    check_replaceable(out / target.name)  # every rank: all fail at once, none waits for rank 0
    with build_lock(out / target.name) if lead else contextlib.nullcontext():
        inputs = _inputs(project, target, step, trust_pickle, objects)
        trained = None
        if inputs.trains:
            with distributed() as (rank, _size):  # under torchrun, every rank trains
                trained = run_training(
                    teacher=inputs.teacher, student=inputs.student,  # type: ignore[arg-type]
                    teacher_trains=inputs.teacher_trains, teacher_key=inputs.teacher_key,
                    data=inputs.data, config=project.build,
                    cache=StageCache(out / ".cache" / "stages", fresh=fresh),
                    cache_dir=out / ".cache", step=step, on_epoch=on_epoch,
                    student_key=inputs.student_key, derive=inputs.derive)
            if rank != 0:  # the other ranks only helped train; rank 0 does the rest
                return BuildResult(out / target.name, {})
        with staged_dir(out / target.name) as stage:
            ctx = Deploy(stage=stage, project=project, inputs=inputs, target=target,
                         threads=_threads(target), step=step, cache=out / ".cache" / "stages",
                         fresh=fresh, remotes=remotes)
            report = _deploy(ctx, model_of(inputs, trained), started,
                             _budget(project, target, budget, budget_source))
            if search is not None:
                report["search"] = search
            _write_reports(stage, report)
            raise_if_interrupted()  # the last moment a signal can still stop the swap
    return BuildResult(out / target.name, report)


def _deploy(ctx: Deploy, model: Model, started: float, budget: dict[str, Any] | None
            ) -> dict[str, Any]:
    """The deploy steps, model in, model out, inside the staging folder."""
    ctx.work.mkdir()
    measured = measure(ctx, choose(ctx, verify(ctx, export(ctx, quantize(ctx, model)))))
    shutil.rmtree(ctx.work)
    if model.student is not None:
        save_weights(model.student, ctx.stage / "student.safetensors")
    report = dict(assemble(ctx, measured, build_seconds=time.perf_counter() - started,
                           budget=budget))
    # run_<runtime>.py + README.md beside the artifacts, from what the report recorded
    package = write_package(ctx.stage, report, ctx.target.providers)
    write_json(ctx.stage / "manifest.json",
               build_manifest(ctx.target, ctx.inputs.data, ctx.project, ctx.stage,
                              measured.verified.entries, package=package))
    return report


def _inputs(project: Project, target: Target, step: _Steps, trust_pickle: bool,
            objects: InMemory | None = None) -> Inputs:
    """The project's data and models, checked against each other and against the target."""
    with step("data") as s:
        inputs = (_builtin(project) if project.builtin and objects is None
                  else resolve(project, trust_pickle=trust_pickle, objects=objects,
                               derive=student_from_teacher))
        data = inputs.data
        s["detail"] = (f"{data.name}: train {len(data.train)}, test {len(data.test)}, "
                       f"calibration {len(data.calibration)}")
    if inputs.onnx is not None and "tflite" in target.runtimes:
        raise UsageError(
            f"target {target.name!r} includes TFLite, which edgekd converts from PyTorch "
            "(litert-torch), not from ONNX: give the PyTorch model (model.student and "
            "model.student_weights), or build the other runtimes with --set "
            f"'runtimes={json.dumps([r for r in target.runtimes if r != 'tflite'])}'")
    return inputs


def _budget(project: Project, target: Target, budget: Budget | None, source: str | None
            ) -> dict[str, Any] | None:
    """The budget's source and limits (given, the project's, else the target's); the report
    model checks every artifact against them. None when there is no budget."""
    budget = budget if budget is not None else (project.budget_for(target.name)
                                                or target.budget)
    if budget.empty:
        return None
    return {"source": source or (project.source if project.budget_for(target.name)
                                 else f"target {target.name}"),
            "limits": budget.to_dict()}


def _write_reports(stage: Path, report: dict[str, Any]) -> None:
    write_json(stage / "report.json", report)
    (stage / "report.md").write_text(render_markdown(report), encoding="utf-8")
    (stage / "report.html").write_text(render_html(report), encoding="utf-8")

