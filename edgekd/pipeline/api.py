"""``edgekd.build(...)``: the ``edgekd build`` command as a Python function, same options.

    import edgekd
    result = edgekd.build("raspberrypi", config="edgekd.toml",
                          settings={"prune.sparsity": 0.7}, fresh=False)
    result.report["artifacts"]       # what report.json holds

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
from edgekd.settings.project import Project, load_project

if TYPE_CHECKING:
    from edgekd.pipeline.run import BuildResult, StepCallback
    from edgekd.pipeline.training import EpochCallback

DEFAULT_TARGET = "raspberrypi"


def _items(settings: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if settings is None:
        return []
    if isinstance(settings, Mapping):
        return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in settings.items()]
    return list(settings)


def _here(path: str, cwd: Path) -> str:
    """A path given on the command line starts at the current folder, not the project's."""
    return str((cwd / Path(path).expanduser()).resolve())


def model_settings(model: str | None, weights: str | None, cwd: Path | None = None
                   ) -> list[str]:
    """``--model`` / ``--weights`` as settings: an ``.onnx`` file or a ``module:factory``."""
    cwd = cwd or Path.cwd()
    if model is None:
        if weights is not None:
            raise UsageError("--weights needs --model (the factory the weights belong to)")
        return []
    if model.endswith(".onnx"):
        if weights is not None:
            raise UsageError("--weights is for a PyTorch --model; an ONNX file holds its own")
        return [f"model.onnx={_here(model, cwd)}"]
    if ":" not in model:
        raise UsageError(f"--model {model!r}: give an .onnx file or a PyTorch factory as "
                         "path/to/file.py:function or package.module:function")
    target, _, fn = model.rpartition(":")
    if target.endswith(".py"):
        model = f"{_here(target, cwd)}:{fn}"
    return [f"model.student={model}"] + (
        [f"model.student_weights={_here(weights, cwd)}"] if weights else [])


def load(config: str | Path | BuildConfig | None = None, *,
         settings: Mapping[str, Any] | Sequence[str] | None = None, model: str | None = None,
         weights: str | None = None, seed: int | None = None, cwd: Path | None = None
         ) -> Project:
    """The project a build would use: the file (or ``edgekd.toml`` in ``cwd``, or the
    built-in demonstration) with ``model`` / ``weights`` / ``seed`` / ``settings`` on top."""
    items = _items(settings)
    if seed is not None:
        items.insert(0, f"seed={seed}")
    built = config if isinstance(config, BuildConfig) else None
    path = None if isinstance(config, BuildConfig) or config is None else Path(config)
    extra = model_settings(model, weights, cwd)
    if extra:  # --model replaces the file's [model] (keeping its task)
        project = load_project(path, cwd=cwd)
        task = project.model.task if project.model else "classification"
        items = [*extra, f"model.task={task}", *items]
        project = load_project(path, items, cwd=cwd, replace_model=True)
    else:
        project = load_project(path, items, cwd=cwd)
    return replace(project, build=built) if built is not None else project


def _project_out(project: Project, cwd: Path) -> Path:
    """The project's ``out``: relative to the project folder and inside it (symlinks
    resolved), or an absolute path as the user wrote it; ``build`` in ``cwd`` without one.
    (``--out`` on the command line is the user's own choice, relative to the current folder.)"""
    from edgekd.inputs.model_files import resolve_path

    if not project.out:
        return cwd / "build"
    return resolve_path(project.out, project.root, "out", must_exist=False)


def build(target: str | None = None, *, config: str | Path | BuildConfig | None = None,
          out: str | Path | None = None, settings: Mapping[str, Any] | Sequence[str] | None
          = None, model: str | None = None, weights: str | None = None,
          seed: int | None = None, budget: str | Path | None = None, fresh: bool = False,
          trust_pickle: bool = False, remotes: Sequence[Any] = (),
          on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None,
          cwd: str | Path | None = None) -> BuildResult:
    """Build ``target`` (default: the project file's ``target``, else ``raspberrypi``).

    ``config``: a project file (default ``edgekd.toml`` in ``cwd`` if there is one, else the
    built-in digits demonstration) or a :class:`BuildConfig`. ``settings``: overrides as
    ``{"section.key": value}`` or ``["section.key=value"]``. ``model``: an ``.onnx`` file or a
    ``module:factory`` (with ``weights``) to build instead of the project's. ``out``: the
    output root (default: the project's ``out``, else ``build``). ``on_step(name, detail)``
    and ``on_epoch(stage, report)`` hear the progress (steps as they end, training epochs).
    Training threads are the setting ``train.threads``. The rest as on the CLI.
    """
    from edgekd.pipeline.run import build as run_build
    from edgekd.settings.budgets import load_budget_file

    here = Path(cwd) if cwd is not None else Path.cwd()
    project = load(config, settings=settings, model=model, weights=weights, seed=seed,
                   cwd=here)
    name = target or project.target or DEFAULT_TARGET
    if out is None:
        out = _project_out(project, here)
    limits = load_budget_file(Path(budget)) if budget else None
    return run_build(name, out=Path(out), project=project, on_step=on_step,
                     on_epoch=on_epoch, budget=limits,
                     budget_source=str(budget) if budget else None, remotes=remotes,
                     fresh=fresh, trust_pickle=trust_pickle)
