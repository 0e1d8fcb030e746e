"""Where a step (:mod:`.steps`) writes its files, and how they get there: nothing is
replaced without ``force``, everything is written into a staging folder beside the
destination (same file system: the move is a rename) and moved into place only when the
step succeeded, companions (OpenVINO's ``.bin``) before the file that names them. A whole
build's output folder is staged likewise by :mod:`edgekd.report.staging`. And what an
artifact file is: its precision read from the model itself (:func:`precision_of`)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import UsageError

SUFFIXES = {"onnxruntime": ".onnx", "openvino": ".xml", "tflite": ".tflite"}


def companions(path: Path) -> list[Path]:
    """A file and the files that travel with it (OpenVINO's .bin beside its .xml)."""
    return [path, path.with_suffix(".bin")] if path.suffix == ".xml" else [path]


def refuse_overwrite(paths: Sequence[Path], force: bool, flag: str) -> None:
    """Before any work: a destination that is a folder, or a file that exists without
    ``force`` (the option that named it: ``flag``)."""
    for path in paths:
        if path.is_dir():
            raise UsageError(f"{flag} {path} is a folder: give the path of a file")
        if path.exists() and not force:
            raise UsageError(f"{path} exists: choose another {flag}, or pass --force "
                             "(force=True) to replace it")


@contextmanager
def staging(folder: Path, flag: str) -> Iterator[Path]:
    """A staging folder beside the destination (same file system: the move is a rename),
    removed whatever happens."""
    if not folder.is_dir():
        raise UsageError(f"{flag}: the folder {folder} does not exist: create it first or "
                         "choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: cannot write in {folder}: choose another path or fix its "
                         "permissions")
    tmp = Path(tempfile.mkdtemp(prefix=".edgekd-step-", dir=folder))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def move(staged: Path, dest: Path) -> Path:
    """``staged`` (and its companion files) into place, companions first."""
    for src, dst in reversed(list(zip(companions(staged), companions(dest), strict=True))):
        if src.exists():
            os.replace(src, dst)
    return dest


def destination(model: Any, out: str | os.PathLike[str] | None, runtime: str) -> Path:
    """Where an INT8 artifact goes: ``out`` (with the runtime's suffix), else beside the
    ONNX file it was made from as ``<stem>.int8<suffix>``."""
    suffix = SUFFIXES[runtime]
    if out is not None:
        dest = Path(out).expanduser().absolute()
        if dest.is_dir():
            raise UsageError(f"--out {dest} is a folder: give a file path (e.g. "
                             f"{dest / f'model.int8{suffix}'})")
        if dest.suffix != suffix:
            raise UsageError(f"--out {dest.name}: an {runtime} artifact ends in {suffix}: "
                             f"name it so (e.g. model.int8{suffix})")
        return dest
    if isinstance(model, str | os.PathLike) and str(model).endswith(".onnx"):
        src = Path(model).expanduser().absolute()
        return src.with_name(f"{src.stem}.int8{suffix}")
    raise UsageError(f"give --out (out=): the INT8 file to write, ending in {suffix}")


# ONNX operators that only a quantized graph holds (QDQ, QOperator, integer kernels).
_QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear",
                  "MatMulInteger", "ConvInteger"}


def precision_of(path: Path, runtime: str, runner: Any) -> str:
    """``int8`` when the model holds quantized operators or 8-bit weights, ``fp16`` when its
    float weights are half precision, else ``fp32``: read from the model, not its name.
    ``runner``: the loaded artifact (a TFLite interpreter's tensors say it)."""
    if runtime == "tflite":
        kinds = {str(np.dtype(d["dtype"])) for d in runner.interpreter.get_tensor_details()}
        return ("int8" if kinds & {"int8", "uint8"} else "fp16" if "float16" in kinds
                else "fp32")
    if runtime == "openvino":
        import xml.etree.ElementTree as ET

        types, elements = set(), set()
        for layer in ET.parse(path).getroot().iter("layer"):
            types.add(layer.get("type"))
            data = layer.find("data")
            if layer.get("type") == "Const" and data is not None:
                elements.add(data.get("element_type"))
        return ("int8" if "FakeQuantize" in types or elements & {"i8", "u8", "i4", "u4"}
                else "fp16" if "f16" in elements else "fp32")
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node}
    kinds = {t.data_type for t in graph.initializer}
    eight = {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    if ops & _QUANTIZED_OPS or any(o.startswith("QLinear") for o in ops) or kinds & eight:
        return "int8"
    return "fp16" if onnx.TensorProto.FLOAT16 in kinds else "fp32"
