"""The deploy package of a build: beside the artifacts in ``OUT/<target>/``, one small
``run_<runtime>.py`` per runtime and the folder's ``README.md``.

A script loads the shipped artifact with only its runtime and NumPy (Pillow only to read an
image file), applies the preprocessing the build recorded for each input, and prints the
prediction for one input. Everything it needs is read from the report (``inputs``,
``input.preprocessing``, ``outputs``, ``dataset.classes``, ``artifacts``) and written into the
script as plain data, so a deployer copies two files and nothing of edgekd. Each script is one
template, package data in ``templates/`` beside this module: ``run_script.py.tmpl`` (inputs,
preprocessing, printing) with the runtime's ``load`` (``load_<runtime>.py.tmpl``) in the
middle. They are ``string.Template`` text ("$name" is filled in, "$$" is a dollar sign) and
must read well once filled in: a deployer edits the scripts.
"""

from __future__ import annotations

import pprint
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import numpy as np

import edgekd
from edgekd.report import format as fmt
from edgekd.report.format import md, md_code

README = "README.md"
PIP = {"onnxruntime": "onnxruntime", "openvino": "openvino", "tflite": "ai-edge-litert"}
_SAFE = re.compile(r"[A-Za-z0-9_.:/-]+")
NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "tflite": "LiteRT (TFLite)"}


def script_name(runtime: str) -> str:
    return f"run_{runtime}.py"


def write_package(stage: Path, report: Mapping[str, Any],
                  providers: Sequence[str] = ("CPUExecutionProvider",)) -> list[str]:
    """Write ``run_<runtime>.py`` for every runtime with an artifact in the report, and
    ``README.md``, into ``stage``; return their names (for the manifest). ``providers``: the
    target's ONNX Runtime execution providers, in order of preference."""
    spec = deploy_spec(report)
    written = []
    for runtime, artifacts in _by_runtime(report).items():
        path = stage / script_name(runtime)
        path.write_text(render_script(runtime, artifacts, spec, report, providers),
                        encoding="utf-8")
        written.append(path.name)
    (stage / README).write_text(render_readme(report, spec), encoding="utf-8")
    return [*written, README]


def _by_runtime(report: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """runtime -> precision -> artifact entry, the one to ship first: the entry marked
    ``"shipped": true`` (edgekd.pipeline.choosing), else INT8 (reports made before)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    marked = any("shipped" in a for a in report["artifacts"])
    first = ((lambda a: not a.get("shipped")) if marked
             else (lambda a: a["precision"] != "int8"))
    for a in sorted(report["artifacts"], key=first):
        out.setdefault(a["runtime"], {})[a["precision"]] = a
    return out


# -- what the scripts need, from the report ------------------------------------------------

def _image_mode(report: Mapping[str, Any], one: Mapping[str, Any]) -> str | None:
    """``L`` or ``RGB`` when the build read this input from image files (Pillow, converted
    to that mode, [C, H, W]); None for arrays (the digits demo's 0..16 pixels included)."""
    first = report["input"]
    from_images = (first["layout"] == "NCHW"
                   and str(first["preprocessing"]["raw"]).startswith("images"))
    shape = one["shape"][1:]
    if not (from_images and one.get("kind") == "image" and len(shape) == 3):
        return None
    return {1: "L", 3: "RGB"}.get(shape[0])


def _constant(one: Mapping[str, Any]) -> Any:
    """A fixed input's value, or a state's zeros: one number when every element is the same
    (broadcast to the input's shape when fed), else the nested list."""
    value = one.get("value", 0)
    array = np.asarray(value)
    return array.flat[0].item() if array.size and (array == array.flat[0]).all() else value


def _plain(value: Any) -> Any:
    """A tuple (one number per channel) as the list report.json holds."""
    return list(value) if isinstance(value, tuple) else value


def deploy_spec(report: Mapping[str, Any]) -> dict[str, Any]:
    """The data every script embeds: each input (name, dtype, one sample's shape, role; the
    preprocessing of the first float data input; the image mode; the value of a fixed or
    state input, in the shape it is fed), each output, the class names."""
    prep = report["input"]["preprocessing"]
    inputs, preprocessed = [], False
    for one in report["inputs"]:
        role = one.get("role", "data")
        spec: dict[str, Any] = {"name": one["name"], "dtype": one["dtype"], "role": role}
        if role == "data":
            spec["shape"] = list(one["shape"][1:])
            if str(one["dtype"]).startswith("float") and not preprocessed:
                spec["preprocess"] = {"scale": prep["scale"], "mean": _plain(prep["mean"]),
                                      "std": _plain(prep["std"])}
                preprocessed = True  # the build preprocesses the first float input only
            spec["image"] = _image_mode(report, one)
            spec["raw"] = prep["raw"] if "preprocess" in spec else one.get(
                "preprocessing", "as stored")
        else:
            spec["shape"] = list(one["shape"])  # as fed, with the batch where it goes
            spec["value"] = _constant(one)
            if one.get("from_output"):
                spec["from_output"] = one["from_output"]
        inputs.append(spec)
    outputs = [{"name": o["name"], "shape": o["shape"], "classifier": bool(o.get("classifier"))}
               for o in report["outputs"]]
    classes = report.get("dataset", {}).get("classes")
    return {"inputs": inputs, "outputs": outputs, "classes": list(classes) if classes else None,
            "threads": int(report.get("bench", {}).get("target_threads") or 1)}


def _literal(value: Any) -> str:
    """``value`` as Python source (only str, numbers, bools, None, lists and dicts, whose
    repr is a literal): a list of dicts one dict a line, a dict too long for a line one
    key a line."""
    if not (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
        return pprint.pformat(value, width=92, sort_dicts=False)
    rows = []
    for item in value:
        one = repr(item)
        if len(one) > 88:
            one = "{" + ",\n     ".join(f"{k!r}: {v!r}" for k, v in item.items()) + "}"
        rows.append(f"    {one},\n")
    return "[\n" + "".join(rows) + "]"


def _code(text: Any) -> str:
    """Inline code in the README: backticks where nothing in the text can break them (what
    edgekd names), else :func:`md_code` (a user's input or target name)."""
    text = str(text)
    plain = not any(c in text for c in "`|<>&\\\n\r")
    return f"`{text}`" if plain else md_code(text)


def _usage(spec: Mapping[str, Any]) -> str:
    """The arguments of the command line in the script's docstring and the README. An input
    name that a shell or a docstring would read otherwise (an ONNX graph's names are any
    string) is left as NAME."""
    data = [i for i in spec["inputs"] if i["role"] == "data"]
    if len(data) == 1:
        return "image.png" if data[0]["image"] else "sample.npy"
    return " ".join(f"--input {i['name'] if _SAFE.fullmatch(i['name']) else 'NAME'}=FILE.npy"
                    for i in data)


@cache
def _template(name: str) -> Template:
    """One of the script templates shipped in ``edgekd/report/templates/``."""
    text = (resources.files("edgekd.report") / "templates" / name).read_text("utf-8")
    return Template(text)


def render_script(runtime: str, artifacts: Mapping[str, Mapping[str, Any]],
                  spec: Mapping[str, Any], report: Mapping[str, Any],
                  providers: Sequence[str] = ("CPUExecutionProvider",)) -> str:
    """The ``run_<runtime>.py`` of one runtime: the template filled with the build's data."""
    names = {precision: a["path"] for precision, a in artifacts.items()}
    default = next(iter(names))
    loader = _template(f"load_{runtime}.py.tmpl").substitute(
        providers=_literal(list(providers)))
    return _template("run_script.py.tmpl").substitute(
        runtime=NAMES[runtime], script=script_name(runtime), usage=_usage(spec),
        pip=_pip(runtime, spec), version=edgekd.__version__,
        artifacts=_literal(names), default=repr(default),
        threads=spec["threads"], inputs=_literal(spec["inputs"]),
        outputs=_literal(spec["outputs"]), classes=_literal(spec["classes"]), loader=loader)


def _pip(runtime: str, spec: Mapping[str, Any]) -> str:
    images = any(i.get("image") for i in spec["inputs"])
    return f"pip install {PIP[runtime]} numpy" + (" pillow" if images else "")


# -- the build folder's README -------------------------------------------------------------

def render_readme(report: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """What to copy to the device, what to install, what the model takes, the command."""
    by_runtime = _by_runtime(report)
    usage = _usage(spec)
    lines = [f"# Deploying {_code(report['target'])}", "",
             md(report.get("target_description", "")), "",
             "Each runtime has a script that loads the artifact with only that runtime and "
             "NumPy, applies the preprocessing the build used, and prints the prediction for "
             "one input. It imports nothing of edgekd and no torch: copy the script and the "
             "artifact's files into one folder on the device.", "",
             "| runtime | copy to the device | install there | run |", "|---|---|---|---|"]
    for runtime, artifacts in by_runtime.items():
        ship = next(iter(artifacts.values()))
        files = ", ".join(_code(f) for f in [*ship.get("files", [ship["path"]]),
                                               script_name(runtime)])
        lines.append(f"| {NAMES[runtime]} {md(fmt.version(ship.get('runtime_version')))} | "
                     f"{files} | {_code(_pip(runtime, spec))} | "
                     f"{_code(f'python {script_name(runtime)} {usage}')} |")
    lines += ["", "Each script runs the shipped file (" + ", ".join(
        f"{NAMES[r]}: {_code(next(iter(a.values()))['path'])}" for r, a in by_runtime.items())
        + "); `--artifact int8` or `--artifact fp32` runs the other one (or `--artifact PATH`), "
              f"`--threads N` sets the runtime's threads (default {spec['threads']}, the "
              "target's), `--top K` how many classes to print. LiteRT: `tflite-runtime` "
              "works too where `ai-edge-litert` has no wheel.", "",
              "## What the model takes", "",
              "| input | dtype | shape | what to give |", "|---|---|---|---|"]
    for i in spec["inputs"]:
        shape = [1, *i["shape"]] if i["role"] == "data" else i["shape"]
        lines.append(f"| {_code(i['name'])} | {md(i['dtype'])} | {_code(shape)} | "
                     f"{_what_to_give(i)} |")
    lines += ["", "## What it returns", ""]
    lines += [f"- {_code(o['name'])} {_code(o['shape'])}" + (
        ": class scores; the prediction is the largest" if o["classifier"] else "")
        for o in spec["outputs"]]
    if spec["classes"]:
        lines.append(f"- classes, by index: {md(', '.join(spec['classes']))}")
    lines += ["", "## Verified by the build", "",
              "| file | runtime | precision | accuracy | top-1 agreement | max rel. error |",
              "|---|---|---|---:|---:|---:|"]
    lines += [f"| {_code(a['path'])} | {md(a['runtime'])} | {md(a['precision'])} | "
              f"{fmt.percent(a.get('accuracy'))} | {fmt.percent(a.get('top1_agreement'))} | "
              f"{fmt.error(a.get('max_rel_error'))} |"
              for artifacts in by_runtime.values() for a in artifacts.values()]
    lines += ["", "Agreement is with the PyTorch (or ONNX) model each file came from, on the "
              "whole test split; `report.md` has every figure.", ""]
    return "\n".join(lines)


def _what_to_give(i: Mapping[str, Any]) -> str:
    """The README's cell for one input (Markdown: names and values escaped or in code)."""
    if i["role"] == "fixed":
        value = i["value"] if not isinstance(i["value"], list) else "its value"
        return f"nothing: the script feeds {_code(value)} as the build did"
    if i["role"] == "state":
        after = f", then output {_code(i['from_output'])} of the call before" \
            if i.get("from_output") else ""
        return f"nothing: zeros, the start of a stream{after}"
    files = f"an image file (any size: converted to {i['image']} and resized) or a " \
        if i.get("image") else "a "
    files += f".npy of one sample {_code(i['shape'])}, raw"
    p = i.get("preprocess")
    if p is None:
        return f"{files}, fed as stored in {md(i['dtype'])}"
    return (f"{files} ({md(i['raw'])}); the script applies "
            f"`x = (raw * {p['scale']:g} - mean) / std` with mean {_code(p['mean'])}, "
            f"std {_code(p['std'])}")
