"""The teacher's outputs for every training sample, computed once and memory-mapped.

Inputs are not augmented, so the teacher's logits and features for a sample never change
between epochs or stages (distillation, pruning fine-tune). Computing them once removes the
teacher's forward pass from every training step; storing them as ``.npy`` files opened with
``mmap_mode="r"`` means a batch reads only its own rows, so features that do not fit in
memory still work, and later builds with the same teacher and data reuse them.
(``numpy.lib.format.open_memmap`` is the whole storage layer; nothing hand-written.) The
entries live in a :class:`~edgekd.common.cache.CacheDir`, so they appear whole or not at
all and are evicted with the other cache entries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from edgekd.common.cache import CacheDir, Digest
from edgekd.common.progress import tracking
from edgekd.inputs.dataset import Feeds
from edgekd.train.inference import ModelInput, call, rows

log = logging.getLogger(__name__)

ENTRY = "teacher-outputs"  # entries are <cache_dir>/teacher-outputs-<cache_key>/

@contextmanager
def tap(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the outputs of the named submodules during forward passes."""
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise ValueError(f"no layer named {missing[0]!r} in {type(model).__name__}; layers: "
                         f"{', '.join(n for n in modules if n)}")
    seen: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(
        lambda _m, _i, out, n=n: seen.__setitem__(n, out)) for n in names]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class TeacherOutputs:
    """Rows are training-sample indices; arrays are memory-mapped when loaded from disk."""

    logits: np.ndarray
    features: dict[str, np.ndarray]

    def logits_for(self, index: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.logits[index.numpy()]))

    def feature_for(self, name: str, index: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.features[name][index.numpy()]))


def cache_key(teacher: nn.Module, x: ModelInput, layers: Sequence[str]) -> str:
    """A short digest of the teacher's weights, the inputs (every one the model is fed) and
    the tapped layers."""
    d = Digest()
    for name, tensor in sorted(teacher.state_dict().items()):
        # As raw bytes, with the torch dtype named: numpy has no bfloat16.
        t = tensor.detach().cpu().contiguous()
        d.update(name, str(t.dtype), list(t.shape), t.reshape(-1).view(torch.uint8).numpy())
    parts = x.digest_parts() if isinstance(x, Feeds) else (x,)
    return d.update(*parts, list(layers)).hexdigest(16)


@torch.no_grad()
def _compute(teacher: nn.Module, x: ModelInput, layers: Sequence[str], folder: Path,
             batch_size: int) -> None:
    teacher.eval()
    arrays: dict[str, np.ndarray] = {}
    with tap(teacher, layers) as seen, tracking("forward", len(x), "sample") as t:
        for start in range(0, len(x), batch_size):
            logits = call(teacher, rows(x, slice(start, start + batch_size)))
            t.advance(len(logits))
            for name, tensor in [("logits", logits), *((n, seen[n]) for n in layers)]:
                value = tensor.float().numpy()
                if name not in arrays:
                    arrays[name] = np.lib.format.open_memmap(
                        folder / f"{len(arrays)}.npy", mode="w+", dtype=np.float32,
                        shape=(len(x), *value.shape[1:]))
                arrays[name][start:start + len(value)] = value
    for array in arrays.values():
        array.flush()  # type: ignore[attr-defined]
    (folder / "index.json").write_text(json.dumps(list(arrays)), encoding="utf-8")


def _open(folder: Path) -> TeacherOutputs:
    names = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    arrays = {n: np.load(folder / f"{i}.npy", mmap_mode="r") for i, n in enumerate(names)}
    logits = arrays.pop("logits")
    return TeacherOutputs(logits, arrays)


def _load(folder: Path | None) -> TeacherOutputs | None:
    """The entry's outputs; None when absent or unreadable (then they are recomputed)."""
    if folder is None:
        return None
    try:
        return _open(folder)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("ignoring unreadable teacher outputs %s: %s", folder, exc)
        return None


def teacher_outputs(teacher: nn.Module, x: ModelInput, layers: Sequence[str], cache_dir: Path,
                    *, batch_size: int = 256, fresh: bool = False
                    ) -> tuple[TeacherOutputs, bool]:
    """The teacher's logits and ``layers`` outputs for every row of ``x``; (outputs, cached).
    ``fresh`` recomputes them even when an earlier build left them in ``cache_dir``.

    Under ``torchrun`` rank 0 writes the cache and the other ranks wait, then all map it.
    """
    cache = CacheDir(cache_dir, fresh=fresh)
    key = cache_key(teacher, x, layers)
    distributed = dist.is_available() and dist.is_initialized()
    outputs = None
    if not distributed or dist.get_rank() == 0:
        outputs = _load(cache.entry(ENTRY, key))
        cached = outputs is not None
        if outputs is None:
            with cache.write(ENTRY, key) as tmp:
                _compute(teacher, x, layers, tmp, batch_size)
    else:  # only reported: rank 0 decides whether to compute
        cached = cache.entry(ENTRY, key) is not None
    if distributed:
        dist.barrier()
    if outputs is None:  # written just now, here or by rank 0
        outputs = _open(cache.path(ENTRY, key))
    return outputs, cached


class OnlineTeacher:
    """The same interface as :class:`TeacherOutputs`, but runs the teacher on every batch:
    what training costs without the cache (``benchmarks/teacher_cache.py`` compares them)."""

    def __init__(self, teacher: nn.Module, x: ModelInput, layers: Sequence[str]) -> None:
        self.teacher, self.x, self.layers = teacher.eval(), x, list(layers)
        self._index: torch.Tensor | None = None
        self._out: dict[str, torch.Tensor] = {}
        with torch.no_grad(), tap(self.teacher, self.layers) as seen:
            call(self.teacher, rows(self.x, slice(0, 1)))
            self.features = {n: np.empty((0, *seen[n].shape[1:]), np.float32)
                             for n in self.layers}  # shapes only, for projections

    @torch.no_grad()
    def _run(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._index is None or not torch.equal(self._index, index):
            with tap(self.teacher, self.layers) as seen:
                logits = call(self.teacher, rows(self.x, index))
            self._index, self._out = index, {"logits": logits, **seen}
        return self._out

    def logits_for(self, index: torch.Tensor) -> torch.Tensor:
        return self._run(index)["logits"]

    def feature_for(self, name: str, index: torch.Tensor) -> torch.Tensor:
        return self._run(index)[name]
