"""The stage cache: each training stage's model (teacher, scratch baseline, distilled
student, pruned student) under ``<out>/.cache/stages/``, keyed by a :func:`digest` of
everything that went into it (the stages themselves run in :mod:`edgekd.pipeline.training`).
An entry is a :class:`~edgekd.common.cache.CacheDir` folder holding ``model.safetensors``
and ``meta.json``: a build killed at any moment (SIGKILL included) leaves whole entries
only, and the next build resumes after the last stage that finished. ``fresh`` ignores what
is there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

import edgekd
from edgekd.common.cache import CacheDir, digest_of
from edgekd.train.loop import world
from edgekd.train.models import count_params

log = logging.getLogger(__name__)

Factory = Callable[[], nn.Module]  # a fresh, untrained (or pre-loaded) model
StepCallback = Callable[[str, str], None]


def digest(*parts: Any) -> str:
    """A cache key: the short :func:`~edgekd.common.cache.digest_of` of JSON-able parts,
    the edgekd and torch versions always included (another torch trains another model)."""
    return digest_of(edgekd.__version__, torch.__version__, *parts, length=16)


@dataclass(frozen=True)
class StageCache:
    """Trained models by stage name and :func:`digest` key, in a :class:`CacheDir`."""

    root: Path
    fresh: bool = False  # never read entries (new ones are still written)

    @property
    def cache_dir(self) -> CacheDir:
        return CacheDir(self.root, fresh=self.fresh)

    def load(self, name: str, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load the entry into ``model`` and return its metadata; None when absent or
        unreadable."""
        folder = self.cache_dir.entry(name, key)
        if folder is None:
            return None
        try:
            model.load_state_dict(load_file(folder / "model.safetensors"))
            return dict(json.loads((folder / "meta.json").read_text(encoding="utf-8")))
        # A damaged entry is recomputed (and replaced when saved).
        except (OSError, RuntimeError, ValueError, SafetensorError) as exc:
            log.warning("ignoring unreadable stage cache %s: %s", folder, exc)
            return None

    def save(self, name: str, key: str, model: nn.Module, meta: dict[str, Any]) -> None:
        """Store ``model``'s weights and ``meta`` as the entry (name, key), replacing one."""
        if world()[0] != 0:  # under torchrun, rank 0 keeps the cache
            return
        with self.cache_dir.write(name, key) as tmp:
            save_weights(model, tmp / "model.safetensors")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def save_weights(model: nn.Module, path: Path) -> None:
    """``model``'s state dict as safetensors. Serialized in memory and written as any other
    file: safetensors' own writer creates the file 0600 whatever the umask, while every
    other artifact of a build follows it (0644 under umask 022); a full disk is then the
    OSError (ENOSPC) every other write raises, which the CLI says in one line."""
    path.write_bytes(save({k: v.contiguous() for k, v in model.state_dict().items()}))


def stage_entry(name: str, model: nn.Module, acc: float | None, **extra: Any) -> dict[str, Any]:
    params, nonzero = count_params(model)
    return {"name": name, "params": params, "nonzero_params": nonzero,
            "accuracy": None if acc is None else round(acc, 6), **extra}
