"""The pruning step: magnitude pruning of the distilled student, then a distillation fine-tune.

Two methods (``PruneConfig.method``):

- ``unstructured``: global L1 magnitude pruning of the weights of every conv (1-, 2-, 3-D,
  transposed, grouped, depthwise) and linear layer (:data:`PRUNED_KINDS`) with
  ``torch.nn.utils.prune``; what stays dense is listed with its reason (:func:`skipped_layers`).
  The masks stay attached while the model is fine-tuned (so pruned weights stay zero), then
  are baked into the weights with ``prune.remove``. Either one-shot (all at once before the
  fine-tune) or *gradual* (Zhu & Gupta 2017, "To prune, or not to prune"): during the
  fine-tune the masks are recomputed every ``frequency`` optimizer steps to follow the cubic
  ramp :func:`cubic_sparsity`. Zeroed weights make the file compress
  better (gzip) but ONNX Runtime, OpenVINO and LiteRT run dense kernels: **no speed-up**.
- ``structured``: whole channels removed (:mod:`edgekd.compress.structured`), so the exported model
  has smaller weight tensors and fewer FLOPs on every runtime.

What the report says about sparsity is counted in the final weights (:func:`measure`), per
layer and in total, never copied from the setting.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize, prune

from edgekd.compress.structured import kept_whole, macs, prune_channels
from edgekd.inputs.dataset import InputSpec, Split
from edgekd.settings.config import PruneConfig
from edgekd.train.inference import Batch
from edgekd.train.loop import Objective, Schedule, train

ObjectiveFor = Callable[[nn.Module], Objective]  # the fine-tune's loss, built for the model

# Changes when the same settings prune a model differently (2: every conv kind, not only
# Conv2d): part of the pruned stage's cache key, so an older cached stage is not reused.
VERSION = 2

# The gradual ramp ends after this fraction of the fine-tune's steps; the rest trains at the
# final sparsity so the network recovers from the last mask update (Zhu & Gupta stop pruning
# well before training ends, while the learning rate is still non-zero).
RAMP_FRACTION = 2 / 3


# What magnitude pruning covers: every conv (1-, 2- and 3-D, transposed, grouped and
# depthwise: a group only changes the weight's shape, not what one weight means) and every
# Linear (a LazyLinear once it has run). Weights are ranked together, globally.
PRUNED_KINDS: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
    nn.Linear)

# What stays dense, and why (reported per layer in the stage entry's ``skipped``). Biases of
# pruned layers stay dense too: one per output channel, and a zero shifts every activation.
_NORM_KINDS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
_WHY_NORM = ("a per-channel scale and shift: a zero silences the whole channel (structured "
             "pruning removes channels with their conv instead); few parameters")
_WHY_EMBEDDING = ("a lookup table: a zero changes particular tokens' vectors instead of removing "
                  "a connection, and its magnitudes do not rank against conv/linear weights")
_WHY_RNN = ("recurrent layers read their weights as one flattened buffer, which pruning masks "
            "do not update")
_WHY_ATTENTION = ("nn.MultiheadAttention reads its projection weights directly, not through its "
                  "submodules' forward, so the pruning masks would never be applied")
_WHY_OTHER = ("not a conv or linear layer: magnitude pruning covers Conv1d/2d/3d, "
              "ConvTranspose1d/2d/3d (grouped and depthwise too) and Linear")


def _why_kind(module: nn.Module) -> str:
    if isinstance(module, _NORM_KINDS):
        return _WHY_NORM
    if isinstance(module, nn.Embedding | nn.EmbeddingBag):
        return _WHY_EMBEDDING
    if isinstance(module, nn.RNNBase):
        return _WHY_RNN
    return _WHY_OTHER


def _plan(model: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[dict[str, Any]]]:
    """The layers whose weights are pruned (name, module), and every other layer that holds
    parameters with the reason it stays dense."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for param in module._parameters.values():
            if param is not None:
                owners.setdefault(id(param), []).append(name)
    attention = [name for name, m in model.named_modules()
                 if isinstance(m, nn.MultiheadAttention)]
    chosen: list[tuple[str, nn.Module]] = []
    skipped: list[dict[str, Any]] = []
    for name, module in model.named_modules():
        own = [p for p in module._parameters.values() if p is not None]
        why = _why_not(name, module, owners, attention)
        if why is None:
            chosen.append((name, module))
        elif own:
            skipped.append({"layer": name, "type": type(module).__name__,
                            "params": sum(_size(p) for p in own), "reason": why})
    return chosen, skipped


def _size(param: torch.Tensor) -> int:
    """Number of entries; 0 for a lazy layer's parameter that does not exist yet."""
    return 0 if isinstance(param, nn.parameter.UninitializedParameter) else int(param.numel())


def _why_not(name: str, module: nn.Module, owners: dict[int, list[str]],
             attention: list[str]) -> str | None:
    """None when ``module``'s weight is pruned, else why it is not."""
    if any(name == a or name.startswith(a + ".") for a in attention):
        return _WHY_ATTENTION
    if not isinstance(module, PRUNED_KINDS):
        return _why_kind(module)
    if prune.is_pruned(module):  # masked already (gradual pruning): still one of ours
        return None
    weight = module._parameters.get("weight")
    if parametrize.is_parametrized(module, "weight") or weight is None:
        return "its weight is computed (weight norm or another parametrisation), not stored"
    if isinstance(weight, nn.parameter.UninitializedParameter):
        return "a lazy layer that never ran: its weight does not exist yet"
    others = [o for o in owners.get(id(weight), []) if o != name]
    if others:
        return (f"its weight is shared with {', '.join(map(repr, others))}: masking one use "
                "would untie them")
    return None


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs magnitude pruning ranks together (:data:`PRUNED_KINDS`
    less the exceptions :func:`skipped_layers` lists)."""
    return [(m, "weight") for _, m in _plan(model)[0]]


def skipped_layers(model: nn.Module) -> list[dict[str, Any]]:
    """Every layer holding parameters that magnitude pruning leaves dense: layer, type,
    params and the reason."""
    return _plan(model)[1]


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
    """The fraction of the pruned layers' weights that are zero, counted in the weights."""
    weights = [m.get_parameter("weight") if not prune.is_pruned(m) else
               m.get_parameter("weight_orig") * m.get_buffer("weight_mask")
               for m, _ in prunable(model)]
    total = sum(int(w.numel()) for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / total if total else 0.0


def _weight(m: nn.Module) -> torch.Tensor | None:
    """The weight of a conv, linear or norm layer that has one (materialised), else None."""
    w = getattr(m, "weight", None)
    if (not isinstance(m, PRUNED_KINDS + _NORM_KINDS) or not isinstance(w, torch.Tensor)
            or isinstance(w, nn.parameter.UninitializedParameter)):
        return None
    return w.detach()


def _shapes(model: nn.Module) -> dict[str, list[int]]:
    return {name: list(w.shape) for name, m in model.named_modules()
            if (w := _weight(m)) is not None}


def layer_sparsity(before: dict[str, list[int]], model: nn.Module) -> list[dict[str, Any]]:
    """Per layer, measured in ``model``'s weights: the weight shape before -> after pruning,
    its size, how many entries are zero and that fraction; ``pruned`` says whether the layer
    is one magnitude pruning ranks (conv, linear) or rides along (a norm, which structured
    pruning narrows with its conv)."""
    ranked = {id(m) for m, _ in prunable(model)}
    rows: list[dict[str, Any]] = []
    for name, m in model.named_modules():
        w = _weight(m)
        if name not in before or w is None:
            continue
        zeros = int((w == 0).sum())
        rows.append({"layer": name, "type": type(m).__name__, "before": before[name],
                     "after": list(w.shape), "params": int(w.numel()), "zeros": zeros,
                     "zero_fraction": round(zeros / max(int(w.numel()), 1), 4),
                     "pruned": id(m) in ranked})
    return rows


def measure(dense: nn.Module, pruned: nn.Module) -> dict[str, Any]:
    """What pruning did, counted in ``pruned``'s final weights (never taken from the setting):
    ``weight_sparsity`` over the pruned layers' weights, ``param_sparsity`` over all
    parameters, per-layer rows, and the layers left dense with the reason."""
    layers = layer_sparsity(_shapes(dense), pruned)
    ranked = [r for r in layers if r["pruned"]]
    weights = sum(r["params"] for r in ranked)
    weight_zeros = sum(r["zeros"] for r in ranked)
    params = [p for p in pruned.parameters() if _size(p)]
    total = sum(_size(p) for p in params)
    zeros = sum(int((p == 0).sum()) for p in params)
    skipped = skipped_layers(pruned)
    return {"weight_sparsity": round(weight_zeros / weights, 4) if weights else 0.0,
            "param_sparsity": round(zeros / total, 4) if total else 0.0,
            "pruned_weights": weights, "zero_weights": weight_zeros,
            # what is neither a pruned weight nor in a skipped layer: the pruned layers' biases
            "bias_params": total - weights - sum(r["params"] for r in skipped),
            "params_before": sum(_size(p) for p in dense.parameters()),
            "layers": layers, "skipped": skipped}


def shortfall(info: dict[str, Any]) -> str | None:
    """A warning when unstructured pruning's measured sparsity over all parameters falls more
    than a point short of the setting, naming the largest layers left dense."""
    if info.get("method") != "unstructured":
        return None  # structured: the setting is a channel fraction, not a count of zeros
    target, measured = float(info["target_sparsity"]), float(info["param_sparsity"])
    if abs(measured - target) <= 0.01:
        return None
    dense = sorted(info.get("skipped", []), key=lambda r: -r["params"])
    named = [f"{r['layer'] or '(model)'!r} ({r['type']}, {r['params']:,} params)"
             for r in dense[:5]] + ([f"{len(dense) - 5} more layers"] if len(dense) > 5 else [])
    if info.get("bias_params"):
        named.append(f"the pruned layers' biases ({info['bias_params']:,} params)")
    return (f"pruning: {measured:.1%} of all parameters are zero, not the {target:.0%} set "
            f"({info['weight_sparsity']:.1%} of the pruned conv/linear weights); left dense: "
            f"{', '.join(named)}")


def _finetune(model: nn.Module, data: Split, config: PruneConfig, objective_for: ObjectiveFor,
              *, seed: int, batch_size: int, on_step: Callable[[int, int], None] | None = None,
              specs: Sequence[InputSpec] = ()) -> None:
    objective = objective_for(model)
    try:
        train(model, data, Schedule(config.finetune_epochs, config.lr, batch_size), seed=seed,
              objective=objective, on_step=on_step, specs=specs)
    finally:
        close = getattr(objective, "close", None)  # feature objectives hook the model
        if close:
            close()


def prune_model(model: nn.Module, config: PruneConfig, data: Split, *,
                objective_for: ObjectiveFor, example: Batch, seed: int,
                batch_size: int, specs: Sequence[InputSpec] = ()
                ) -> tuple[nn.Module, dict[str, Any]]:
    """Prune a copy of ``model`` as ``config`` says and fine-tune it on ``data`` with the
    objective ``objective_for(pruned_model)`` (built after pruning: a feature-distillation
    objective depends on the student's widths). Returns the pruned model (eval mode, masks
    baked in) and what the report records about it. ``example`` is one call's inputs (every
    input by name for a model fed by name, as ``specs`` say; see :func:`train`)."""
    info: dict[str, Any] = {"method": config.method, "schedule": config.schedule,
                            "target_sparsity": config.sparsity}
    if config.method == "structured":
        info["macs_before"] = macs(model, example)
        pruned = prune_channels(model, example, config.sparsity)
        info["macs_after"] = macs(pruned, example)
        info["kept_whole"] = kept_whole(model, pruned, example)
        if config.finetune_epochs:
            _finetune(pruned, data, config, objective_for, seed=seed, batch_size=batch_size,
                      specs=specs)
    else:
        pruned = copy.deepcopy(model)
        hook = None
        if config.schedule == "gradual" and config.finetune_epochs:
            hook = GradualPruning(pruned, config.sparsity, config.frequency)
        else:
            apply_masks(pruned, config.sparsity)
        if config.finetune_epochs:
            _finetune(pruned, data, config, objective_for, seed=seed, batch_size=batch_size,
                      on_step=hook, specs=specs)
        if hook:
            mask_to(pruned, config.sparsity)  # a no-op unless the fine-tune had < 1 ramp
            info["mask_updates"] = len(hook.history)
        bake(pruned)
    pruned.eval()
    info.update(measure(model, pruned))
    return pruned, info

