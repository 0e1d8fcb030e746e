"""``edgekd.build(...)``: the ``edgekd build`` command as a Python function, same options.

    import edgekd
    result = edgekd.build("raspberrypi", config="edgekd.toml",
                          settings={"prune.sparsity": 0.7}, fresh=False)
    result.report["artifacts"]       # what report.json holds

or from objects in memory, no project file needed:

    result = edgekd.build("x86-cpu", teacher=MyTeacher(), student=MyStudent(),
                          data={"train": (x, y), "test": (x_test, y_test)})

Errors are :class:`edgekd.errors.EdgekdError` with the same one-line messages the CLI prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import UsageError
from edgekd.settings.config import BuildConfig
from edgekd.settings.project import TASKS, Project, load_project

if TYPE_CHECKING:
    from edgekd.common.progress import ProgressCallback
    from edgekd.inputs.objects import InMemory
    from edgekd.pipeline.run import BuildResult, StepCallback
    from edgekd.pipeline.training import EpochCallback

DEFAULT_TARGET = "raspberrypi"


def _items(settings: Mapping[str, Any] | Sequence[str] | None
           ) -> tuple[list[str], dict[str, str]]:
    """``settings`` as ``section.key=value`` items, and what to call each in a message: the
    Python argument it came from (``settings['prune.sparsity']``)."""
    if settings is None:
        return [], {}
    if isinstance(settings, Mapping):
        items = {f"{k}={v if isinstance(v, str) else json.dumps(v)}": f"settings[{k!r}]"
                 for k, v in settings.items()}
        return list(items), items
    if isinstance(settings, str):
        raise UsageError(f"settings={settings!r}: give a dict ({{'prune.sparsity': 0.7}}) or "
                         "a list of 'section.key=value' strings")
    return list(settings), {s: f"settings item {s!r}" for s in settings}


def _here(path: str, cwd: Path, where: str) -> str:
    """A path given on the command line (or to :func:`build`) starts at the current folder,
    not the project's; one that does not exist is refused here, saying so."""
    full = (cwd / Path(path).expanduser()).resolve()
    if not full.exists():
        raise UsageError(f"{where}: {full} does not exist: check the path (relative to the "
                         "current folder)")
    return str(full)


def model_settings(model: str | None, weights: str | None, cwd: Path | None = None,
                   labels: Mapping[str, str] | None = None) -> list[str]:
    """``--model`` / ``--weights`` as settings: an ``.onnx`` file or a ``module:factory``.
    ``labels``: what to call them in messages (default ``--model`` / ``--weights``)."""
    cwd = cwd or Path.cwd()
    labels = labels or {}
    if model is None:
        if weights is not None:
            raise UsageError("--weights needs --model (the factory the weights belong to)")
        return []
    where = labels.get("model", f"--model {model}")
    if model.endswith(".onnx"):
        if weights is not None:
            raise UsageError("--weights is for a PyTorch --model; an ONNX file holds its own")
        return [f"model.onnx={_here(model, cwd, where)}"]
    if ":" not in model:
        raise UsageError(f"{where}: give an .onnx file or a PyTorch factory as "
                         "path/to/file.py:function or package.module:function")
    target, _, fn = model.rpartition(":")
    if target.endswith(".py"):
        model = f"{_here(target, cwd, where)}:{fn}"
    weights_where = labels.get("weights", f"--weights {weights}")
    return [f"model.student={model}"] + (
        [f"model.student_weights={_here(weights, cwd, weights_where)}"] if weights else [])


def load(config: str | Path | BuildConfig | None = None, *,
         settings: Mapping[str, Any] | Sequence[str] | None = None, model: str | None = None,
         weights: str | None = None, seed: int | None = None, cwd: Path | None = None,
         target: str | None = None, budget: str | Path | None = None,
         check_inputs: bool = True, origins: Mapping[str, str] | None = None) -> Project:
    """The project a build would use: the file (or ``edgekd.toml`` in ``cwd``, or the
    built-in demonstration) with ``model`` / ``weights`` / ``seed`` / ``settings`` on top.

    Before it returns, the preflight (:func:`edgekd.inputs.preflight.preflight`) checks the
    target (``target``, else the project's), the ``budget`` file and, with
    ``check_inputs``, every file the project names, without importing torch or a runtime:
    every problem found is in the one :class:`UsageError` it raises. Pass
    ``check_inputs=False`` when objects in memory replace the project's model and data.
    ``origins``: what to call each setting in messages, by item (``"prune.sparsity=2"``) or
    by argument (``"model"``, ``"weights"``, ``"seed"``): the command line passes its flags;
    by default they are named as the Python arguments they came from."""
    from edgekd.inputs.preflight import preflight

    items, named = _items(settings)
    named.update(origins or {})
    if seed is not None:
        items.insert(0, f"seed={seed}")
        named.setdefault(f"seed={seed}", named.get("seed", f"seed={seed}"))
    built = config if isinstance(config, BuildConfig) else None
    path = None if isinstance(config, BuildConfig) or config is None else Path(config)
    labels = {"model": named.get("model", f"model={model!r}"),
              "weights": named.get("weights", f"weights={weights!r}")}
    extra = model_settings(model, weights, cwd, labels)
    if extra:  # --model replaces the file's [model] (keeping its task)
        project = load_project(path, cwd=cwd)
        task = project.model.task if project.model else "classification"
        named.update({e: labels["weights" if e.startswith("model.student_weights=") else "model"]
                      for e in extra})
        items = [*extra, f"model.task={task}", *items]
        project = load_project(path, items, cwd=cwd, replace_model=True, origins=named)
    else:
        project = load_project(path, items, cwd=cwd, origins=named)
    preflight(project, target=target, budget=Path(budget) if budget else None,
              inputs=check_inputs)
    return replace(project, build=built) if built is not None else project


def _project_out(project: Project, cwd: Path) -> Path:
    """The project's ``out``: relative to the project folder and inside it (symlinks
    resolved), or an absolute path as the user wrote it; ``build`` in ``cwd`` without one.
    (``--out`` on the command line is the user's own choice, relative to the current folder.)"""
    from edgekd.inputs.model_files import resolve_path

    if not project.out:
        return cwd / "build"
    return resolve_path(project.out, project.root, "out", must_exist=False)


def _objects(teacher: Any, student: Any, data: Any, train_teacher: bool, task: str | None,
             model: str | None) -> InMemory | None:
    """The objects given to :func:`build`, checked before any work (None: none given)."""
    if teacher is None and student is None and data is None:
        if train_teacher or task is not None:
            raise UsageError("train_teacher= and task= are for models given as objects: pass "
                             "student= (and teacher=)")
        return None
    if student is not None and model is not None:
        raise UsageError("give the model once: student= (a torch.nn.Module) or model= (an "
                         ".onnx file or module:factory), not both")
    if task is not None and task not in TASKS:
        raise UsageError(f"task={task!r}: choose one of {', '.join(TASKS)}")
    from edgekd.inputs.objects import InMemory

    return InMemory(student=student, teacher=teacher, data=data, train_teacher=train_teacher,
                    task=task)


def build(target: str | None = None, *, config: str | Path | BuildConfig | None = None,
          out: str | Path | None = None, settings: Mapping[str, Any] | Sequence[str] | None
          = None, model: str | None = None, weights: str | None = None,
          seed: int | None = None, budget: str | Path | None = None, fresh: bool = False,
          trust_pickle: bool = False, remotes: Sequence[Any] = (),
          on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None,
          on_progress: ProgressCallback | None = None,
          cwd: str | Path | None = None, teacher: Any | None = None,
          student: Any | None = None, data: Any | None = None, train_teacher: bool = False,
          task: str | None = None, origins: Mapping[str, str] | None = None) -> BuildResult:
    """Build ``target`` (default: the project file's ``target``, else ``raspberrypi``).

    ``config``: a project file (default ``edgekd.toml`` in ``cwd`` if there is one, else the
    built-in digits demonstration) or a :class:`BuildConfig`. ``settings``: overrides as
    ``{"section.key": value}`` or ``["section.key=value"]``. ``model``: an ``.onnx`` file or a
    ``module:factory`` (with ``weights``) to build instead of the project's. ``out``: the
    output root (default: the project's ``out``, else ``build``). ``on_step(name, detail)``
    and ``on_epoch(stage, report)`` hear the progress (steps as they end, training epochs);
    ``on_progress(event)`` hears every :class:`edgekd.common.progress.Progress` event (steps
    starting and ending, training epochs and batches, calibration, conversions).
    Training threads are the setting ``train.threads``. The rest as on the CLI.

    Objects instead of files: ``student`` a ``torch.nn.Module`` (with ``teacher``, another
    one, it is distilled; without, it is a finished model, deployed as it is); ``data`` numpy
    arrays ``(x, y)``, an edgekd ``Dataset``, a torch ``Dataset`` / ``DataLoader`` yielding
    ``(x, y)`` or ``(dict of inputs, y)``, or ``{"train": ..., "test": ...,
    "calibration": ..., "validation": ...}`` of those (samples taken as given, already
    preprocessed). They replace the project's ``[model]`` / ``[data]``; the modules are copied,
    never changed. ``train_teacher``: the teacher is untrained, train it first. ``task``:
    ``classification`` (default) or ``regression``. ``origins``: see :func:`load`.
    """
    from edgekd.settings.budgets import load_budget_file

    here = Path(cwd) if cwd is not None else Path.cwd()
    objects = _objects(teacher, student, data, train_teacher, task, model)
    # The whole project is checked (preflight) before torch and the converters load: a
    # missing folder is reported in a second, not after the imports.
    project = load(config, settings=settings, model=model, weights=weights, seed=seed,
                   cwd=here, target=target, budget=budget, check_inputs=objects is None,
                   origins=origins)
    from edgekd.pipeline.run import build as run_build  # torch: after the preflight

    name = target or project.target or DEFAULT_TARGET
    if out is None:
        out = _project_out(project, here)
    limits = load_budget_file(Path(budget)) if budget else None
    return run_build(name, out=Path(out), project=project, on_step=on_step,
                     on_epoch=on_epoch, on_progress=on_progress, budget=limits,
                     budget_source=str(budget) if budget else None, remotes=remotes,
                     fresh=fresh, trust_pickle=trust_pickle, objects=objects)
