"""The stage cache: each training stage's model (teacher, scratch baseline, distilled
student, pruned student) under ``<out>/.cache/stages/``, keyed by a hash of everything that
went into it (the stages themselves run in :mod:`edgekd.pipeline.training`). An entry is a folder holding
``model.safetensors`` and ``meta.json``, written beside the cache and renamed into place in
one step: a build killed at any moment (SIGKILL included) leaves whole entries only, and the
next build resumes after the last stage that finished. ``fresh`` ignores what is there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

import edgekd
from edgekd.train.loop import world
from edgekd.train.models import count_params

log = logging.getLogger(__name__)

Factory = Callable[[], nn.Module]  # a fresh, untrained (or pre-loaded) model
StepCallback = Callable[[str, str], None]


def digest(*parts: Any) -> str:
    """A short sha256 of JSON-able parts (the edgekd and torch versions always included)."""
    text = json.dumps([edgekd.__version__, torch.__version__, *parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageCache:
    root: Path
    fresh: bool = False  # never read entries (new ones are still written)

    def _folder(self, name: str, key: str) -> Path:
        return self.root / f"{name}-{key}"

    def load(self, name: str, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load the entry into ``model`` and return its metadata; None when absent."""
        folder = self._folder(name, key)
        if self.fresh or not (folder / "meta.json").is_file():
            return None
        try:
            model.load_state_dict(load_file(folder / "model.safetensors"))
            return dict(json.loads((folder / "meta.json").read_text(encoding="utf-8")))
        except (OSError, RuntimeError, ValueError) as exc:  # damaged entry: recompute it
            log.warning("ignoring unreadable stage cache %s: %s", folder, exc)
            return None

    def save(self, name: str, key: str, model: nn.Module, meta: dict[str, Any]) -> None:
        if world()[0] != 0:  # under torchrun, rank 0 keeps the cache
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=self.root))
        try:
            save_weights(model, tmp / "model.safetensors")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            final = self._folder(name, key)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def save_weights(model: nn.Module, path: Path) -> None:
    """``model``'s state dict as safetensors. safetensors reports a full disk as its own
    error type; it becomes the OSError (ENOSPC) every other write raises, so the CLI can say
    so in one line."""
    try:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    except Exception as exc:  # noqa: BLE001 - SafetensorError is not an OSError
        if "No space" in str(exc) or "StorageFull" in str(exc):
            raise OSError(errno.ENOSPC, "No space left on device", str(path)) from exc
        raise


def stage_entry(name: str, model: nn.Module, acc: float | None, **extra: Any) -> dict[str, Any]:
    params, nonzero = count_params(model)
    return {"name": name, "params": params, "nonzero_params": nonzero,
            "accuracy": None if acc is None else round(acc, 6), **extra}
