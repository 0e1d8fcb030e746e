"""The project file, ``edgekd.toml``: the user's model, data, settings and budgets.

One flat TOML file in the project folder (or ``--config FILE``). Top-level keys are
``target``, ``out``, ``runtimes`` and the build settings of
:class:`~edgekd.settings.config.BuildConfig` (``seed``, ``[distill]``, ``[prune]``,
``[quant]``, ...); ``[model]`` and ``[data]`` say what to build from (:class:`ModelSpec`,
:class:`DataSpec`); ``[budget]`` holds budgets for every target and ``[budget.<target>]``
tables override them per target. ``edgekd init`` writes a commented one that builds as it
is, with its models and data (:func:`starter`). Relative paths are relative to the file's
folder. Every key and value is checked against the annotations of :class:`Project` and the
classes above (:mod:`edgekd.settings.typed`) when the file loads, before any work starts;
what the values point to (files, factories, data headers) is checked by
:mod:`edgekd.inputs.preflight` before anything heavy is imported.

With no project file, the build uses the built-in demonstration: scikit-learn's digits,
``edgekd.train.models.teacher_cnn`` trained here and the ``student_model`` named in the settings.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Any

from edgekd.errors import UsageError
from edgekd.settings.budgets import KEYS as BUDGET_KEYS
from edgekd.settings.budgets import Budget, parse_budget
from edgekd.settings.config import BuildConfig, config_schema, origin, set_items
from edgekd.settings.declarations import InputDecl, OutputDecl
from edgekd.settings.resources import read_text_file
from edgekd.settings.search import SearchSpace, parse_search
from edgekd.settings.targets import Runtime, target_names
from edgekd.settings.typed import OneOf, check_keys, convert, convert_fields, from_table

PROJECT_FILE = "edgekd.toml"
TASKS = ("classification", "regression")
Task = Annotated[str, OneOf(TASKS, "task")]


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class ModelSpec:
    """What to build from. ``student`` / ``teacher``: ``module.path:factory`` or
    ``path/to/file.py:factory`` returning an ``nn.Module`` (called with ``*_args``);
    ``*_weights``: ``.safetensors`` or a PyTorch state dict. ``onnx``: an already trained
    ONNX model (no training, no PyTorch). A student with weights and no teacher is already
    trained too: it goes straight to quantization. ``task = "regression"`` covers every model
    that is not a classifier (its outputs are compared numerically, never by top-1)."""

    student: str | None = None
    student_args: dict[str, Any] = field(default_factory=dict)
    student_weights: str | None = None
    teacher: str | None = None
    teacher_args: dict[str, Any] = field(default_factory=dict)
    teacher_weights: str | None = None
    onnx: str | None = None
    task: Task = "classification"
    # A student made from the teacher (edgekd.train.students): every = k or layers = [...]
    # (DistilBERT's initialisation: the teacher's layers, weight for weight), or config
    # overrides (hidden_size = 128, ...: a narrower, randomly initialised encoder).
    student_from_teacher: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check(self.task in TASKS, f"model.task must be one of {', '.join(TASKS)}, "
                                   f"got {self.task!r}")
        _check(not (self.onnx and (self.student or self.teacher)),
               "model.onnx is a finished model: remove model.student and model.teacher, or "
               "remove model.onnx")
        _check(not (self.student_from_teacher and (self.student or not self.teacher)),
               "model.student_from_teacher makes the student from model.teacher: set "
               "model.teacher and remove model.student (or remove student_from_teacher)")
        _check(bool(self.onnx or self.student or self.student_from_teacher),
               "[model] names nothing to build: set model.student (module:factory) or "
               "model.onnx")
        _check(not (self.teacher_weights and not self.teacher),
               "model.teacher_weights without model.teacher: name the teacher's factory")
        _check(not (self.student_weights and not self.student),
               "model.student_weights without model.student: name the student's factory")
        _check(not (self.teacher and self.task != "classification" and self.teacher_trains),
               "a teacher that is not a classifier cannot be trained here: give its weights "
               "(model.teacher_weights, or a Hugging Face folder) so the student learns its "
               "outputs (embedding distillation), or give a trained student "
               "(model.student_weights) without a teacher")
        _check(not (self.student_weights and self.student_from_teacher),
               "model.student_weights with model.student_from_teacher: the student is made "
               "from the teacher; remove one")
        _check(not (self.student and not self.teacher and not self.student_weights
                    and not checkpoint_folder(self.student)),
               "model.student has no weights and no teacher to learn from: set "
               "model.student_weights, or model.teacher to distill it")

    @property
    def trains(self) -> bool:
        """Whether the build distills (teacher -> student) or takes a finished model."""
        return self.teacher is not None

    @property
    def teacher_trains(self) -> bool:
        """The teacher has no weights (none given, not a checkpoint folder): train it."""
        return bool(self.teacher and not self.teacher_weights
                    and not checkpoint_folder(self.teacher))


def checkpoint_folder(spec: str) -> bool:
    """A model named by a folder (a Hugging Face checkpoint: config.json and its weights),
    not a factory: factories are always ``file.py:function`` or ``module:function``."""
    return ":" not in spec


@dataclass(frozen=True)
class DataSpec:
    """Where the samples come from. Each of ``train`` / ``validation`` / ``test`` /
    ``calibration`` is a folder of images in class sub-folders, a ``.npz`` (``x``, optional
    ``y``), a ``.npy`` of inputs, or ``module:factory`` returning a torch Dataset (see
    :mod:`edgekd.inputs.sources`). ``calibration`` may be unlabeled. Missing splits come from the
    others: ``test`` is ``test_fraction`` of ``train``; ``calibration`` is taken from
    ``train`` (or, without ``train``, from ``test``); ``validation`` (accuracy-aware INT8) is
    the calibration set when it has labels.

    Preprocessing: ``x = (raw * scale - mean) / std``, ``mean`` / ``std`` one number or one
    per channel; ``scale`` defaults to 1/255 for image folders and 1 otherwise. Images are
    resized to ``image_size`` (height, width) and read as ``color`` (gray | rgb | auto)."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    calibration: str | None = None
    test_fraction: float = 0.2
    scale: float | None = None
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    image_size: tuple[int, int] | None = None
    color: str = "auto"

    def __post_init__(self) -> None:
        for key in ("mean", "std"):
            value = getattr(self, key)
            if isinstance(value, list | tuple):
                _check(bool(value) and all(isinstance(v, int | float) for v in value),
                       f"data.{key} must be a number or a list of numbers, got {value!r}")
                object.__setattr__(self, key, tuple(float(v) for v in value))
            else:
                _check(isinstance(value, int | float) and not isinstance(value, bool),
                       f"data.{key} must be a number or a list of numbers, got {value!r}")
        std = self.std if isinstance(self.std, tuple) else (self.std,)
        _check(all(v != 0 for v in std), "data.std must not be 0 (it divides)")
        _check(self.scale is None or self.scale > 0, f"data.scale must be > 0, got {self.scale}")
        _check(0.0 < self.test_fraction < 1.0,
               f"data.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.image_size is not None:
            size = tuple(self.image_size)
            _check(len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size),
                   f"data.image_size must be [height, width], got {self.image_size!r}")
            object.__setattr__(self, "image_size", size)
        _check(self.color in ("auto", "gray", "rgb"),
               f"data.color must be one of auto, gray, rgb, got {self.color!r}")
        _check(bool(self.train or self.test or self.calibration),
               "[data] names no samples: set data.train (or data.test and data.calibration "
               "for a finished model)")


@dataclass(frozen=True)
class Project:
    """A resolved project: where it lives, what to build from, how, and for which target."""

    root: Path
    source: str  # the project file, or "built-in" for the digits demonstration
    build: BuildConfig = field(default_factory=BuildConfig)
    model: ModelSpec | None = None  # None: the built-in teacher and student
    data: DataSpec | None = None  # None: the built-in digits
    target: str | None = None
    out: str | None = None  # relative: inside root (pipeline.api checks); or absolute
    runtimes: tuple[Runtime, ...] | None = None  # a subset of the target's runtimes
    budget: Budget | None = None
    budgets: dict[str, Budget] = field(default_factory=dict)  # per target
    inputs: dict[str, InputDecl] = field(default_factory=dict)  # [inputs.<name>]
    outputs: dict[str, OutputDecl] = field(default_factory=dict)  # [outputs.<name>]
    search: SearchSpace | None = None  # [search]: what `edgekd search` explores

    @property
    def builtin(self) -> bool:
        return self.model is None

    def budget_for(self, target: str) -> Budget | None:
        return self.budgets.get(target, self.budget)

    def to_dict(self) -> dict[str, Any]:
        """Every setting, for the manifest (paths as written, defaults filled in)."""
        raw: dict[str, Any] = {"source": self.source, **self.build.to_dict()}
        for key in ("target", "out", "runtimes"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        if self.model is not None:
            raw["model"] = asdict(self.model)
        if self.data is not None:
            raw["data"] = asdict(self.data)
        for key in ("inputs", "outputs"):
            if getattr(self, key):
                raw[key] = {n: asdict(d) for n, d in getattr(self, key).items()}
        return json.loads(json.dumps(raw, default=list))


# Top-level keys of the file besides the build settings; all but budget are Project fields.
_PROJECT_KEYS = ("target", "out", "runtimes", "model", "data", "budget", "inputs", "outputs")
_OWN_KEYS = _PROJECT_KEYS[:-3]
_SEARCH = "search"  # [search]: what `edgekd search` explores (edgekd.settings.search)


def _declarations(raw: Any, key: str, cls: type[Any]) -> dict[str, Any]:
    """``[inputs.<name>]`` / ``[outputs.<name>]`` tables, each checked like a section."""
    if raw is None:
        return {}
    table = convert(raw, dict[str, Any], key)
    out = {}
    for name, value in table.items():
        try:
            out[name] = from_table(cls, value, f"{key}.{name}")
        except ValueError as exc:  # a rule of the class (__post_init__) names no key itself
            text = str(exc)
            raise ValueError(text if text.startswith(f"{key}.") or text.startswith("unknown key")
                             or text.startswith("missing key") else f"{key}.{name}: {text}"
                             ) from exc
    return out


def _budgets(raw: Any, source: str) -> tuple[Budget | None, dict[str, Budget]]:
    if raw is None:
        return None, {}
    try:
        raw = convert(raw, dict[str, Any], "budget")
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from exc
    for key, value in raw.items():  # a budget key given a table is a mistake, not a target
        if key in BUDGET_KEYS and isinstance(value, dict):
            raise UsageError(f"{source}: budget.{key} must be a number, got a table "
                             f"({value!r}); per-target budgets go under [budget.<target>]")
    known = target_names()
    for key, value in raw.items():
        if isinstance(value, dict) and key not in known:
            raise UsageError(f"{source}: [budget.{key}] names no target; targets: "
                             f"{', '.join(known)} (budget keys: {', '.join(BUDGET_KEYS)})")
    per_target = {k: parse_budget(v, source, f"budget.{k}")
                  for k, v in raw.items() if isinstance(v, dict)}
    common = {k: v for k, v in raw.items() if not isinstance(v, dict)}
    return (parse_budget(common, source) if common else None), per_target


def parse_project(raw: dict[str, Any], root: Path, source: str) -> Project:
    """A :class:`Project` from a TOML table; every problem is one line naming the file."""
    try:
        check_keys(raw, [*_PROJECT_KEYS, *(f.name for f in fields(BuildConfig)), _SEARCH])
        own = convert_fields(Project, {k: raw[k] for k in _OWN_KEYS if k in raw})
        _check_own(own)
        build = BuildConfig.from_dict({k: v for k, v in raw.items()
                                       if k not in _PROJECT_KEYS and k != _SEARCH})
        own["inputs"] = _declarations(raw.get("inputs"), "inputs", InputDecl)
        own["outputs"] = _declarations(raw.get("outputs"), "outputs", OutputDecl)
        own["search"] = parse_search(raw.get(_SEARCH))
        if (own["inputs"] or own["outputs"]) and own.get("model") is None:
            raise ValueError("[inputs] and [outputs] describe a project's own model: add "
                             "[model] and [data], or remove them")
    except ValueError as exc:
        raise UsageError(f"{source}: {exc}") from exc
    budget, budgets = _budgets(raw.get("budget"), source)
    return Project(root=root, source=source, build=build, budget=budget, budgets=budgets,
                   **own)


def _check_own(own: dict[str, Any]) -> None:
    """Rules for the file's own keys once their types are right."""
    if (own.get("model") is None) != (own.get("data") is None):
        missing = "[data]" if own.get("data") is None else "[model]"
        raise ValueError(f"{missing} is missing: a project names both its model and its "
                         "data (edgekd init writes both)")
    for key in ("target", "out"):
        _check(own.get(key) != "", f"{key} must be a non-empty string, got ''")
    _check(own.get("runtimes") != (), "runtimes is empty: name at least one of the target's "
                                      "runtimes, or leave runtimes out for all of them")


def load_project(path: Path | None, overrides: Sequence[str] = (), *,
                 cwd: Path | None = None, replace_model: bool = False,
                 origins: Mapping[str, str] | None = None) -> Project:
    """The project in ``path`` (or ``edgekd.toml`` in ``cwd``; without one, the built-in
    demonstration), with ``section.key=value`` overrides applied on top. ``replace_model``
    drops the file's ``[model]`` first (``--model`` names another one). ``origins``: where
    each override came from (``{"distill.epochs=-1": "--epochs -1"}``); a bad value an
    override brought is blamed on it (default ``--set ITEM``), not on the file."""
    cwd = cwd or Path.cwd()
    if path is None and (cwd / PROJECT_FILE).is_file():
        path = cwd / PROJECT_FILE
    raw: dict[str, Any] = {}
    root, source = cwd, "built-in"
    if path is not None:
        path = Path(path)
        if path.is_dir():
            path = path / PROJECT_FILE
        try:  # a regular UTF-8 file only: a FIFO or a device never hangs the build
            raw = tomllib.loads(read_text_file(path))
        except FileNotFoundError as exc:
            raise UsageError(f"project file {path} does not exist: run `edgekd init` to write "
                             "one, or pass --config FILE") from exc
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: TOML syntax error: {exc}") from exc
        except ValueError as exc:
            raise UsageError(f"project file {path} {exc}: give a UTF-8 TOML file") from exc
        except OSError as exc:
            raise UsageError(f"cannot read project file {path} ({exc.strerror or exc}): check "
                             "the file and its permissions") from exc
        root, source = path.resolve().parent, str(path)
    if replace_model:
        raw.pop("model", None)
    if not overrides:
        return parse_project(raw, root, source)
    # On the file's own table, so what the file leaves out stays default.
    schema = config_schema()
    schema[""] = [*_PROJECT_KEYS, *schema[""]]
    schema |= {"model": [f.name for f in fields(ModelSpec)],
               "data": [f.name for f in fields(DataSpec)], "budget": list(BUDGET_KEYS)}
    try:
        merged = set_items(raw, list(overrides), schema, origins)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    try:
        return parse_project(merged, root, source)
    except UsageError as exc:
        culprit = _culprit(raw, list(overrides), schema, root, source, str(exc))
        if culprit is None:
            raise
        where = origin(culprit, origins)
        text = str(exc).removeprefix(f"{source}: ")
        text = text.removeprefix(f"{culprit.partition('=')[0]}: ")  # the origin names it
        raise UsageError(f"{where}: {text}") from exc


def _culprit(raw: dict[str, Any], items: list[str], schema: dict[str, list[str]], root: Path,
             source: str, message: str) -> str | None:
    """The override that brought the problem ``message`` reports: the first one whose key,
    set back to the file's value, makes the problem go away (None: the file's own)."""
    for item in items:
        key = item.partition("=")[0]
        rest = [i for i in items if i.partition("=")[0] != key]
        try:
            parse_project(set_items(raw, rest, schema), root, source)
        except UsageError as exc:
            if str(exc) == message:
                continue
        return item
    return None


def starter() -> str:
    """The commented project file ``edgekd init`` writes, beside the models and data it
    names (the ``starter`` example, package data: ``edgekd/_examples/starter``)."""
    return (files("edgekd._examples") / "starter" / PROJECT_FILE).read_text(encoding="utf-8")


def __getattr__(name: str) -> Any:
    if name == "STARTER":  # the name before `edgekd init` wrote a whole project
        return starter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
