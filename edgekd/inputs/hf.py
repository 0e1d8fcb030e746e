"""A local Hugging Face checkpoint folder as a model: ``config.json`` plus ``model.safetensors``
(or its shards, or ``pytorch_model.bin`` read as plain weights), named where a project names a
factory (``model.student = "checkpoints/my-bert"``).

The folder is read through ``transformers`` when it is installed: the config with
``AutoConfig`` and the class named in its ``architectures`` (else the sequence classifier of
its ``model_type``), built with eager attention (the one every exporter can trace), then the
weights loaded by :mod:`.weights`, strictly, so a checkpoint that does not fit is one line, not
a model with random layers. Nothing is fetched (``local_files_only``) and no code from the
folder runs (``trust_remote_code=False``). The model's ``forward`` returns the logits tensor
alone and names its inputs (``input_ids, attention_mask=None``), which is how the export and
the data read a model's inputs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import UsageError
from edgekd.inputs.paths import check_file, first_line
from edgekd.inputs.weights import fit_state, read_state

if TYPE_CHECKING:
    from torch import nn

_SAVE = "save the model again with model.save_pretrained(folder)"
_PICKLE = "save the model with model.save_pretrained(folder), which writes model.safetensors"


def _forward_text(self: Any, input_ids: Any, attention_mask: Any = None) -> Any:
    return self.logits_of(input_ids=input_ids, attention_mask=attention_mask)


def _forward_text_typed(self: Any, input_ids: Any, attention_mask: Any = None,
                        token_type_ids: Any = None) -> Any:
    return self.logits_of(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids)


def _forward_ids(self: Any, input_ids: Any) -> Any:
    return self.logits_of(input_ids=input_ids)


def _forward_pixels(self: Any, pixel_values: Any) -> Any:
    return self.logits_of(pixel_values=pixel_values)


def _forward_audio(self: Any, input_values: Any) -> Any:
    return self.logits_of(input_values=input_values)


# The inputs a model gets, by the names its forward reads them under.
_FORWARDS = {
    ("input_ids",): _forward_ids,
    ("input_ids", "attention_mask"): _forward_text,
    ("input_ids", "attention_mask", "token_type_ids"): _forward_text_typed,
    ("pixel_values",): _forward_pixels,
    ("input_values",): _forward_audio,
}


def _logits_of(self: Any, **inputs: Any) -> Any:
    """The Hugging Face forward with ``return_dict``: its logits (or, for a model without a
    head, its first output)."""
    out = self.hf_class.forward(self, **inputs, return_dict=True)
    logits = getattr(out, "logits", None)
    return logits if logits is not None else out[0]


def _pool(hidden: Any, mask: Any, modes: tuple[str, ...], normalize: bool) -> Any:
    """The sentence embedding of ``hidden`` [B, T, H] over ``mask`` [B, T], the way
    sentence-transformers' Pooling (modes concatenated in its order) and Normalize make it."""
    import torch

    m = mask.unsqueeze(-1).to(hidden.dtype)
    count = m.sum(1).clamp(min=1e-9)
    parts = []
    for mode in modes:
        if mode == "cls_token":
            parts.append(hidden[:, 0])
        elif mode == "max_tokens":
            parts.append(hidden.masked_fill(m == 0, -1e9).max(1).values)
        elif mode == "mean_tokens":
            parts.append((hidden * m).sum(1) / count)
        else:  # mean_sqrt_len_tokens
            parts.append((hidden * m).sum(1) / count.sqrt())
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
    if normalize:
        out = out / out.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return out


def _embedding_of(self: Any, **inputs: Any) -> Any:
    """The Hugging Face forward's last hidden state, pooled over the attention mask (all
    ones when not given)."""
    import torch

    out = self.hf_class.forward(self, **inputs, return_dict=True)
    mask = inputs.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(inputs["input_ids"])
    return _pool(out.last_hidden_state, mask, self.pooling, self.normalize)


def _logits_class(base: type, names: tuple[str, ...],
                  pooling: tuple[tuple[str, ...], bool] | None = None) -> type:
    """``base`` with a forward that takes ``names`` and returns one tensor (the logits, or
    the pooled sentence embedding with ``pooling`` = (modes, normalize)). A subclass, not a
    wrapper, so the state dict keeps the checkpoint's key names."""
    body: dict[str, Any] = {"forward": _FORWARDS[names], "logits_of": _logits_of,
                            "hf_class": base, "__module__": __name__}
    if pooling is not None:
        body.update(logits_of=_embedding_of, pooling=pooling[0], normalize=pooling[1])
    return type(f"{base.__name__}{'Pooled' if pooling else 'Logits'}", (base,), body)


def _input_names(cls: type, config: Any, what: str, path: Path) -> tuple[str, ...]:
    params = inspect.signature(cls.forward).parameters  # type: ignore[attr-defined]
    main = getattr(cls, "main_input_name", "input_ids")
    if main != "input_ids":
        if (main,) not in _FORWARDS:
            raise UsageError(f"{what}: {path} is a {cls.__name__}, whose input {main!r} edgekd "
                             "cannot feed: use a text (input_ids), image (pixel_values) or "
                             "audio (input_values) model, or export it to ONNX (model.onnx)")
        return (main,)
    if "attention_mask" not in params:
        return ("input_ids",)
    typed = "token_type_ids" in params and getattr(config, "type_vocab_size", 0) > 1
    return ("input_ids", "attention_mask", *(("token_type_ids",) if typed else ()))


def _read_config(folder: Path, what: str) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.exists():
        raise UsageError(f"{what}: {folder} is a folder without config.json: name a Hugging "
                         "Face checkpoint folder (model.save_pretrained writes config.json and "
                         "model.safetensors) or a factory as path/to/file.py:function")
    check_file(path, what, "config.json", f": {_SAVE}")
    try:
        raw = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise UsageError(f"{what}: {path} is not valid JSON ({first_line(exc)}): "
                         f"{_SAVE}") from exc
    if not isinstance(raw, dict):
        raise UsageError(f"{what}: {path} holds a JSON {type(raw).__name__}, not an object: "
                         f"{_SAVE}")
    if not isinstance(raw.get("model_type"), str):
        raise UsageError(f"{what}: {path} has no \"model_type\": {_SAVE}")
    return raw


# sentence-transformers' Pooling modes edgekd computes, in the order it concatenates them.
_POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
_ST = "sentence_transformers.models."
_ST_FIX = ("edgekd reads a sentence-transformers folder of a Transformer, a Pooling "
           f"({', '.join(_POOLING_MODES)}) and optionally a Normalize module: export the model "
           "to ONNX (model.onnx) or wrap it in a factory (path/to/file.py:function)")


def _json_object(path: Path, what: str) -> Any:
    check_file(path, what, path.name, f": {_ST_FIX}")
    try:
        return json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise UsageError(f"{what}: {path} is not valid JSON ({first_line(exc)}): "
                         f"{_ST_FIX}") from exc


def _pooling(folder: Path, what: str) -> tuple[tuple[str, ...], bool] | None:
    """(pooling modes, normalize) of a sentence-transformers folder whose modules.json lists
    a Pooling module; None for any other folder (the model's own output then)."""
    path = folder / "modules.json"
    if not path.exists():
        return None
    modules = _json_object(path, what)
    if not (isinstance(modules, list) and all(isinstance(m, dict) for m in modules)):
        raise UsageError(f"{what}: {path} is not a list of modules: {_ST_FIX}")
    types = [str(m.get("type", "")).removeprefix(_ST) for m in modules]
    if "Pooling" not in types:
        return None
    expected = ["Transformer", "Pooling", "Normalize"][:len(types)]
    if types != expected or len(types) < 2 or modules[0].get("path", "") not in ("", "."):
        raise UsageError(f"{what}: {path} lists the modules {', '.join(types)}, which edgekd "
                         f"cannot compute as a whole: {_ST_FIX}")
    sub = str(modules[1].get("path", ""))
    config = (folder / sub).resolve() / "config.json"
    if not sub or Path(sub).is_absolute() or ".." in Path(sub).parts:
        raise UsageError(f"{what}: {path} names the Pooling folder {sub!r}, which is not a "
                         f"folder inside {folder}: {_ST_FIX}")
    raw = _json_object(config, what)
    if not isinstance(raw, dict):
        raise UsageError(f"{what}: {config} holds a JSON {type(raw).__name__}, not an "
                         f"object: {_ST_FIX}")
    on = [k.removeprefix("pooling_mode_") for k, v in raw.items()
          if k.startswith("pooling_mode") and v not in (False, None)]
    other = [m for m in on if m not in _POOLING_MODES]
    if other or not on:
        which = f"the pooling mode {other[0]!r}" if other else "no pooling mode"
        raise UsageError(f"{what}: {config} sets {which}: set one of "
                         f"{', '.join('pooling_mode_' + m for m in _POOLING_MODES)} to true, "
                         "or export the model to ONNX (model.onnx)")
    return tuple(m for m in _POOLING_MODES if m in on), len(types) == 3


def _check_encoder(cls: type, config: Any, inputs: tuple[str, ...], what: str,
                   folder: Path) -> None:
    """A Pooling module pools the hidden states of a head-less model that takes token ids."""
    import transformers

    base = transformers.AutoModel._model_mapping.get(type(config), None)
    bases = base if isinstance(base, list | tuple) else (base,)
    if inputs[0] != "input_ids" or cls not in bases:
        raise UsageError(f"{what}: {folder} is a sentence-transformers folder whose "
                         f"architecture {cls.__name__} is not a head-less text encoder "
                         f"(AutoModel): set \"architectures\" in config.json to the base "
                         f"model class, or {_ST_FIX[_ST_FIX.index('export'):]}")


def _weight_files(folder: Path, what: str) -> list[Path]:
    """The files that hold the folder's weights, in the order save_pretrained looks."""
    if (folder / "model.safetensors").exists():
        return [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if index.exists():
        check_file(index, what, "index", f": {_SAVE}")
        try:
            shards = sorted(set(json.loads(index.read_bytes())["weight_map"].values()))
        except (ValueError, OSError, KeyError, TypeError, AttributeError) as exc:
            raise UsageError(f"{what}: {index} is not a safetensors index (no weight_map: "
                             f"{first_line(exc)}): {_SAVE}") from exc
        files = [folder / str(s) for s in shards]
        outside = [s for s in shards if Path(str(s)).name != s]
        if outside or not files:
            raise UsageError(f"{what}: {index} names shards outside its folder or none "
                             f"({', '.join(map(str, outside[:2]))}): {_SAVE}")
        return files
    if (folder / "pytorch_model.bin").exists():
        return [folder / "pytorch_model.bin"]
    raise UsageError(f"{what}: {folder} has config.json but no weights (model.safetensors or "
                     f"pytorch_model.bin): {_SAVE}")


def _model_class(config: Any, raw: dict[str, Any], what: str, path: Path) -> type:
    """The class ``architectures`` names, only from transformers itself (never remote code),
    else the sequence classifier of the config's model_type."""
    import transformers

    version = transformers.__version__
    archs = raw.get("architectures") or []
    if not archs:
        mapping = transformers.AutoModelForSequenceClassification._model_mapping
        try:
            found: Any = mapping[type(config)]
        except KeyError:
            raise UsageError(f"{what}: {path} names no \"architectures\" and transformers "
                             f"{version} has no sequence classifier for model_type "
                             f"{raw['model_type']!r}: add \"architectures\": [\"<the model "
                             "class>\"] to config.json") from None
        return found[0] if isinstance(found, list | tuple) else found  # type: ignore[no-any-return]
    name = str(archs[0])
    try:
        cls = getattr(transformers, name, None)
    except Exception as exc:  # noqa: BLE001 - the lazy import of its module failed
        raise UsageError(f"{what}: transformers cannot import {name} ({first_line(exc)}): "
                         "install what it needs") from exc
    if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
        remote = " (it may need the folder's own code, which edgekd never runs)" \
            if "auto_map" in raw else ""
        raise UsageError(f"{what}: {path} names the architecture {name!r}, which transformers "
                         f"{version} does not have{remote}: upgrade transformers, or export the "
                         "model to ONNX and set model.onnx")
    return cls


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path) -> str:
    """sha256 of a weights file, hashed once per version (a build makes the model often)."""
    from edgekd.common.cache import sha256_file

    info = path.stat()
    key = (str(path), info.st_size, info.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


class CheckpointFolder:
    """A factory (``() -> nn.Module``) for one checkpoint folder, checked when made. Its
    ``__qualname__`` is a digest of config.json and the weights, so a changed checkpoint
    changes what the build's caches key on."""

    def __init__(self, folder: Path, what: str) -> None:
        self.checkpoint_folder = folder
        self.what = what
        self.raw = _read_config(folder, what)
        self.weights = _weight_files(folder, what)
        try:
            import transformers
        except ImportError as exc:
            raise UsageError(f"{what}: {folder} is a Hugging Face checkpoint, which needs "
                             "transformers: pip install transformers") from exc
        from transformers import AutoConfig

        from edgekd.common.quiet import quiet

        path = folder / "config.json"
        try:
            with quiet(f"reading {path}"):
                self.config = AutoConfig.from_pretrained(
                    str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as exc:  # noqa: BLE001 - ValueError/KeyError for unknown types
            known = self.raw["model_type"] in transformers.CONFIG_MAPPING
            reason = (f"transformers cannot read it ({first_line(exc)})" if known else
                      f"its model_type {self.raw['model_type']!r} is unknown to transformers "
                      f"{transformers.__version__}")
            raise UsageError(f"{what}: {path}: {reason}: upgrade transformers or "
                             f"{_SAVE}") from exc
        self.cls = _model_class(self.config, self.raw, what, path)
        self.inputs = _input_names(self.cls, self.config, what, path)
        self.pooling = _pooling(folder, what)
        if self.pooling is not None:
            _check_encoder(self.cls, self.config, self.inputs, what, folder)
        digest = hashlib.sha256(path.read_bytes())
        if self.pooling is not None:  # a changed pooling is a changed model
            digest.update(repr(self.pooling).encode())
        for file in self.weights:
            digest.update(_sha256(file).encode())
        self.__qualname__ = digest.hexdigest()

    def __call__(self, **kwargs: Any) -> nn.Module:
        if kwargs:
            raise UsageError(f"{self.what}: {self.checkpoint_folder} is a checkpoint folder, "
                             f"whose config.json sets the architecture: remove {self.what}_args "
                             f"({', '.join(kwargs)})")
        from edgekd.common.quiet import quiet

        with quiet(f"building {self.cls.__name__}"):
            model = self.cls._from_config(  # type: ignore[attr-defined]
                self.config, attn_implementation="eager").float()
        model.__class__ = _logits_class(type(model), self.inputs, self.pooling)
        own = model.state_dict()
        state: dict[str, Any] = {}
        for file in self.weights:
            state.update(read_state(file, self.what, own, pickle_fix=_PICKLE))
        if self.pooling is not None and getattr(model, "pooler", None) is not None and not any(
                k.startswith("pooler.") for k in state):
            # sentence-transformers saves BERT without the pooler, which its Pooling never uses
            model.pooler = None
        fit = "config.json and the weights must come from one model.save_pretrained(folder)"
        fit_state(model, state, self.weights[0] if len(self.weights) == 1
                  else self.checkpoint_folder, self.what, arch=fit, args=fit)
        return model.eval()  # type: ignore[no-any-return]


def hf_factory(folder: Path, what: str) -> CheckpointFolder:
    """The factory of the Hugging Face checkpoint in ``folder``; one line if it is not one."""
    return CheckpointFolder(folder, what)
