"""What the training stages' report entries say beyond their figures: a stage near chance,
a distilled student well below the scratch one, the layer map a transformer pair was
distilled with, each stage's line in the progress display, and the one line for token ids
an embedding cannot look up."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from torch import nn

from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset
from edgekd.settings.config import DistillConfig
from edgekd.train.transformer_kd import find_encoder, layer_map

log = logging.getLogger("edgekd.pipeline.training")


CHANCE_MARGIN = 0.05


def near_chance(stage: str, acc: float | None, num_classes: int | None) -> str | None:
    """The warning for a stage at (or near) chance accuracy; None when it learned."""
    if acc is None or not num_classes or num_classes < 2:
        return None
    chance = 1.0 / num_classes
    if acc >= chance + CHANCE_MARGIN:
        return None
    return (f"{stage}: test accuracy {acc:.1%} is within {100 * CHANCE_MARGIN:.0f} points of "
            f"chance ({chance:.1%} for {num_classes} classes): it learned (next to) nothing; "
            "try more epochs or another lr, and check that the labels match the samples and "
            "the preprocessing (data.scale, data.mean, data.std) suits the model")


def figure(entry: dict[str, Any]) -> str:
    """A stage's accuracy, or for a model that is not a classifier its cosine with the
    teacher."""
    if entry.get("accuracy") is not None:
        return f"{entry['accuracy']:.2%}"
    if entry.get("teacher_cosine") is not None:
        return f"cosine with the teacher {entry['teacher_cosine']:.4f}"
    return "trained" if entry.get("trained", True) else "given (its weights loaded)"


def detail(entry: dict[str, Any]) -> str:
    """A stage's line in the progress display: its accuracy (or cosine with the teacher),
    cached, near chance."""
    return (figure(entry) + (" (cached)" if entry.get("cached") else "")
            + (" — near chance, see the warning" if entry.get("warning") else ""))


# Points below the scratch student at which distillation is reported as having hurt.
WORSE_THAN_SCRATCH = 5.0


def worse_than_scratch(stages: list[dict[str, Any]], transformer: bool) -> None:
    """A warning (log and the stage's ``warning``) when the distilled student is well below
    the one trained on labels alone: on a short schedule the layer terms of a transformer
    pair can slow the task down (a user's BERT student: 57.5 % distilled, 99.2 % scratch)."""
    by_name = {e["name"]: e for e in stages}
    scratch, kd = by_name.get("student_scratch"), by_name.get("student_distilled")
    if not scratch or not kd or scratch["accuracy"] is None or kd["accuracy"] is None:
        return
    gap = 100 * (scratch["accuracy"] - kd["accuracy"])
    if gap < WORSE_THAN_SCRATCH or kd.get("warning"):
        return
    fix = ("more distill.epochs, or distill.hidden_weight = 0 and "
           "distill.transformer_attention_weight = 0 (logits only) for a short schedule"
           if transformer else "more distill.epochs, a lower distill.alpha (more weight on "
           "the labels), or a better teacher")
    kd["warning"] = (f"student_distilled is {gap:.1f} points below the student trained from "
                     f"scratch ({kd['accuracy']:.2%} vs {scratch['accuracy']:.2%}): "
                     f"distillation hurt here; try {fix}")
    log.warning("%s", kd["warning"])


def transformer_layers(student: nn.Module, teacher: nn.Module, d: DistillConfig,
                       classifier: bool) -> dict[str, Any] | None:
    """What a transformer pair was distilled with (the report's ``transformer``), else
    None."""
    s, t = find_encoder(student), find_encoder(teacher)
    if s is None or t is None:
        return None
    return {"layer_map": [list(p) for p in layer_map(s.depth, t.depth, d.layer_map)],
            "hidden_weight": d.hidden_weight, "attention_loss": d.attention_loss,
            "attention_weight": d.transformer_attention_weight,
            "output_loss": "logits (KD)" if classifier else d.embedding_loss,
            "student_layers": s.depth, "teacher_layers": t.depth}


@contextlib.contextmanager
def embedding_errors(data: Dataset) -> Iterator[None]:
    """An embedding lookup the data cannot feed (token ids outside the vocabulary, ids
    stored as floats) is one line naming the inputs and their values, not torch's trace."""
    try:
        yield
    except (IndexError, RuntimeError) as exc:
        text = str(exc)
        ints = {s.name: [a for a in (data.train.extra.get(s.name), data.test.extra.get(s.name))
                         if a is not None] for s in data.input_specs
                if s.dtype.startswith("int") and s.kind != "mask"}
        if "index out of range in self" in text and ints:
            spans = ", ".join(f"{n} {min(int(a.min()) for a in v)}..{max(int(a.max()) for a in v)}"
                              for n, v in ints.items() if v)
            raise UsageError(f"the model's embedding cannot look up the data's ids ({spans}): "
                             "keep token ids from 0 to the vocabulary size - 1 (tokenize "
                             "with the model's own tokenizer, or raise vocab_size)") from exc
        if "'indices'" in text and "Float" in text:
            floats = [s.name for s in data.input_specs if not s.dtype.startswith("int")]
            raise UsageError(f"the model looks up embeddings with {', '.join(floats) or 'an input'}"
                             ", stored as floats: store token ids as integers (np.int64)") from exc
        raise
