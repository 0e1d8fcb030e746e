"""Running a user's PyTorch model on the data before anything is built: once on one sample
(a model that rejects the data fails here, in one line), and on a batch of two, twice, to
check the batch axis, determinism and finite outputs; the class count of a classifier."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, InputSpec, OutputSpec
from edgekd.inputs.paths import first_line


def classes_of(task: str, outputs: tuple[OutputSpec, ...], shapes: list[list[int]],
                what: str) -> int | None:
    """A classifier's class count: its classifier output is [batch, classes]."""
    if task != "classification":
        return None
    i = next((k for k, o in enumerate(outputs) if o.classifier), None)
    if i is None:
        return None
    if len(shapes[i]) != 2:
        where = f"output {outputs[i].name!r} of " if len(outputs) > 1 else ""
        raise UsageError(f"{where}{what} has shape {shapes[i]}, not [batch, classes]: set "
                         "model.task = \"regression\" for models that are not classifiers"
                         + (", or [outputs.<name>] classifier = true on the class scores"
                            if len(outputs) > 1 else ""))
    return int(shapes[i][1])


def _call(model: Any, feed: dict[str, np.ndarray], specs: tuple[InputSpec, ...],
          what: str, batch: int) -> list[tuple[str, Any]]:
    import torch

    from edgekd.inputs.calls import call_model, flat_outputs

    with torch.no_grad():
        try:
            result = call_model(model, feed, specs)
        except Exception as exc:  # noqa: BLE001 - the user's forward
            cause = f"({type(exc).__name__}: {first_line(exc)})"
            if batch > 1:
                raise UsageError(f"{what} runs on one sample but fails on a batch of 2 {cause}"
                                 ": edgekd calibrates and verifies in batches: make forward "
                                 "work for any batch size (x.flatten(1) or x.shape[0], not a "
                                 "hard-coded 1)") from exc
            if len(specs) == 1 and specs[0].dtype == "float32":
                raise UsageError(f"{what} cannot run on inputs of shape "
                                 f"{list(np.shape(feed[specs[0].name]))} {cause}: make "
                                 "data.image_size / the data's shape match what the model "
                                 "expects") from exc
            shapes = ", ".join(f"{s.name} {list(np.shape(feed[s.name]))} {feed[s.name].dtype}"
                               for s in specs)
            raise UsageError(f"{what} cannot run on {shapes} {cause}: make the data's shapes "
                             "and dtypes match what the model expects ([inputs.<name>] dtype "
                             "= \"int64\" for token ids, value = ... for fixed inputs)") from exc
    outs = flat_outputs(result)
    if not outs:
        raise UsageError(f"{what} returns a {type(result).__name__}, not tensors: return a "
                         "tensor, a tuple or a dict of tensors from forward")
    return outs


def fit_call(data: Dataset) -> Callable[[Any, str], None]:
    """Run a model once on one test sample (a model that rejects the data fails here, in
    one line, not deep inside training or export)."""
    specs = data.input_specs
    feed = data.feeds(data.test, 1).batch()

    def fit(model: Any, what: str) -> None:
        model.eval()
        _call(model, feed, specs, what, 1)
    return fit


def probe(model: Any, data: Dataset, task: str, what: str, *, finite: bool
           ) -> tuple[list[str], list[list[int]]]:
    """Run ``model`` (eval) on a batch of two test samples, twice, and (``finite``) on the
    test and calibration splits: every output must have the batch first, the same values
    for the same inputs, and be finite. Returns the output names and shapes (batch 1)."""
    from edgekd.inputs.calls import model_outputs

    model.eval()
    specs = data.input_specs
    feeds = data.feeds(data.test)
    pair = {k: np.concatenate([v[:2], v[:1]])[:2] for k, v in feeds.arrays.items()}
    feed = type(feeds)(specs, pair).batch()
    first = _call(model, feed, specs, what, 2)
    # An output fed back as a state has the batch where that state input has it.
    axes = {s.from_output: s.batch_axis or 0 for s in specs if s.from_output}
    for name, out in first:
        if out.ndim == 0 or out.shape[min(axes.get(name, 0), out.ndim - 1)] != 2:
            where = f" (output {name!r})" if len(first) > 1 else ""
            raise UsageError(f"{what} returns outputs of shape {list(out.shape)}{where} for a "
                             "batch of 2 samples: the first axis of every output must be the "
                             "batch; make forward work for any batch size (no hard-coded 1 in "
                             "reshape/view)")
    again = _call(model, feed, specs, what, 2)
    for (_, a_t), (_, b_t) in zip(first, again, strict=True):
        a, b = a_t.float().numpy(), b_t.float().numpy()
        both = np.isfinite(a) & np.isfinite(b)
        delta = float(np.abs(a - b)[both].max()) if both.any() else 0.0
        if delta > 1e-4 * (1 + float(np.abs(a[both]).max() if both.any() else 0)) or (
                np.isfinite(a) != np.isfinite(b)).any():
            raise UsageError(f"{what} gives different outputs for the same input twice in "
                             f"eval mode (max |Δ| {delta:.3g}): remove randomness from forward "
                             "in eval() (noise, torch.randn, F.dropout(training=True))")
    if finite:
        for split_name in ("test", "calibration"):
            split = getattr(data, split_name)
            if len(split) == 0:
                continue
            for name, out in zip([n for n, _ in first],
                                 model_outputs(model, data.feeds(split), 64, [
                                     OutputSpec(n, batch_axis=axes.get(n, 0))
                                     for n, _ in first]), strict=True):
                bad = ~np.isfinite(out.astype(np.float64)).reshape(len(split), -1).all(1)
                if bad.any():
                    where = f" {name!r}" if len(first) > 1 else ""
                    raise UsageError(f"{what}'s outputs{where} on data.{split_name} are not "
                                     f"finite (NaN or inf in {int(bad.sum())} of {len(split)} "
                                     "samples): check the weights (NaN in the file?) and the "
                                     "preprocessing")
    names = [n for n, _ in first]
    if len(names) == 1:
        names = ["logits"]  # the one output's name in every artifact (from_torch.OUTPUT_NAME)
    return names, [[1 if i == axes.get(n, 0) else int(v) for i, v in enumerate(out.shape)]
                   for n, out in first]
