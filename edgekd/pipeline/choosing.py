"""The ``choose`` step of a deploy (after ``verify``, before ``measure``): which artifact of
each runtime ships, and an INT8 that pays off where one can be found.

For each runtime with an INT8 and an FP32 artifact, INT8 is timed against FP32 *paired*
(both files in one worker, alternating rounds: :func:`edgekd.measure.bench.run_pair`, the
verdict of :func:`edgekd.measure.payoff.paired_speedup`). On ONNX Runtime, when the build's
INT8 is not "faster", ORT's known alternatives (:mod:`edgekd.compress.variants`) are made,
each verified on the test split (the verify limits, and within ``quant.max_accuracy_drop``
of FP32's accuracy) and timed against FP32 the same way; the fastest that holds accuracy
replaces ``student_int8.onnx`` (its report entry is updated: size, sha256, verification).

Then the ``ship`` policy (the project's, else the target's) decides: ``int8`` ships INT8
even when slower, ``smallest`` ships INT8, ``fastest`` ships FP32 only when the paired
verdict says INT8 is slower ("no measurable change" keeps INT8: it is smaller). Every
artifact entry gets ``"shipped"``; each INT8 entry gets ``"int8_choice"``: the policy, what
was tried with its figures, what ships and why (``why``: sentences, each starting with a
capital). Where the target is a device of another architecture than this host, this host's
figure is not the device's: it decides nothing (no variants, ``fastest`` keeps INT8), but
where the measure step times the pair for the payoff rows anyway (a build with references)
it is timed here, shown as this host's figure and reused there, so that "What ships" and the
payoff row never disagree.
"""

from __future__ import annotations

import logging
import platform
import shutil
from dataclasses import dataclass, field, replace
from typing import Any

from edgekd.compress.variants import Variant, build_settings, make_variants
from edgekd.errors import VerificationError
from edgekd.measure.bench import PairSpec, run_pair
from edgekd.measure.payoff import PAIRED, paired_speedup
from edgekd.measure.verify import Limits, Verification, require_outputs, verify_artifact
from edgekd.pipeline.deploy import Artifact, Deploy, Verified, output_specs
from edgekd.pipeline.measuring import bench_spec
from edgekd.pipeline.verifying import describe
from edgekd.settings.targets import canonical_machine

log = logging.getLogger(__name__)

# Seconds of alternating rounds per paired timing: enough rounds for a verdict on a
# millisecond model, short enough that trying every variant adds seconds to a build.
PAIR_SECONDS = 0.6
BUILD_INT8 = "build"  # the name of the build's own INT8 model among what was tried


@dataclass
class Tried:
    """One INT8 file of a runtime and how it fared against FP32."""

    name: str
    settings: dict[str, Any]
    size_bytes: int
    accuracy: float | None = None
    timing: dict[str, Any] = field(default_factory=dict)  # paired_speedup's result
    kept: bool = False
    why: str = ""

    @property
    def speedup(self) -> float:
        return float(self.timing.get("speedup", float("nan")))

    @property
    def verdict(self) -> str:
        return str(self.timing.get("verdict", "not timed"))

    def to_dict(self) -> dict[str, Any]:
        t = self.timing
        return {"name": self.name, "settings": self.settings, "size_bytes": self.size_bytes,
                "accuracy": self.accuracy,
                "speedup": round(self.speedup, 3) if t else None,
                "speedup_ci95": [round(v, 3) for v in t["speedup_ci95"]] if t else None,
                "rounds": t.get("rounds"), "verdict": self.verdict,
                "kept": self.kept, "why": self.why}


def policy_of(ctx: Deploy) -> tuple[str, str]:
    """(policy, where it came from)."""
    if ctx.config.ship is not None:
        return ctx.config.ship, "project"
    return ctx.target.ship, f"target {ctx.target.name}"


def choose(ctx: Deploy, verified: Verified) -> Verified:
    """Mark what ships per runtime (``"shipped"``), trying ONNX Runtime's INT8 variants
    where the build's INT8 is not faster than FP32; see the module docstring."""
    for runtime in ctx.target.runtimes:
        entries = [e for e in verified.entries if e["runtime"] == runtime]
        by_prec = {e["precision"]: e for e in entries}
        int8, fp32 = by_prec.get("int8"), by_prec.get("fp32")
        shipped = "int8" if int8 is not None else entries[0]["precision"] if entries else ""
        if int8 is not None and fp32 is not None:
            section = _choose_runtime(ctx, verified, runtime, fp32, int8)
            int8["int8_choice"] = section
            shipped = section["shipped_precision"]
        for e in entries:
            e["shipped"] = e["precision"] == shipped
    return verified


def _foreign(ctx: Deploy) -> str | None:
    """This host's architecture where the target is a device of another one."""
    here = canonical_machine(platform.machine())
    return here if ctx.target.machine and ctx.target.machine != here else None


def _choose_runtime(ctx: Deploy, verified: Verified, runtime: str, fp32: dict[str, Any],
                    int8: dict[str, Any]) -> dict[str, Any]:
    policy, source = policy_of(ctx)
    tensorrt = "TensorrtExecutionProvider" in ctx.target.providers
    recipe = verified.exported.quantized.quantized.recipe
    own = Tried(BUILD_INT8, build_settings(ctx.config.quant, tensorrt=tensorrt, recipe=recipe)
                if runtime == "onnxruntime" else {"quantizer": runtime},
                int(int8["size_bytes"]), int8.get("accuracy"))
    tried = [own]
    here = _foreign(ctx)
    if here is not None or policy == "fp32" or (runtime != "onnxruntime"
                                                 and policy != "fastest"):
        # The timing does not decide here; where the measure step would time this pair for
        # the payoff rows anyway (references), it is timed now and reused there, so that
        # "What ships" and the payoff row show the same figure.
        if verified.references:
            result = _pair(ctx, fp32, int8)
            own.timing = {**paired_speedup(result), "result": result}
            int8.setdefault(PAIRED, {})[fp32["path"]] = result
        own.kept = True
        own.why = (f"this host's figure ({here}), not the target's ({ctx.target.machine}): "
                   "it does not decide what ships" if here is not None else
                   f"ship = \"{policy}\" ships {'FP32' if policy == 'fp32' else 'INT8'} "
                   "whatever the timing")
    else:
        result = _pair(ctx, fp32, int8)
        own.timing = {**paired_speedup(result), "result": result}
        # TensorRT takes QDQ only, and a GPU's speed is not what the CPU variants change.
        if runtime == "onnxruntime" and own.verdict != "faster" and not ctx.target.needs_gpu:
            tried += _variants(ctx, verified, fp32, int8)
        best = max((t for t in tried if t.timing and not t.why), key=lambda t: t.speedup)
        for t in tried:
            if t.timing and not t.why:
                t.why = "fastest that holds accuracy" if t is best else \
                    f"slower than {best.name}"
        best.kept = True
        if best is not own:
            _replace(ctx, int8, best, verified)
        if verified.references and best.timing.get("result"):
            # measuring.py's "compare" step can reuse this instead of timing the pair again
            int8.setdefault(PAIRED, {})[fp32["path"]] = best.timing["result"]
    kept = next(t for t in tried if t.kept)
    shipped, why = _decide(policy, kept, fp32, int8, here)
    if source != "project" and ctx.target.ship_reason:
        why += f" (target {ctx.target.name}: {ctx.target.ship_reason})"
    return {"runtime": runtime, "policy": policy, "policy_from": source,
            "tried": [t.to_dict() for t in tried], "int8": kept.name,
            "shipped": int8["path"] if shipped == "int8" else fp32["path"],
            "shipped_precision": shipped, "why": why}


def _pair(ctx: Deploy, base: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any]:
    with ctx.step(f"time {cand['path']} against {base['path']}") as s:
        spec = PairSpec(bench_spec(ctx, base, ctx.threads), bench_spec(ctx, cand, ctx.threads),
                        seconds=PAIR_SECONDS)
        result = run_pair(spec)
        p = paired_speedup(result)
        s["detail"] = f"{p['speedup']:.2f}× ({p['verdict']}, {p['rounds']} rounds)"
    return result


def _variants(ctx: Deploy, verified: Verified, fp32: dict[str, Any],
              int8: dict[str, Any]) -> list[Tried]:
    """ONNX Runtime's INT8 alternatives, each verified then timed against FP32."""
    data = ctx.inputs.data
    if any(s.role == "state" for s in data.input_specs):
        return []  # a stream's drift check belongs to verify: keep the verified INT8
    q = verified.exported.quantized
    with ctx.step("INT8 variants onnxruntime") as s:
        made = make_variants(q.onnx["fp32"], ctx.work / "variants", q.calibration,
                             ctx.config.quant, float_layers=q.quantized.float_layers,
                             tensorrt="TensorrtExecutionProvider" in ctx.target.providers,
                             recipe=q.quantized.recipe)
        s["detail"] = ", ".join(v.name for v in made)
    out = []
    for v in made:
        t = Tried(v.name, v.settings, v.path.stat().st_size)
        with ctx.step(f"try {v.name}") as s:
            try:
                check = _verify(ctx, verified, v)
            except VerificationError as exc:
                what = str(exc).split(";")[0].split("reference model: ")[-1]
                t.why = f"rejected: fails verification ({what})"
            else:
                t.accuracy = check.accuracy
                t.why = _accuracy_loss(ctx, fp32, check)
                if not t.why:
                    spec = PairSpec(bench_spec(ctx, fp32, ctx.threads),
                                    replace(bench_spec(ctx, int8, ctx.threads),
                                            artifact=v.path), seconds=PAIR_SECONDS)
                    result = run_pair(spec)
                    t.timing = {**paired_speedup(result), "result": result}
            s["detail"] = t.why or f"{t.speedup:.2f}× ({t.verdict})"
        out.append(t)
        if t.verdict == "faster":  # one that pays off: each further try costs seconds
            break
    return out


def _verify(ctx: Deploy, verified: Verified, v: Variant) -> Verification:
    data = ctx.inputs.data
    check = verify_artifact(v.path, "onnxruntime", threads=ctx.threads,
                            y=data.test.y if ctx.classifier else None,
                            providers=ctx.providers("onnxruntime", "int8"),
                            inputs=data.input_specs, arrays=data.arrays(data.test),
                            references=verified.expected, outputs=output_specs(ctx))
    require_outputs(v.path.name, "onnxruntime", "int8", check.outputs, Limits.of(ctx.config))
    return check


def _accuracy_loss(ctx: Deploy, fp32: dict[str, Any], check: Verification) -> str:
    """Why a variant does not hold accuracy ("" when it does)."""
    budget = ctx.config.quant.max_accuracy_drop
    base = fp32.get("accuracy")
    if budget is None or base is None or check.accuracy is None:
        return ""
    lost = 100 * (base - check.accuracy)
    if lost > budget:
        return (f"rejected: loses {lost:.2f} points of FP32's test accuracy "
                f"(quant.max_accuracy_drop = {budget})")
    return ""


def _replace(ctx: Deploy, int8: dict[str, Any], best: Tried, verified: Verified) -> None:
    """The variant becomes ``student_int8.onnx``; its entry is redescribed and reverified."""
    src = ctx.work / "variants" / f"{best.name}.onnx"
    dst = ctx.stage / int8["path"]
    shutil.copyfile(src, dst)
    check = _verify(ctx, verified, Variant(best.name, best.settings, src))
    int8.update(describe(Artifact("onnxruntime", "int8", dst)))
    int8.update(check.to_dict())
    log.info("INT8 variant %s replaces the build's INT8 (%.2fx vs FP32)", best.name,
             best.speedup)


def _times(speedup: float) -> str:
    return f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"


def _decide(policy: str, kept: Tried, fp32: dict[str, Any], int8: dict[str, Any],
            here: str | None = None) -> tuple[str, str]:
    """(precision that ships, why: sentences that start with a capital). ``here`` is this
    host's architecture where the target's differs: its timing is shown, never decisive."""
    ratio = fp32["size_bytes"] / max(1, int8["size_bytes"])
    smaller = f"{ratio:.2f}× smaller" if ratio >= 1 else f"{1 / ratio:.2f}× larger"
    name = "the build's INT8" if kept.name == BUILD_INT8 else f"INT8 variant {kept.name}"
    on = f"on this host ({here}; not the target's figure, so it does not decide)" if here \
        else "by the paired timing"
    speed = (f"{_times(kept.speedup)} than FP32 {on}" if kept.timing
             and kept.verdict != "no measurable change" else
             f"no measurable speed difference from FP32 {on}" if kept.timing else
             "not timed against FP32")
    if policy == "fp32":
        return "fp32", _capital(f"FP32 ships because ship = \"fp32\"; {name} would be "
                                f"{smaller}, {speed}")
    if policy == "fastest" and kept.verdict == "slower" and here is None:
        return "fp32", _capital(f"FP32 ships: {name} is {_times(kept.speedup)} than FP32 by "
                                "the paired timing, and ship = \"fastest\"")
    if policy == "fastest" and here is not None:
        why = (f"{name} ships: ship = \"fastest\" needs a timing on the target, and this "
               f"host is {here}; {speed}; {smaller}")
    elif policy == "fastest":
        why = (f"{name} ships: {speed}, and {smaller} (ship = \"fastest\" keeps "
               "INT8 unless it is measurably slower)")
    elif policy == "smallest":
        why = f"{name} ships: {smaller} than FP32 (ship = \"smallest\"); {speed}"
    else:
        why = (f"{name} ships because ship = \"int8\"" + (
            f", although it is {speed}" if kept.verdict == "slower" else f"; {speed}")
            + f"; {smaller}")
    return "int8", _capital(why)


def _capital(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]
