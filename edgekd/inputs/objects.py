"""In-memory inputs, converted here and nowhere else: the PyTorch modules and data objects of
``edgekd.build(teacher=..., student=..., data=...)`` and of the step functions
(``edgekd.quantize(model, data)``, ...) become what a project's files resolve to: one
:class:`~edgekd.inputs.sources.Samples` per split, and model factories.

Data may be:

- numpy arrays (or tensors) ``(x, y)``, or ``x`` alone (unlabeled); ``x`` may be a dict of
  named inputs for a model with several;
- an edgekd :class:`~edgekd.inputs.dataset.Dataset` (its splits and preprocessing kept);
- a map-style torch ``Dataset`` (or a list) whose items are ``(x, y)``, ``x``, or
  ``(dict of inputs, y)``;
- a torch ``DataLoader`` yielding such batches;
- a dict ``{"train": ..., "test": ..., "calibration": ..., "validation": ...}`` of any of
  the above, one per split.

In-memory samples are taken as given: already preprocessed (no scale, mean or std applied).
Modules are deep-copied before anything runs or trains them: the caller's objects stay as
they were. Errors are one line (:class:`~edgekd.errors.UsageError`) naming the argument.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, Preprocessing
from edgekd.inputs.sources import Samples

SPLITS = ("train", "test", "calibration", "validation")
GIVEN = "as given in memory (already preprocessed: edgekd applies no scale, mean or std)"
_FORMS = ("give numpy arrays (x, y), an edgekd Dataset, a torch Dataset or DataLoader "
          "yielding (x, y) or (dict of inputs, y), or a dict of those per split (train, test, "
          "calibration, validation)")

Factory = Callable[[], Any]  # () -> a fresh torch.nn.Module
Fit = Callable[[Any, str], None]  # runs a model once on the data (lazy layers take shapes)


@dataclass(frozen=True)
class InMemory:
    """What ``edgekd.build`` was given as objects. ``student`` without ``teacher`` is a
    finished model (deployed as it is); with a teacher, it is the student to distill (its
    current weights are where training starts). ``train_teacher``: the teacher is untrained,
    edgekd trains it first (else its outputs are what the student learns). ``data`` (forms in
    the module docstring) replaces the project's ``[data]``; None keeps it."""

    student: Any | None = None
    teacher: Any | None = None
    data: Any | None = None
    train_teacher: bool = False
    task: str | None = None

    def __post_init__(self) -> None:
        for what in ("student", "teacher"):
            value = getattr(self, what)
            if value is not None and not _is_module(value):
                hint = (" (a model file or factory string goes to model=)"
                        if isinstance(value, str | Path) else "")
                raise UsageError(f"{what}= is a {type(value).__name__}, not a torch.nn.Module "
                                 f"instance{hint}: pass the model object, e.g. {what}=MyNet()")
        if self.teacher is not None and self.student is None:
            raise UsageError("teacher= needs student= (the model the teacher distills into)")
        if self.train_teacher and self.teacher is None:
            raise UsageError("train_teacher=True needs teacher=: give the teacher module")
        if self.data is not None:
            check_form(self.data, "data")

    @property
    def trains(self) -> bool:
        return self.teacher is not None


def _is_module(value: Any) -> bool:
    from torch import nn

    return isinstance(value, nn.Module)


def _splits(value: Any, what: str) -> bool:
    """Whether ``value`` is a dict of splits (else: one set, maybe a dict of named inputs);
    a dict that names some splits and something else is refused."""
    if not isinstance(value, Mapping) or not value:
        return False
    names = set(map(str, value))
    if names <= set(SPLITS):
        return True
    if names & set(SPLITS):
        raise UsageError(f"{what}= is a dict with keys {', '.join(map(str, value))}: name only "
                         f"splits ({', '.join(SPLITS)}), or only the model's inputs")
    # The model's inputs by name are arrays or tensors; a pair, a list or a Dataset under a
    # key means the key was meant as a split ({"tests": (x, y)}, {"trian": ...}).
    odd = [str(k) for k, v in value.items() if isinstance(v, tuple | Mapping | Dataset)
           or _loader(v) or not (isinstance(v, list | np.ndarray) or _tensor(v)
                                 or not hasattr(v, "__getitem__"))]
    if odd:
        close = [c for k in odd for c in difflib.get_close_matches(k, SPLITS, n=1)]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        keys = ", ".join(repr(k) for k in odd)
        raise UsageError(f"{what}= is a dict with key{'s' if len(odd) > 1 else ''} {keys}"
                         f"{hint}: name splits ({', '.join(SPLITS)}) or the model's inputs "
                         "(each an array or tensor)")
    return False


def check_form(value: Any, what: str) -> None:
    """Refuse, before any work, a data object edgekd cannot read (its items are read later)."""
    if _splits(value, what):
        for name, part in value.items():
            check_form(part, f"{what}[{name!r}]")
        return
    if isinstance(value, str | Path):
        raise UsageError(f"{what}= is a path: give data files in a project file ([data]) or "
                         f"to the step functions; in memory, {_FORMS}")
    if isinstance(value, Mapping):
        return  # the model's inputs by name
    if not (isinstance(value, Dataset | tuple | np.ndarray) or _tensor(value)
            or _loader(value) or (hasattr(value, "__len__") and hasattr(value, "__getitem__"))):
        raise UsageError(f"{what}= is a {type(value).__name__}: {_FORMS}")


# -- models --------------------------------------------------------------------------------


def _qualname(module: Any) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def _code_digest(module: Any) -> str:
    """The class's source file (editing forward changes the model), else its name."""
    try:
        return hashlib.sha256(Path(inspect.getfile(type(module))).read_bytes()).hexdigest()
    except (TypeError, OSError):
        return _qualname(module)


def state_digest(module: Any) -> str:
    """sha256 of the module's state dict: every name, dtype, shape and value (lazy
    parameters not materialised yet count by name)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        if torch.nn.parameter.is_lazy(t):
            h.update(b"uninitialized")
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{list(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def describe_module(module: Any, **extra: Any) -> dict[str, Any]:
    """What identifies a module object in the report and in cache keys."""
    return {"object": _qualname(module), "code_sha256": _code_digest(module),
            "state_sha256": state_digest(module), **extra}


def module_factory(module: Any, what: str, fit: Fit, *, finished: bool) -> Factory:
    """Fresh deep copies of ``module`` (the caller's object is never run, trained or moved):
    lazy layers take their shapes from the data; a finished model comes in eval mode."""
    import torch

    def make() -> Any:
        model: torch.nn.Module = copy.deepcopy(module).cpu()
        lazy = torch.nn.modules.lazy.LazyModuleMixin
        if any(isinstance(m, lazy) and m.has_uninitialized_params() for m in model.modules()):
            fit(model, f"{what} ({_qualname(module)})")
            model.train()
        return model.eval() if finished else model.train()

    return make


# -- data ----------------------------------------------------------------------------------


def _tensor(value: Any) -> bool:
    return hasattr(value, "detach") and hasattr(value, "shape")


def _loader(value: Any) -> bool:
    try:
        from torch.utils.data import DataLoader
    except ImportError:  # pragma: no cover - torch-free device: no DataLoader to be given
        return False
    return isinstance(value, DataLoader)


def _array(value: Any, what: str) -> np.ndarray:
    if _tensor(value):
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()  # bfloat16 has no numpy dtype
        value = value.numpy()
    try:
        arr = np.asarray(value)
    except ValueError as exc:  # a ragged list: numpy's "inhomogeneous shape"
        raise UsageError(f"{what} is a {type(value).__name__} of items of different shapes: "
                         "give one array or tensor, one row per sample") from exc
    if arr.dtype.kind not in "biuf":
        raise UsageError(f"{what} holds {arr.dtype} values, not numbers: give numeric arrays "
                         "or tensors")
    if arr.ndim == 0:
        raise UsageError(f"{what} is a single value: give one row per sample (first axis)")
    return arr


def _labels(y: Any, what: str) -> np.ndarray:
    arr = _array(y, f"{what} labels")
    if arr.dtype.kind in "iub" or (arr.ndim == 1 and np.array_equal(arr, np.round(arr))):
        return arr.astype(np.int64)  # class labels (maybe stored as floats)
    if not np.isfinite(arr).all():
        raise UsageError(f"{what}: some labels are NaN or infinite: fix or drop them")
    return arr.astype(np.float32)


def _inputs(x: Any, what: str) -> dict[str, np.ndarray]:
    """The inputs of one batch (or of all samples) by name; one input is ``x``."""
    if isinstance(x, Mapping):
        if not x:
            raise UsageError(f"{what}: an empty dict of inputs: name each model input")
        return {str(k): _array(v, f"{what} input {k!r}") for k, v in x.items()}
    return {"x": _array(x, what)}


def _samples(xs: dict[str, np.ndarray], y: np.ndarray | None, what: str, source: str
             ) -> Samples:
    n = {k: len(v) for k, v in xs.items()}
    if len(set(n.values())) > 1:
        raise UsageError(f"{what}: the inputs have different numbers of samples "
                         f"({', '.join(f'{k} {v}' for k, v in n.items())}): give one row per "
                         "sample in every input")
    count = next(iter(n.values()))
    if y is not None and len(y) != count:
        raise UsageError(f"{what}: {count} samples but {len(y)} labels: give one label per "
                         "sample")
    if count == 0:
        raise UsageError(f"{what} holds no samples: give at least one")
    for name, arr in xs.items():
        bad = arr.dtype.kind == "f" and ~np.isfinite(arr).reshape(len(arr), -1).all(1)
        if np.any(bad):
            where = f" in {name!r}" if len(xs) > 1 else ""
            raise UsageError(f"{what}: {int(np.sum(bad))} sample(s) contain NaN or infinite "
                             f"values{where} (first: sample {int(np.flatnonzero(bad)[0])}): "
                             "clean the data")
    first = xs.get("x", next(iter(xs.values())))
    x = first.astype(np.float32) if first.dtype.kind != "f" else first
    return Samples(x, y, None, source, "arrays", dict(xs))  # named: dtypes as given


def _pair(item: Any, what: str, kind: str) -> tuple[Any, Any | None]:
    """(inputs, labels or None) of one item or batch; anything else is refused by name."""
    if isinstance(item, tuple | list):
        if len(item) == 2:
            return item[0], item[1]
        raise UsageError(f"{what}: the {kind} yields a {type(item).__name__} of {len(item)} "
                         "values: yield (inputs, labels), or the inputs alone (a tensor or a "
                         "dict of tensors)")
    if isinstance(item, Mapping) or _tensor(item) or isinstance(item, np.ndarray):
        return item, None
    raise UsageError(f"{what}: the {kind} yields a {type(item).__name__}: yield (inputs, "
                     "labels), or the inputs alone (a tensor or a dict of tensors)")


def _collect(items: Any, what: str, kind: str, batched: bool) -> Samples:
    """Every item (a sample, or a batch when ``batched``) joined into arrays."""
    parts: list[dict[str, np.ndarray]] = []
    labels: list[np.ndarray | None] = []
    try:
        for item in items:
            x, y = _pair(item, what, kind)
            parts.append(_inputs(x, what))
            labels.append(None if y is None else _array(y, f"{what} labels"))
    except UsageError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's __getitem__ / collate
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise UsageError(f"{what}: reading the {kind} raised {type(exc).__name__}: {first}: "
                         f"fix the {kind}") from exc
    if not parts:
        raise UsageError(f"{what}: the {kind} yields nothing: give it samples")
    names = list(parts[0])
    if any(list(p) != names for p in parts):
        raise UsageError(f"{what}: the {kind}'s items do not all have the same inputs (first: "
                         f"{', '.join(names)}): yield the same inputs every time")
    if any(y is None for y in labels) and not all(y is None for y in labels):
        raise UsageError(f"{what}: some items of the {kind} carry labels and some do not: "
                         "yield (inputs, labels) every time, or inputs alone every time")
    join = np.concatenate if batched else np.stack
    try:
        xs = {n: join([p[n] for p in parts]) for n in names}
        y = None if labels[0] is None else join(labels)  # type: ignore[arg-type]
    except ValueError as exc:
        raise UsageError(f"{what}: the {kind}'s samples differ in shape ({exc}): every sample "
                         "needs the same shape") from exc
    return _samples(xs, None if y is None else _labels(y, what), what, f"in-memory {kind}")


def _xy_list(value: Any) -> bool:
    """``[x, y]``: inputs and labels in a list where a tuple was meant (two samples of a
    Dataset-like list have the same number of dimensions; labels have one)."""
    if not (isinstance(value, list) and len(value) == 2):
        return False
    x, y = value
    if not all(isinstance(v, np.ndarray) or _tensor(v) for v in (x, y)):
        return False
    return len(x.shape) >= 2 and len(y.shape) == 1 and len(x) == len(y)


def samples_of(value: Any, what: str) -> Samples:
    """One split's samples from any in-memory form (not a dict of splits)."""
    if isinstance(value, Dataset):
        raise UsageError(f"{what}: an edgekd Dataset holds every split: pass it as data= "
                         "itself, not as one split")
    if isinstance(value, tuple) and len(value) == 2 and not _loader(value):
        x, y = value
        xs = _inputs(x, what)
        return _samples(xs, None if y is None else _labels(y, what), what, "in-memory arrays")
    if isinstance(value, np.ndarray | Mapping) or _tensor(value):
        return _samples(_inputs(value, what), None, what, "in-memory arrays")
    if _xy_list(value):
        raise UsageError(f"{what}= is a list [x, y]: give (x, y) as a tuple (a list is read as "
                         "a Dataset, one sample per item)")
    if _loader(value):
        return _collect(value, what, "DataLoader", batched=True)
    if hasattr(value, "__len__") and hasattr(value, "__getitem__"):
        try:
            n = len(value)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's __len__
            raise UsageError(f"{what}: len() of the Dataset raised {type(exc).__name__}: "
                             "fix its __len__") from exc
        return _collect((value[i] for i in range(n)), what, "Dataset", batched=False)
    raise UsageError(f"{what} is a {type(value).__name__}: {_FORMS}")


def _from_dataset(data: Dataset) -> dict[str, Samples]:
    found = {}
    for name in SPLITS:
        split = getattr(data, name)
        if split is None or len(split) == 0:
            continue
        found[name] = Samples(split.x, split.y, data.classes, f"{data.name} ({name})",
                              "arrays", dict(split.extra))
    return found


@dataclass(frozen=True)
class DataObjects:
    """In-memory data as a project's splits: ``found`` (what
    :func:`~edgekd.inputs.splits.load_splits` returns for files) and the preprocessing the
    samples already had."""

    found: dict[str, Samples]
    preprocessing: Preprocessing
    name: str


def data_objects(data: Any, *, trains: bool, what: str = "data") -> DataObjects:
    """The splits of ``data`` (forms in the module docstring); ``trains``: the train split
    must be labeled (distillation learns from it)."""
    if isinstance(data, Dataset):
        found, prep, name = _from_dataset(data), data.preprocessing, data.name
    else:
        if _splits(data, what):
            found = {n: samples_of(v, f"{what}[{n!r}]") for n, v in data.items()}
        else:  # one set: training data when distilling, else where calibration comes from
            found = {"train": samples_of(data, what)}
        first = next(iter(found.values())).x
        prep = Preprocessing(scale=1.0, mean=0.0, std=1.0, raw=GIVEN,
                             layout="NCHW" if first.ndim == 4 else "as given")
        name = f"in-memory ({', '.join(found)})"
    if trains and (found.get("train") is None or found["train"].y is None):
        raise UsageError(f"{what}: distillation trains the student on labeled samples: give "
                         "(x, y) (or a Dataset / DataLoader yielding (x, y)) as the training "
                         "data")
    if not found:
        raise UsageError(f"{what} holds no samples: {_FORMS}")
    return DataObjects(found, prep, name)
