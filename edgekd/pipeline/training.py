"""The training stages of a build: teacher -> student from scratch (the baseline) ->
distilled student -> pruned + fine-tuned student, each cached in the stage cache
(:mod:`edgekd.train.stage_cache`) by a hash of everything that went into it.

A stage's key chains the key of the stage it starts from, so a changed setting re-runs that
stage and the ones after it, and nothing before.

Every stage trains with ``[train] threads`` intra-op threads, reports its epochs to the
caller's ``on_epoch`` (the CLI's progress bar), and warns when its test accuracy is within
:data:`CHANCE_MARGIN` of chance.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from edgekd.compress import prune as pruning
from edgekd.compress.structured import prune_channels
from edgekd.errors import UsageError
from edgekd.inputs.dataset import Dataset, InputSpec, Split
from edgekd.pipeline.stage_notes import (
    detail,
    embedding_errors,
    figure,
    near_chance,
    transformer_layers,
    worse_than_scratch,
)
from edgekd.settings.config import BuildConfig, DistillConfig, TrainConfig
from edgekd.train.augment import SoftTargets, training_views
from edgekd.train.distill import Distillation, LayerPair, configured_pairs
from edgekd.train.inference import Batch, example, logits_of, model_input
from edgekd.train.loop import (
    EpochReport,
    Schedule,
    accuracy,
    reporting_epochs,
    set_seed,
    train,
    training_threads,
)
from edgekd.train.stage_cache import StageCache, digest, stage_entry
from edgekd.train.teacher_cache import teacher_outputs
from edgekd.train.transformer_kd import (
    TransformerDistillation,
    find_encoder,
    transformer_objective,
)

log = logging.getLogger(__name__)

Factory = Callable[[], nn.Module]  # a fresh, untrained (or pre-loaded) model
EpochCallback = Callable[[str, EpochReport], None]  # (stage name, its epoch's figures)
# A stage whose test accuracy is below chance (1 / classes) + this margin has learned
# (next to) nothing: it is logged as a warning and noted in the stage's report entry.
def _schedule(c: TrainConfig | DistillConfig, images: bool) -> Schedule:
    """A stage's :class:`Schedule`; shifts and flips only for image data."""
    return Schedule(c.epochs, c.lr, c.batch_size, weight_decay=c.weight_decay,
                    optimizer=c.optimizer, warmup=c.warmup,
                    label_smoothing=getattr(c, "label_smoothing", 0.0),
                    shift=c.shift if images else 0.0, flip=c.flip and images)


def _images(data: Dataset) -> bool:
    """Whether the samples are images (NCHW), where shifts and flips keep the class."""
    return data.preprocessing.layout == "NCHW" and data.train.x.ndim == 4


@dataclass(frozen=True)
class Trained:
    """What the training stages hand to quantization and export."""

    stages: list[dict[str, Any]]
    teacher: nn.Module
    scratch: nn.Module | None
    distilled: nn.Module
    student: nn.Module  # pruned and fine-tuned: the model that is deployed
    key: str  # the pruned stage's cache key: identifies the deployed model


def _teacher(make: Factory, trains: bool, data: Dataset, config: BuildConfig,
             cache: StageCache, key: str) -> tuple[nn.Module, dict[str, Any]]:
    set_seed(config.seed)  # before the weights are initialised: the same seed, the same teacher
    model = make()
    if not trains:  # the user's trained teacher
        return model.eval(), {"cached": False, "trained": False}
    if cache.load("teacher", key, model) is not None:
        return model.eval(), {"cached": True, "trained": True}
    train(model, data.train, _schedule(config.teacher, _images(data)), seed=config.seed,
          specs=data.inputs)
    cache.save("teacher", key, model, {})
    return model.eval(), {"cached": False, "trained": True}


@dataclass
class _Run:
    """What every training stage reads, and the report rows they append to."""

    data: Dataset
    config: BuildConfig
    cache: StageCache
    step: Callable[[str], Any]
    base: str  # the data's digest and the seed: the root of every stage key
    split: Split  # what the students train on: the training split plus augmented views
    soft_labels: Any  # labels of the augmented views (mixed), or None
    threads: int = 1  # intra-op threads the stages train with
    student_key: str = ""  # what identifies the student: part of its stages' keys
    stages: list[dict[str, Any]] = field(default_factory=list)
    # A model that is not a labeled classifier (a sentence encoder) is judged by the mean
    # cosine of its outputs with the teacher's on the test split, not by accuracy.
    teacher_out: Any = None

    @property
    def classifier(self) -> bool:
        return self.data.num_classes is not None and self.data.test.y is not None

    def cosine(self, model: nn.Module) -> float:
        import torch.nn.functional as F

        out = logits_of(model, model_input(self.data.test, self.data.inputs)).flatten(1)
        teacher = self.teacher_out
        if out.shape[1] != teacher.shape[1]:  # a width the projection bridged in training
            return float("nan")
        return round(float(F.cosine_similarity(out, teacher, dim=1).mean()), 6)

    def entry(self, name: str, model: nn.Module, **extra: Any) -> dict[str, Any]:
        """The stage's report entry, appended: test accuracy, the threads it trained with
        (when it trained here) and a warning when it is near chance."""
        acc = (accuracy(model, self.data.test, self.data.inputs) if self.classifier
               else None)
        if not self.classifier and self.teacher_out is not None and name != "teacher":
            extra["teacher_cosine"] = self.cosine(model)
        if not extra.get("cached", True) and extra.get("trained", True):
            extra["threads"] = self.threads
        warning = near_chance(name, acc, self.data.num_classes)
        if warning:
            log.warning("%s", warning)
            extra["warning"] = warning
        self.stages.append(stage_entry(name, model, acc, **extra))
        return self.stages[-1]

    def record(self, name: str, model: nn.Module, cached: bool, s: dict[str, str],
               **extra: Any) -> None:
        self.entry(name, model, cached=cached, **extra)
        s["detail"] = detail(self.stages[-1])


def _reporting(step: Callable[[str], Any], on_epoch: EpochCallback | None
               ) -> Callable[[str], Any]:
    """``step`` whose context also sends the epochs of whatever trains inside it to
    ``on_epoch``, under the step's name (the pruning fine-tune included)."""
    @contextlib.contextmanager
    def stage(name: str) -> Iterator[Any]:
        hook = (lambda report: on_epoch(name, report)) if on_epoch else None
        with step(name) as s, reporting_epochs(hook):
            yield s
    return stage


class _Objectives:
    """The distillation objective for a student; the teacher's outputs are computed (or
    read from their cache) only when a stage actually has to train."""

    def __init__(self, run: _Run, teacher: nn.Module, pairs: list[LayerPair],
                 cache_dir: Path) -> None:
        self.run, self.teacher, self.pairs, self.cache_dir = run, teacher, pairs, cache_dir
        self.example = example(model_input(run.data.train, run.data.inputs))
        self.outputs: Any = None

    def __call__(self, model: nn.Module) -> Distillation | TransformerDistillation:
        run, d = self.run, self.run.config.distill
        try:  # both models transformers encoders: TinyBERT / MiniLM distillation
            kd = transformer_objective(
                model, self.teacher, run.split, d, specs=run.data.inputs,
                task="classification" if run.data.num_classes is not None else "embedding")
        except ValueError as exc:  # a layer_map or relation_heads that does not fit them
            raise UsageError(f"distill: {exc}") from exc
        if kd is not None:
            return kd
        if self.outputs is None:
            with run.step("teacher outputs") as s:
                self.outputs, hit = teacher_outputs(
                    self.teacher, model_input(run.split, run.data.inputs),
                    [p.teacher for p in self.pairs],
                    self.cache_dir, fresh=run.cache.fresh)
                s["detail"] = (f"{len(run.split)} samples, logits + {len(self.pairs)} "
                               "layer(s), memory-mapped" + (" (cached)" if hit else ""))
        try:
            return Distillation(model, self.outputs, self.pairs, self.example,
                                temperature=d.temperature, alpha=d.alpha,
                                feature_weight=d.feature_weight,
                                attention_weight=d.attention_weight)
        except ValueError as exc:  # a pair whose features cannot be compared
            raise UsageError(f"distill.pairs: {exc}") from exc


def run_training(*, teacher: Factory, student: Factory, teacher_trains: bool,
                 teacher_key: str, data: Dataset, config: BuildConfig, cache: StageCache,
                 cache_dir: Path, step: Callable[[str], Any],
                 on_epoch: EpochCallback | None = None, student_key: str = "",
                 derive: Callable[[nn.Module], nn.Module] | None = None) -> Trained:
    """Teacher -> student from scratch (the baseline) -> distilled -> pruned + fine-tuned.

    ``teacher_key`` identifies the teacher (its factory and weights, or what trains it),
    ``student_key`` the student (its factory's code and arguments, or the object's class and
    weights): a changed ``models.py`` must not reuse the stages trained from the old one;
    ``step(name)`` is the caller's progress context (a dict whose ``detail`` it fills);
    ``on_epoch(stage, report)`` hears every epoch of every stage that trains. Training runs
    with ``config.train.threads`` threads (0 = automatic); the previous count is restored.
    """
    with training_threads(config.train.threads) as threads, embedding_errors(data):
        return _run_training(teacher=teacher, student=student, teacher_trains=teacher_trains,
                             teacher_key=teacher_key, data=data, config=config, cache=cache,
                             cache_dir=cache_dir, step=_reporting(step, on_epoch),
                             threads=threads, student_key=student_key, derive=derive)


def _run_training(*, teacher: Factory, student: Factory, teacher_trains: bool,
                  teacher_key: str, data: Dataset, config: BuildConfig, cache: StageCache,
                  cache_dir: Path, step: Callable[[str], Any], threads: int,
                  student_key: str, derive: Callable[[nn.Module], nn.Module] | None
                  ) -> Trained:
    if len(data.train) == 0:
        raise UsageError("distillation needs training samples: set data.train")
    classifier, labeled = data.num_classes is not None, data.train.y is not None
    if not (classifier and labeled) and teacher_trains:
        raise UsageError("the teacher would train on labels, and "
                         + ("data.train has none" if classifier else "this model is not a "
                            "classifier") + ": give a trained teacher (model.teacher_weights, "
                         "or a Hugging Face folder) whose outputs the student learns, or "
                         "labeled data of a classifier")
    d = config.distill
    if d.views and not classifier:
        raise UsageError(f"distill.views = {d.views}: augmented views mix class labels, and "
                         "this model is not a classifier: set distill.views = 0")
    if d.views and data.several_inputs:
        raise UsageError(f"distill.views = {d.views}: augmented views (shifts and mixup) are "
                         "made of one image input, and this model is fed "
                         f"{', '.join(f'{s.name} ({s.dtype})' for s in data.input_specs)} "
                         "(a mixup of token ids means nothing): set distill.views = 0")
    # Scratch and distilled students train on the same inputs: the training split, plus
    # augmented views when asked (their labels mixed for scratch, the teacher's for KD).
    split, soft_labels = data.train, None
    if data.num_classes is not None and labeled:
        split, soft_labels = training_views(data.train, d.views, mixup=d.mixup,
                                            num_classes=data.num_classes, seed=config.seed)
    run = _Run(data, config, cache, step, digest("data", data.fingerprint(), config.seed),
               split, soft_labels, threads, student_key)
    teacher_model, t_key = _teacher_stage(run, teacher, teacher_trains, teacher_key)
    if derive is not None:  # the student is made from the teacher just trained or loaded
        student = functools.partial(derive, teacher_model)
        run.student_key = digest("derived", student_key, t_key)
    transformers = find_encoder(student()) is not None and find_encoder(teacher_model) is not None
    if not classifier:
        if not transformers:
            raise UsageError("distilling a model that is not a classifier needs a teacher and "
                             "a student that are both transformers encoders (embedding "
                             "distillation: the student learns the teacher's output vectors); "
                             "give a trained student without a teacher to deploy this model")
        run.teacher_out = logits_of(teacher_model,
                                    model_input(data.test, data.inputs)).flatten(1)
    # The scratch baseline learns from labels: none to learn from without them.
    scratch = (_scratch_stage(run, student) if config.baseline and classifier and labeled
               else None)
    # A transformer pair is distilled layer by layer from its configs (transformer_kd), not
    # through the CNN feature pairs.
    pairs = ([] if transformers else configured_pairs(
        d, student(), teacher_model, example(model_input(data.train, data.inputs))))
    objectives = _Objectives(run, teacher_model, pairs, cache_dir)
    distilled, kd_key = _distilled_stage(run, student, t_key, objectives)
    pruned, key = _pruned_stage(run, distilled, kd_key, objectives)
    return Trained(run.stages, teacher_model, scratch, distilled, pruned, key)


def _teacher_stage(run: _Run, make: Factory, trains: bool, teacher_key: str
                   ) -> tuple[nn.Module, str]:
    with run.step("teacher") as s:
        key = digest("teacher", teacher_key, run.base, asdict(run.config.teacher))
        model, info = _teacher(make, trains, run.data, run.config, run.cache, key)
        s["detail"] = detail(run.entry("teacher", model, **info))
    return model, key


def _scratch_stage(run: _Run, student: Factory) -> nn.Module:
    """The student trained on labels alone: the baseline distillation is measured against."""
    st, d, seed = run.config.student, run.config.distill, run.config.seed
    with run.step("student_scratch") as s:
        key = digest("scratch", run.base, run.student_key, asdict(st), d.views, d.mixup)
        set_seed(seed)
        scratch = student()
        hit = run.cache.load("student_scratch", key, scratch) is not None
        if not hit:
            train(scratch, run.split, _schedule(st, _images(run.data)), seed=seed,
                  objective=SoftTargets(run.soft_labels) if d.views else None,
                  specs=run.data.inputs)
            run.cache.save("student_scratch", key, scratch, {})
        run.record("student_scratch", scratch.eval(), hit, s)
    return scratch


def _distilled_stage(run: _Run, student: Factory, t_key: str, objectives: _Objectives
                     ) -> tuple[nn.Module, str]:
    d, pairs = run.config.distill, objectives.pairs
    key = digest("distilled", t_key, run.base, run.student_key, asdict(d),
                 [(p.student, p.teacher) for p in pairs])
    with run.step("student_distilled") as s:
        set_seed(run.config.seed)
        distilled = student()
        hit = run.cache.load("student_distilled", key, distilled) is not None
        if not hit:
            kd = objectives(distilled)
            train(distilled, run.split, _schedule(d, _images(run.data)),
                  seed=run.config.seed, objective=kd, specs=run.data.inputs)
            kd.close()
            run.cache.save("student_distilled", key, distilled, {})
        layers = transformer_layers(distilled, objectives.teacher, d,
                                     run.data.num_classes is not None)
        note = ({"transformer": layers} if layers else
                {"note": "logits only: no automatic layer pairs (the models share no 1-D or "
                         "2-D feature-map resolution, the build log says why); name them in "
                         "distill.pairs for feature and attention terms"}
                if not pairs and (d.feature_weight or d.attention_weight) else {})
        run.record("student_distilled", distilled.eval(), hit, s, temperature=d.temperature,
                   alpha=d.alpha, feature_weight=d.feature_weight,
                   attention_weight=d.attention_weight,
                   pairs=[[p.student, p.teacher] for p in pairs], views=d.views, **note)
        worse_than_scratch(run.stages, bool(layers))
    return distilled, key


def _pruned_stage(run: _Run, distilled: nn.Module, kd_key: str, objectives: _Objectives
                  ) -> tuple[nn.Module, str]:
    p = run.config.prune
    with run.step("student_pruned") as s:
        key = digest("pruned", pruning.VERSION, kd_key, asdict(p), run.config.seed)
        pruned, info, hit = _pruned(distilled, p, run.data.train, objectives, key, run.cache,
                                    seed=run.config.seed + 1,
                                    batch_size=run.config.distill.batch_size,
                                    example=example(model_input(run.data.test,
                                                                run.data.inputs)),
                                    specs=run.data.inputs)
        short = pruning.shortfall(info)  # measured in the weights, compared with the setting
        if short:
            log.warning("%s", short)
            info["sparsity_warning"] = short
        run.record("student_pruned", pruned, hit, s, **info)
        if p.method == "structured":
            amount = (f"{1 - run.stages[-1]['params'] / max(info['params_before'], 1):.1%} "
                      "of parameters removed")
        else:  # both figures counted in the final weights, not taken from prune.sparsity
            amount = (f"{info['weight_sparsity']:.1%} of conv/linear weights zero, "
                      f"{info['param_sparsity']:.1%} of all parameters")
        s["detail"] = (f"{figure(run.stages[-1])}, {p.method} {p.schedule}, {amount}"
                       + (" (cached)" if hit else ""))
    return pruned, key


def _pruned(distilled: nn.Module, p: Any, train_split: Split,
            objective_for: Callable[[nn.Module], Distillation | TransformerDistillation],
            key: str, cache: StageCache,
            *, seed: int, batch_size: int, example: Batch, specs: tuple[InputSpec, ...]
            ) -> tuple[nn.Module, dict[str, Any], bool]:
    # Structured pruning changes the layers' shapes: rebuild them by removing the same
    # channels from the distilled weights (deterministic, L1 norms), then load the entry.
    shell = (prune_channels(distilled, example, p.sparsity) if p.method == "structured"
             else copy.deepcopy(distilled))
    meta = cache.load("student_pruned", key, shell)
    if meta is not None:  # the figures are counted again in the weights just loaded
        return shell.eval(), {**meta, **pruning.measure(distilled, shell)}, True
    pruned, info = pruning.prune_model(distilled, p, train_split, objective_for=objective_for,
                                       example=example, seed=seed, batch_size=batch_size,
                                       specs=specs)
    cache.save("student_pruned", key, pruned, info)
    return pruned, info, False


