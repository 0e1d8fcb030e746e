"""A model's inputs and outputs, from the model itself and the project's ``[inputs.<name>]``
/ ``[outputs.<name>]`` declarations: names in the model's order, dtypes, which come from
the data, which are fixed per deployment and which are carried state.

A finished ONNX model declares its inputs (names, element types, shapes with symbolic batch
axes); a PyTorch model only names them (forward's parameters), so dtypes and the shapes of
state come from the data and the project file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import InputSpec, OutputSpec
from edgekd.settings.declarations import InputDecl, OutputDecl

# ONNX TensorProto element types -> NumPy dtype names (the ones a model input may take).
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
                9: "bool", 10: "float16", 11: "float64"}


# ONNX Runtime's type strings -> the NumPy dtype a session takes.
ORT_DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def session_feed(session: Any, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``feed`` as an ONNX Runtime session takes it: every input by name in its dtype (a
    one-input model takes the one array whatever it is called)."""
    inputs = session.get_inputs()
    if len(feed) == 1 and len(inputs) == 1:
        feed = {inputs[0].name: next(iter(feed.values()))}
    return {i.name: np.asarray(feed[i.name]).astype(ORT_DTYPES.get(i.type, np.float32),
                                                      copy=False) for i in inputs}


@dataclass(frozen=True)
class Declared:
    """One input as the model declares it: name, dtype (None: from the data), dims (ints,
    names of symbolic axes, or None; None for the whole: unknown), required."""

    name: str
    dtype: str | None
    dims: tuple[int | str | None, ...] | None
    required: bool = True


def onnx_io(path: Path) -> tuple[list[Declared], list[Declared]]:
    """The graph inputs (initializers excluded) and outputs of an ONNX file."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    def one(value: Any) -> Declared:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in t.shape.dim) if t.HasField("shape") else None
        return Declared(value.name, _ONNX_DTYPES.get(t.elem_type, "float32"), dims)

    return ([one(v) for v in graph.input if v.name not in inits],
            [one(v) for v in graph.output])


def torch_io(model: Any, available: Sequence[str], decls: Mapping[str, InputDecl]
             ) -> list[Declared]:
    """forward's parameters: every required one, and the optional ones the data or the
    project provides (a Hugging Face ``attention_mask``)."""
    from edgekd.inputs.calls import forward_parameters

    params = forward_parameters(model)
    out = [Declared(p.name, decls[p.name].dtype if p.name in decls else None, None,
                    required=p.default is p.empty)
           for p in params if p.default is p.empty or p.name in decls or p.name in available]
    return out


# Names of 0/1 integer inputs that are not masks: segment (token type) ids.
_SEGMENT_WORDS = ("type", "segment")


def data_kind(name: str, splits: Sequence[np.ndarray], inputs: Mapping[str, np.ndarray], *,
              images: bool) -> str:
    """What a data input's values are, from its dtype, shape and values (``splits``: its
    samples in every split; ``inputs``: every data input's test samples, by name).

    An integer input is a ``mask`` (fed clean by robustness, never corrupted like ids) when
    its values are only 0 and 1 in every split and either its name says so (``*mask*``) or
    it sits beside a companion token input: another integer input of the same per-sample
    shape whose values go past 1. Neither can take token ids for a mask: ids named
    ``masked_ids`` take values past 1, and ids of a vocabulary of two are not a real case.
    Segment ids (``token_type_ids``: 0/1 beside the ids too) are named as such and stay
    ``tokens``. Any other integer input is ``tokens``; bool is ``mask``."""
    x = splits[0] if splits else next(iter(inputs.values()))
    if x.dtype == np.bool_:
        return "mask"
    if x.dtype.kind in "iu":
        binary = all(v.size == 0 or (int(v.min()) >= 0 and int(v.max()) <= 1) for v in splits)
        lower = name.lower()
        companion = any(other is not x and other.dtype.kind in "iu" and other.size
                        and other.shape[1:] == x.shape[1:] and int(other.max()) > 1
                        for n, other in inputs.items() if n != name)
        segment = any(word in lower for word in _SEGMENT_WORDS)
        if binary and ("mask" in lower or (companion and not segment)):
            return "mask"
        return "tokens"
    return ("image" if images and x.ndim == 4 else
            "signal" if x.ndim in (2, 3) else "values")


def _batch_axis(dims: tuple[int | str | None, ...] | None) -> int | None:
    if dims is None:
        return None
    symbolic = [i for i, d in enumerate(dims) if not isinstance(d, int) or d <= 0]
    return symbolic[0] if symbolic else None


def constant_spec(d: Declared, decl: InputDecl, what: str) -> InputSpec:
    """A fixed or state input: its value (state: zeros), dtype, and where it takes the batch
    (declared, else a finished model's symbolic axis)."""
    dtype = decl.dtype or d.dtype or "float32"
    axis = decl.batch_axis if decl.batch_axis is not None else _batch_axis(d.dims)
    if decl.value is not None:
        value = np.asarray(decl.value, dtype=dtype)
        if d.dims is not None and axis is None and value.ndim != len(d.dims):
            static = [v for v in d.dims if isinstance(v, int)]
            if int(np.prod(static or [1])) == value.size and len(static) == len(d.dims):
                value = value.reshape(static)  # 16000 for an input declared [1]
            else:
                raise UsageError(f"inputs.{d.name}: value has shape {list(value.shape)} but "
                                 f"{what} declares {list(d.dims)}: give the value in the "
                                 "model's shape")
        if decl.batch_axis is None and axis is not None and d.dims is not None \
                and value.ndim == len(d.dims):
            axis = None  # given with the batch axis already: fed as given
        return InputSpec(d.name, dtype, tuple(value.shape), role="fixed",
                         kind=decl.kind if decl.kind != "auto" else "values", value=value,
                         batch_axis=axis, preprocessing="fixed value, fed as given")
    shape = decl.shape
    if shape is None and d.dims is not None:
        rest = [v for i, v in enumerate(d.dims) if i != axis]
        if all(isinstance(v, int) and v > 0 for v in rest):
            shape = tuple(int(v) for v in rest)  # type: ignore[arg-type]
    if shape is None:
        raise UsageError(f"inputs.{d.name}: zeros need a shape: set [inputs.{d.name}] "
                         "shape = [...] (one sample's, without the batch)")
    if decl.batch_axis is None and d.dims is None:
        axis = 0  # a PyTorch state: batch first unless declared
    # Zeros that no output feeds back are a constant (an unused optional input), not state.
    role = "state" if decl.from_output else "fixed"
    return InputSpec(d.name, dtype, tuple(shape), role=role,
                     kind=decl.kind if decl.kind != "auto" else "values",
                     value=np.zeros(shape, dtype=dtype), batch_axis=axis,
                     from_output=decl.from_output,
                     preprocessing=("zeros at the start of a stream" if role == "state"
                                    else "zeros, fed with every call"))


def check_declarations(declared: Sequence[Declared], decls: Mapping[str, InputDecl],
                       outputs: Sequence[str], out_decls: Mapping[str, OutputDecl],
                       what: str) -> None:
    """Every ``[inputs.X]`` / ``[outputs.X]`` names something the model has."""
    names = [d.name for d in declared]
    for name in decls:
        if name not in names:
            raise UsageError(f"[inputs.{name}] names no input of {what} (its inputs: "
                             f"{', '.join(names)}): use one of those names")
    for d in declared:
        decl = decls.get(d.name)
        if decl is not None and decl.dtype and d.dtype and decl.dtype != d.dtype \
                and d.dims is not None:  # a finished model declares its own dtypes
            raise UsageError(f"inputs.{d.name}.dtype = {decl.dtype!r} but {what} takes "
                             f"{d.dtype}: remove the dtype, or export the model for it")
    for name, decl in decls.items():
        if decl.from_output and outputs and decl.from_output not in outputs:
            raise UsageError(f"inputs.{name}.from_output = {decl.from_output!r} names no "
                             f"output of {what} (its outputs: {', '.join(outputs)})")
    for name in out_decls:
        if outputs and name not in outputs:
            raise UsageError(f"[outputs.{name}] names no output of {what} (its outputs: "
                             f"{', '.join(outputs)}): use one of those names")


def output_specs(names: Sequence[str], decls: Mapping[str, OutputDecl],
                 inputs: Sequence[InputSpec], classifier_task: bool,
                 dims: Sequence[tuple[int | str | None, ...] | None] = ()
                 ) -> tuple[OutputSpec, ...]:
    """Each output's verification: top-1 for the classifier output (the first output of a
    classification model unless declared), a threshold where declared, which state input
    it feeds in a stream, and where its batch axis is: a finished model's declared
    symbolic axis, else the batch axis of the state it feeds, else the first."""
    feeds = {s.from_output: s for s in inputs if s.from_output}
    named = any(decls.get(n, OutputDecl()).classifier for n in names)  # one declared: not 0
    out = []
    for i, name in enumerate(names):
        decl = decls.get(name, OutputDecl())
        classifier = decl.classifier if decl.classifier is not None else (
            classifier_task and i == 0 and not named)
        state = feeds.get(name)
        axis = _batch_axis(dims[i]) if i < len(dims) else None
        if axis is None:
            axis = state.batch_axis if state is not None and state.batch_axis else 0
        out.append(OutputSpec(name, classifier=classifier, threshold=decl.threshold,
                              state=state.name if state else None, batch_axis=axis))
    return tuple(out)
