"""The data a build runs on, preprocessed: :class:`Dataset` of train / test / calibration
(/ validation) :class:`Split` s and the :class:`Preprocessing` that made them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgekd.common.cache import digest_of


@dataclass(frozen=True)
class Preprocessing:
    """How raw samples become model inputs: ``x = (raw * scale - mean) / std``, as float32.

    ``mean`` and ``std`` are one number, or one per channel (axis 1 of ``[N, C, ...]``).
    ``raw`` describes the raw input for the report (what a third party feeds).
    """

    scale: float
    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    layout: str = "NCHW"
    raw: str = "8x8 grayscale digit, integer pixels 0..16 (scikit-learn digits)"

    def _per_channel(self, value: float | tuple[float, ...], ndim: int) -> np.ndarray:
        v = np.asarray(value, dtype=np.float32)
        return v.reshape((1, -1) + (1,) * (ndim - 2)) if v.ndim == 1 else v

    def apply(self, raw: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):  # an overflow is inf, refused by name in resolve
            x = raw.astype(np.float32, order="C") * np.float32(self.scale)
            return ((x - self._per_channel(self.mean, x.ndim))
                    / self._per_channel(self.std, x.ndim)).astype(np.float32)


ROLES = ("data", "fixed", "state")
KINDS = ("image", "signal", "tokens", "mask", "values")


@dataclass(frozen=True)
class InputSpec:
    """One named input of the model, in the order the model takes them.

    ``role``: ``data`` comes from the data set, one row per sample (``Split.inputs``);
    ``fixed`` is the same ``value`` for every call (a sample rate); ``state`` is carried
    from call to call, ``value`` (zeros) at the start of a stream, then the output
    ``from_output`` of the call before. ``shape`` is one sample's shape (no batch axis) for
    data inputs, the value's shape for the others. ``batch_axis``: where a constant gets the
    batch when it is fed (None: fed exactly as given, e.g. a scalar). ``kind`` says what the
    values are (robustness corruptions and the report follow it).
    """

    name: str
    dtype: str  # numpy dtype name: float32, int64, int32, bool, ...
    shape: tuple[int, ...]
    role: str = "data"
    kind: str = "values"
    value: np.ndarray | None = None
    batch_axis: int | None = None
    from_output: str | None = None
    preprocessing: str = ""

    def constant(self, batch: int) -> np.ndarray:
        """The value fed with a batch of ``batch`` samples (a fixed or state input)."""
        assert self.value is not None
        if self.batch_axis is None:
            return self.value
        return np.ascontiguousarray(np.repeat(np.expand_dims(self.value, self.batch_axis),
                                              batch, axis=self.batch_axis))

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "shape": list(self.shape),
                                  "dtype": self.dtype, "role": self.role, "kind": self.kind}
        if self.role == "fixed" and self.value is not None:
            out["value"] = self.value.tolist()
        if self.batch_axis is not None:
            out["batch_axis"] = self.batch_axis
        if self.from_output:
            out["from_output"] = self.from_output
        if self.preprocessing:
            out["preprocessing"] = self.preprocessing
        return out


@dataclass(frozen=True)
class OutputSpec:
    """One named output, in the order the model returns them. ``classifier``: compared by
    top-1 (the class axis is the last); ``threshold``: a decision threshold declared in the
    project (decisions ``output > threshold`` are compared); ``state``: fed back as input
    ``state`` of the next call in a stream."""

    name: str
    classifier: bool = False
    threshold: float | None = None
    state: str | None = None
    batch_axis: int = 0  # where the batch is ([2, batch, 128] state: 1)


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # the first data input, preprocessed, [N, ...] (NCHW for images)
    y: np.ndarray | None  # int64 class labels, float32 targets (regression), None: unlabeled
    index: np.ndarray  # positions in the source data set
    # Every data input by name (the model's order) when the model has several; else empty
    # and ``x`` is the one input.
    extra: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # C order at the root: exporters trace an example's strides (a transposed HWC -> CHW
        # view fails torch.export), and torch.from_numpy shares whatever layout it is given.
        object.__setattr__(self, "x", np.ascontiguousarray(self.x))
        object.__setattr__(self, "extra", {k: np.ascontiguousarray(v)
                                           for k, v in self.extra.items()})

    def __len__(self) -> int:
        return len(self.x)

    def take(self, index: np.ndarray | slice) -> Split:
        """The samples at ``index`` (positions in this split), every input and label."""
        return Split(self.x[index], None if self.y is None else self.y[index],
                     self.index[index], {k: v[index] for k, v in self.extra.items()})

    def arrays(self, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
        """The data inputs by name (``x`` under the first data input's name)."""
        names = [s.name for s in specs if s.role == "data"]
        if not self.extra:
            return {names[0] if names else "input": self.x}
        return {n: self.extra[n] for n in names}


@dataclass(frozen=True)
class Feeds:
    """Samples of every input of a model: the data inputs by name (first axis: samples) and
    the fixed and state inputs of ``specs``, fed with every call. What calibration,
    verification and export take for a model with several inputs, or an integer one."""

    specs: tuple[InputSpec, ...]
    arrays: Mapping[str, np.ndarray]

    @classmethod
    def single(cls, x: np.ndarray, name: str = "input") -> Feeds:
        return cls((InputSpec(name, str(x.dtype), tuple(x.shape[1:])),), {name: x})

    @classmethod
    def of(cls, x: np.ndarray | Feeds, name: str = "input") -> Feeds:
        return x if isinstance(x, Feeds) else cls.single(x, name)

    def __len__(self) -> int:
        return len(next(iter(self.arrays.values())))

    def batch(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        return feed(self.specs, self.arrays, start, stop)

    def head(self, n: int) -> Feeds:
        return Feeds(self.specs, {k: v[:n] for k, v in self.arrays.items()})

    def select(self, mask: np.ndarray) -> Feeds:
        return Feeds(self.specs, {k: v[mask] for k, v in self.arrays.items()})

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def streamed(self, call: Callable[[dict[str, np.ndarray]], list[np.ndarray]],
                 outputs: Sequence[str]) -> Feeds:
        """These samples as one stream through ``call`` (one sample per call, each state
        input fed the output it comes from): the same samples with every state input's
        value at each step. Calibrating a stateful model on zero states alone leaves the
        ranges of the states it meets in use uncalibrated."""
        states = [s for s in self.specs if s.role == "state" and s.from_output]
        if not states or len(self) == 0:
            return self
        where = {name: i for i, name in enumerate(outputs)}
        current = {s.name: s.constant(1) for s in states}
        seen: dict[str, list[np.ndarray]] = {s.name: [] for s in states}
        for i in range(len(self)):
            one = self.batch(i, i + 1) | current
            for s in states:
                seen[s.name].append(current[s.name] if s.batch_axis is None
                                    else np.take(current[s.name], 0, axis=s.batch_axis))
            got = call(one)
            current = {s.name: got[where[s.from_output]].astype(s.dtype)  # type: ignore[index]
                       for s in states}
        return Feeds(self.specs, {**self.arrays, **{k: np.stack(v) for k, v in seen.items()}})

    def digest_parts(self) -> tuple[object, ...]:
        """What identifies these samples (for cache keys)."""
        return (*(self.arrays[k] for k in sorted(self.arrays)),
                [s.to_dict() for s in self.specs])


def join_batches(parts: Sequence[Sequence[np.ndarray]],
                 outputs: Sequence[OutputSpec] | None = None) -> list[np.ndarray]:
    """Each output's batches joined along its batch axis, the batch moved first: every
    figure (per sample) and every report shape reads outputs batch-first."""
    axes = [o.batch_axis for o in outputs or ()]
    joined = []
    for k in range(len(parts[0])):
        axis = axes[k] if k < len(axes) else 0
        joined.append(np.moveaxis(np.concatenate([p[k] for p in parts], axis=axis), axis, 0))
    return joined


def feed(specs: Sequence[InputSpec], arrays: Mapping[str, np.ndarray], start: int = 0,
         stop: int | None = None) -> dict[str, np.ndarray]:
    """Every input of a call on samples ``start:stop`` of ``arrays`` (data inputs by name),
    constants (fixed, state at the start of a stream) added with that batch."""
    first = next(iter(arrays.values()))
    stop = len(first) if stop is None else min(stop, len(first))
    out = {}
    for spec in specs:
        if spec.role == "data":
            out[spec.name] = arrays[spec.name][start:stop]
        elif spec.name in arrays:  # one value per sample (a state recorded over a stream)
            values = arrays[spec.name][start:stop]
            out[spec.name] = (np.ascontiguousarray(np.moveaxis(values, 0, spec.batch_axis))
                              if spec.batch_axis is not None else values[0])
        else:
            out[spec.name] = spec.constant(stop - start)
    return out


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    calibration: Split
    preprocessing: Preprocessing
    num_classes: int | None  # None: not a classifier (outputs are compared numerically)
    seed: int
    # Accuracy-aware quantization judges INT8 here (never on the test split); None: the
    # calibration split when it is labeled.
    validation: Split | None = None
    sources: dict[str, str] | None = None  # where each split came from (config values)
    classes: tuple[str, ...] | None = None  # class names (image folders): label i is classes[i]
    # The model's inputs and outputs, in its order; () until the model is known (a one-input
    # model: ``default_inputs``).
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()

    @property
    def input_specs(self) -> tuple[InputSpec, ...]:
        return self.inputs or default_inputs(self)

    def arrays(self, split: Split) -> dict[str, np.ndarray]:
        return split.arrays(self.input_specs)

    def feeds(self, split: Split, n: int | None = None) -> Feeds:
        """Every input of the model on ``split`` (its first ``n`` samples)."""
        arrays = self.arrays(split)
        return Feeds(self.input_specs, {k: v[:n] for k, v in arrays.items()})

    @property
    def several_inputs(self) -> bool:
        """More than one input, or one that is not float: the model is fed by name."""
        specs = self.input_specs
        return len(specs) > 1 or specs[0].dtype != "float32"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (1, *self.train.x.shape[1:])

    def fingerprint(self) -> str:
        """The data's content digest: every split's inputs and labels, by split name.
        Changes whenever the data does (or a sample moves to another split)."""
        return digest_of(self._split_fingerprints())

    def _split_fingerprints(self) -> dict[str, str]:
        return {name: split_fingerprint(s) for name, s in (
            ("train", self.train), ("test", self.test), ("calibration", self.calibration),
            ("validation", self.validation)) if s is not None}

    def summary(self) -> dict[str, object]:
        splits = {"train": len(self.train), "test": len(self.test),
                  "calibration": len(self.calibration)}
        if self.validation is not None:
            splits["validation"] = len(self.validation)
        per_split = self._split_fingerprints()  # each split's arrays hashed once
        summary: dict[str, object] = {
            "name": self.name, "seed": self.seed, "num_classes": self.num_classes,
            "splits": splits, "fingerprint": digest_of(per_split),
            "split_fingerprints": per_split,
        }
        if self.sources:
            summary["sources"] = self.sources
        if self.classes:
            summary["classes"] = list(self.classes)
        return summary


def split_fingerprint(split: Split) -> str:
    """The content digest of one split's inputs and labels (dtype, shape and values)."""
    if split.extra:
        return digest_of(*(split.extra[k] for k in sorted(split.extra)), split.y,
                         sorted(split.extra))
    return digest_of(split.x, split.y)


def default_inputs(data: Dataset) -> tuple[InputSpec, ...]:
    """A one-input model's input: the data set's samples, named ``input``."""
    x = data.test.x
    kind = ("tokens" if np.issubdtype(x.dtype, np.integer) else
            "image" if data.preprocessing.layout == "NCHW" and x.ndim == 4 else
            "signal" if x.ndim in (2, 3) else "values")
    return (InputSpec("input", str(x.dtype), tuple(x.shape[1:]), kind=kind,
                      preprocessing=data.preprocessing.raw),)
