"""The pruning step: magnitude pruning of the distilled student, then a distillation fine-tune.

Two methods (``PruneConfig.method``):

- ``unstructured``: global L1 magnitude pruning of conv and linear weights with
  ``torch.nn.utils.prune``. The masks stay attached while the model is fine-tuned (so pruned
  weights stay zero), then are baked into the weights with ``prune.remove``. Either one-shot
  (all at once before the fine-tune) or *gradual* (Zhu & Gupta 2017, "To prune, or not to
  prune"): during the fine-tune the masks are recomputed every ``frequency`` optimizer steps
  to follow the cubic ramp :func:`cubic_sparsity`. Zeroed weights make the file compress
  better (gzip) but ONNX Runtime, OpenVINO and LiteRT run dense kernels: **no speed-up**.
- ``structured``: whole channels removed (:mod:`edgekd.compress.structured`), so the exported model
  has smaller weight tensors and fewer FLOPs on every runtime.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from edgekd.compress.structured import macs, prune_channels
from edgekd.inputs.dataset import Split
from edgekd.settings.config import PruneConfig
from edgekd.train.loop import Objective, Schedule, train

ObjectiveFor = Callable[[nn.Module], Objective]  # the fine-tune's loss, built for the model

# The gradual ramp ends after this fraction of the fine-tune's steps; the rest trains at the
# final sparsity so the network recovers from the last mask update (Zhu & Gupta stop pruning
# well before training ends, while the learning rate is still non-zero).
RAMP_FRACTION = 2 / 3


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def apply_masks(model: nn.Module, sparsity: float) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-magnitude weights across all layers."""
    if sparsity > 0:
        prune.global_unstructured(prunable(model), pruning_method=prune.L1Unstructured,
                                  amount=sparsity)
    return model


def mask_to(model: nn.Module, sparsity: float) -> None:
    """Grow the masks until ``sparsity`` of all conv/linear weights are masked.

    Weights already masked stay masked (``torch.nn.utils.prune`` combines a new mask with the
    old one and ranks only the weights still alive), as in Zhu & Gupta's schedule.
    """
    params = prunable(model)
    total = sum(int(getattr(m, n).numel()) for m, n in params)
    masked = sum(int((getattr(m, n + "_mask") == 0).sum()) for m, n in params
                 if prune.is_pruned(m))
    more = round(sparsity * total) - masked
    if more > 0:
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=more)


def cubic_sparsity(step: int, *, final: float, ramp_steps: int, initial: float = 0.0,
                   begin: int = 0) -> float:
    """Zhu & Gupta's schedule ``s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3``, where
    ``n dt`` is ``ramp_steps``: ``initial`` before ``begin``, ``final`` from ``begin +
    ramp_steps`` on. Prunes fast while many redundant weights remain, slowly near the end."""
    if ramp_steps <= 0:
        return final if step >= begin else initial
    progress = min(max((step - begin) / ramp_steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualPruning:
    """A :func:`edgekd.train.loop.train` step hook: every ``frequency`` steps (and at the end of the
    ramp) masks the weights to the schedule's sparsity. ``history`` records (step, sparsity)."""

    def __init__(self, model: nn.Module, final: float, frequency: int) -> None:
        self.model, self.final, self.frequency = model, final, frequency
        self.history: list[tuple[int, float]] = []

    def __call__(self, done: int, total: int) -> None:
        ramp = max(1, round(RAMP_FRACTION * total))
        if done % self.frequency and done != ramp or done > ramp:
            return
        target = cubic_sparsity(done, final=self.final, ramp_steps=ramp)
        mask_to(self.model, target)
        self.history.append((done, target))


def bake(model: nn.Module) -> nn.Module:
    """Make pruning permanent: drop the masks, keep the zeroed weights."""
    for module, name in prunable(model):
        if prune.is_pruned(module):
            prune.remove(module, name)
    return model


def weight_sparsity(model: nn.Module) -> float:
    weights: list[torch.Tensor] = [m.weight for m, _ in prunable(model)]  # type: ignore[misc]
    total = sum(int(w.numel()) for w in weights)
    zeros = sum(int(torch.count_nonzero(w == 0)) for w in weights)
    return zeros / total if total else 0.0


def _shapes(model: nn.Module) -> dict[str, list[int]]:
    kinds = nn.Conv2d | nn.Linear | nn.BatchNorm2d
    return {name: list(m.weight.shape) for name, m in model.named_modules()
            if isinstance(m, kinds) and m.weight is not None}


def layer_sparsity(before: dict[str, list[int]], model: nn.Module) -> list[dict[str, Any]]:
    """Per layer: weight shape before -> after pruning and the fraction of weights that are
    zero (conv, linear and, for structured pruning, the BatchNorms that shrank with them)."""
    rows = []
    for name, m in model.named_modules():
        if name in before and isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d):
            w = m.weight.detach()
            rows.append({"layer": name, "type": type(m).__name__, "before": before[name],
                         "after": list(w.shape),
                         "zero_fraction": round(float((w == 0).float().mean()), 4)})
    return rows


def _finetune(model: nn.Module, data: Split, config: PruneConfig, objective_for: ObjectiveFor,
              *, seed: int, batch_size: int, on_step: Callable[[int, int], None] | None = None
              ) -> None:
    objective = objective_for(model)
    try:
        train(model, data, Schedule(config.finetune_epochs, config.lr, batch_size), seed=seed,
              objective=objective, on_step=on_step)
    finally:
        close = getattr(objective, "close", None)  # feature objectives hook the model
        if close:
            close()


def prune_model(model: nn.Module, config: PruneConfig, data: Split, *,
                objective_for: ObjectiveFor, example: torch.Tensor, seed: int,
                batch_size: int) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``model`` as ``config`` says and fine-tune it on ``data`` with the
    objective ``objective_for(pruned_model)`` (built after pruning: a feature-distillation
    objective depends on the student's widths). Returns the pruned model (eval mode, masks
    baked in) and what the report records about it."""
    before = _shapes(model)
    info: dict[str, Any] = {"method": config.method, "schedule": config.schedule,
                            "target_sparsity": config.sparsity}
    if config.method == "structured":
        info["macs_before"] = macs(model, example)
        pruned = prune_channels(model, example, config.sparsity)
        info["macs_after"] = macs(pruned, example)
        if config.finetune_epochs:
            _finetune(pruned, data, config, objective_for, seed=seed, batch_size=batch_size)
    else:
        pruned = copy.deepcopy(model)
        hook = None
        if config.schedule == "gradual" and config.finetune_epochs:
            hook = GradualPruning(pruned, config.sparsity, config.frequency)
        else:
            apply_masks(pruned, config.sparsity)
        if config.finetune_epochs:
            _finetune(pruned, data, config, objective_for, seed=seed, batch_size=batch_size,
                      on_step=hook)
        if hook:
            mask_to(pruned, config.sparsity)  # a no-op unless the fine-tune had < 1 ramp
            info["mask_updates"] = len(hook.history)
        bake(pruned)
    pruned.eval()
    info["weight_sparsity"] = round(weight_sparsity(pruned), 4)
    info["layers"] = layer_sparsity(before, pruned)
    return pruned, info

