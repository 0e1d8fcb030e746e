"""What ``report.md`` and ``report.html`` both say about compression, worded once: how the
INT8 model was made (:func:`how_int8_was_made`, :func:`quant_settings`, :func:`search_cells`),
what INT8 gave in each runtime (:func:`int8_outcomes`, :func:`int8_cells`), what pruning
cost and removed (:func:`pruning_effect`, :func:`layer_cells`), and what the whole build
bought against the teacher (:func:`headline_rows`, :func:`headline_cells`).

Each function returns plain text, or takes the page's escapers (``text`` for words, ``code``
for names: :func:`~.format.md` and :func:`~.format.md_code` in Markdown, ``html.escape`` in
the page), so both pages read the same. Every key may be missing, as in ``report.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from edgekd.report import format as fmt

Escape = Callable[[Any], str]


def _obj(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


# -- the headline: deployed student vs teacher ----------------------------------------------------

HEADLINE_HEAD = ("runtime", "device", "accuracy Δ (points)", "size ×", "p50 speed-up ×",
                 "peak RSS ×")
HEADLINE_LEAD = ("The deployed student against the teacher's FP32 in the same runtime and "
                 "machine; × is teacher / student (above 1: the student is smaller, faster, "
                 "lighter).")


def headline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of ``report.json``'s ``headline`` (none without a teacher)."""
    return [r for r in _obj(report.get("headline")).get("rows") or [] if isinstance(r, dict)]


def headline_cells(row: dict[str, Any], text: Escape) -> list[str]:
    """One headline row as table cells (:data:`HEADLINE_HEAD`); the speed-up with its 95 %
    interval where it was measured paired."""
    ci = row.get("speedup_ci95")
    speed = fmt.times(row.get("speedup_p50"))
    if isinstance(ci, list) and len(ci) == 2 and None not in ci:
        speed += f" ({fmt.times(ci[0])}–{fmt.times(ci[1])})"
    return [text(row.get("runtime")), text(row.get("where")),
            fmt.points(row.get("accuracy_delta_points")), fmt.times(row.get("size_ratio")),
            speed, fmt.times(row.get("peak_rss_ratio"))]


# -- quantization ------------------------------------------------------------------------------

def kept_variant(report: dict[str, Any], path: Any) -> dict[str, Any]:
    """The INT8 variant that replaced the build's own INT8 file ``path`` (its entry in the
    artifact's ``int8_choice["tried"]``: name and ``settings``); {} when the build's own
    file is the one in the build."""
    art = next((a for a in report.get("artifacts") or [] if isinstance(a, dict)
                and a.get("path") == path), {})
    choice = _obj(art.get("int8_choice"))
    return next((t for t in choice.get("tried") or [] if isinstance(t, dict) and t.get("kept")
                 and t.get("name") not in (None, "build")
                 and isinstance(t.get("settings"), dict)), {})


def how_int8_was_made(report: dict[str, Any], text: Escape, code: Escape) -> str:
    """The section's first sentences: the tool, the calibration and the settings the file in
    the build was made with (a kept variant's, where one replaced the build's INT8)."""
    q = _obj(report.get("quantization"))
    splits = _obj(_obj(report.get("dataset")).get("splits"))
    variant = kept_variant(report, q.get("path"))
    form = _obj(variant.get("settings")).get("format", "QDQ")
    replaced = (f" It is INT8 variant {code(variant.get('name'))}, which replaced the model made "
                "with the build's own settings (see What ships)." if variant else "")
    if q.get("recipe") == "dynamic" and not variant:  # no calibration: ranges at run time
        return (f"{code(q.get('path'))}: ONNX Runtime's {code('quantize_dynamic')} "
                "(MatMulInteger: INT8 weights, activations quantized at run time from each "
                "input's own range, no calibration)"
                + (", taken from the cache of an earlier build" if q.get("cached") else "")
                + f". {text(quant_settings(q, {}))}")
    return (f"{code(q.get('path'))}: ONNX Runtime's {code('quantize_static')} ({text(form)}), "
            f"activation ranges calibrated with {code(q.get('method'))} on the calibration split "
            f"({text(splits.get('calibration', '?'))} samples)"
            + (", taken from the cache of an earlier build" if q.get("cached") else "")
            + f".{replaced} {text(quant_settings(q, _obj(variant.get('settings'))))}")


def recipe_line(q: dict[str, Any]) -> str:
    """"INT8 recipe: <recipe> (<why>); shipped FP32 only: <runtimes>", from the report's
    quantization fields (schema 1.4); "" for a report without a recipe."""
    recipe = q.get("recipe")
    if not recipe:
        return ""
    reason = q.get("recipe_reason")
    fp32_only = [str(r) for r in q.get("skip_int8") or []]
    return (f"INT8 recipe: {recipe}" + (f" ({reason})" if reason else "")
            + (f"; shipped FP32 only: {', '.join(fp32_only)}" if fp32_only else "") + ".")


def quant_settings(q: dict[str, Any], variant: dict[str, Any] | None = None) -> str:
    """The ``quant.*`` values this INT8 model was made with, when the report records them
    (``quantization.settings``, report schema 1.2; older reports point to manifest.json);
    ``variant``: the settings of a kept INT8 variant, which override the build's."""
    s = {**_obj(q.get("settings")), **(variant or {})}
    if not s:
        return ("Per-channel weights, activation and weight types, 7-bit weights "
                "(reduce_range), equalisation and the accuracy budget are the build's quant.* "
                "settings, in manifest.json (config.quant).")
    parts = [f"{'per-channel' if s.get('per_channel') else 'per-tensor'} weights",
             f"{s.get('activation_type', '?')} activations, {s.get('weight_type', '?')} weights"
             + (" (7-bit: reduce_range)" if s.get("reduce_range") else "")]
    if s.get("op_types") == "layers":
        parts.append("only the conv/linear layers quantized")
    if q.get("method") == "percentile" and "percentile" in s:
        parts.append(f"percentile {s['percentile']}")
    parts.append("cross-layer equalisation" if s.get("equalize") else "no equalisation")
    if "calibration_samples" in s:
        parts.append(f"{s['calibration_samples']} calibration samples")
    budget = s.get("max_accuracy_drop")
    parts.append("no accuracy budget" if budget is None and "max_accuracy_drop" in s
                 else f"accuracy budget {budget} points" if budget is not None else "")
    return "Settings: " + ", ".join(p for p in parts if p) + "."


def drop_points(acc: Any, fp32: Any) -> float | None:
    """INT8 minus FP32 accuracy in points (``None`` when either is missing)."""
    a, b = fmt.real(acc), fmt.real(fp32)
    return None if a is None or b is None else round(100 * (a - b), 4)


def int8_outcomes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per runtime that quantized or shipped INT8: who made it (``by_runtime``), its FP32 and
    INT8 artifacts and the INT8 payoff rows (this host, each device)."""
    q = _obj(report.get("quantization"))
    by_runtime = _obj(q.get("by_runtime"))
    arts = [a for a in report.get("artifacts") or [] if isinstance(a, dict)]
    pay = [p for p in report.get("payoff") or [] if isinstance(p, dict) and p.get("step") == "int8"]
    runtimes = dict.fromkeys([*by_runtime, *(a.get("runtime") for a in arts
                                             if a.get("precision") == "int8")])
    rows = []
    for rt in runtimes:
        def file(precision: str, rt: Any = rt) -> dict[str, Any]:
            return next((a for a in arts if a.get("runtime") == rt
                         and a.get("precision") == precision), {})
        int8 = file("int8")
        made = _obj(by_runtime.get(str(rt)))
        variant = kept_variant(report, int8.get("path"))
        if variant:  # the file in the build is the variant, not what by_runtime describes
            form = _obj(variant.get("settings")).get("format", "QDQ")
            made = {**made, "tool": f"ONNX Runtime quantize_static ({form}), variant "
                                    f"{variant.get('name')}"}
        rows.append({"runtime": rt, "made": made, "fp32": file("fp32"), "int8": int8,
                     "payoff": [p for p in pay if p.get("candidate") == int8.get("path")]})
    return rows


SEARCH_HEAD = ("step", "kept in float", "INT8 accuracy", "vs FP32 (points)")


def search_cells(i: int, step: dict[str, Any], fp32: Any, code: Escape) -> list[str]:
    """Step ``i`` of the mixed-precision search as table cells (:data:`SEARCH_HEAD`): the
    layers kept in float, INT8 accuracy, and its drop from FP32 in points."""
    kept = ", ".join(code(n) for n in step.get("float_layers") or []) or "none"
    return [str(i), kept, fmt.percent(step.get("accuracy")),
            fmt.points(drop_points(step.get("accuracy"), fp32))]


INT8_HEAD = ("runtime", "INT8 made by", "when", "accuracy FP32 → INT8", "KiB FP32 → INT8",
             "p50 FP32 → INT8", "speed-up", "quant.* settings it ignores")


def _p50(artifact: dict[str, Any]) -> Any:
    return _obj(artifact.get("latency_ms")).get("p50")


def int8_cells(row: dict[str, Any], text: Escape) -> list[str]:
    """One :func:`int8_outcomes` row as table cells (:data:`INT8_HEAD`): accuracy, size and
    p50 FP32 → INT8, the speed-up on each machine (``1.06× faster (host)``), and the settings
    the runtime's quantizer ignores."""
    f32, i8, made = row["fp32"], row["int8"], row["made"]
    speedups = "; ".join(f"{_speed(p)} ({p.get('where', 'host')})" for p in row["payoff"])
    return [text(row["runtime"]), text(made.get("tool")), text(made.get("when")),
            f"{fmt.percent(f32.get('accuracy'))} → {fmt.percent(i8.get('accuracy'))}",
            f"{fmt.kib(f32.get('size_bytes'))} → {fmt.kib(i8.get('size_bytes'))}",
            f"{fmt.latency(_p50(f32))} → {fmt.latency(_p50(i8))}",
            text(speedups or fmt.MISSING),
            text(", ".join(map(str, made.get("ignored") or [])) or ("none" if made else None))]


def _speed(p: dict[str, Any]) -> str:
    """A payoff row's speed-up in the words of its verdict: ``1.48× slower``, never
    ``0.67× slower``."""
    s, verdict = fmt.real(p.get("speedup")), p.get("verdict")
    if s is None or s <= 0:
        return fmt.MISSING
    if verdict == "slower":
        return f"{fmt.times(1 / s)} slower"
    if verdict == "faster":
        return f"{fmt.times(s)} faster"
    if verdict == "no measurable change":
        return f"no measurable change ({fmt.times(s)})"
    return f"{fmt.times(s)} {verdict or ''}".strip()


# -- pruning -----------------------------------------------------------------------------------

def pruning_effect(stage: dict[str, Any], distilled: dict[str, Any]) -> str:
    """Accuracy and non-zero parameters before pruning (the distilled student) and after
    pruning and the fine-tune, and how the masks were set: one sentence, plain text."""
    how = ("masks raised to the target along a cubic ramp during the fine-tune"
           + (f", updated {stage['mask_updates']} times" if "mask_updates" in stage else "")
           if stage.get("schedule") == "gradual" else
           "pruned once, then fine-tuned" if stage.get("method") == "structured" else
           "masks set once before the fine-tune")
    before, after = fmt.real(distilled.get("accuracy")), fmt.real(stage.get("accuracy"))
    delta = None if before is None or after is None else round(100 * (after - before), 4)
    return (f"Test accuracy {fmt.percent(before)} before pruning (student_distilled) → "
            f"{fmt.percent(after)} after pruning and fine-tuning (student_pruned), "
            f"{fmt.points(delta)} points; non-zero parameters "
            f"{fmt.count(distilled.get('nonzero_params'))} → "
            f"{fmt.count(stage.get('nonzero_params'))}, parameters "
            f"{fmt.count(stage.get('params_before', distilled.get('params')))} → "
            f"{fmt.count(stage.get('params'))}; {how}.")


def channels(row: dict[str, Any]) -> str:
    """A layer's output channels (units) before → after: the first weight dimension."""
    before, after = row.get("before"), row.get("after")
    if not isinstance(before, list) or not isinstance(after, list) or not before or not after:
        return fmt.MISSING
    return f"{fmt.count(before[0])} → {fmt.count(after[0])}"


def layer_head(structured: bool) -> list[str]:
    return ["layer", "type", *(["channels before → after"] if structured else []),
            "weight shape before → after", "weights", "zero", "zero %"]


def layer_cells(row: dict[str, Any], structured: bool, text: Escape, code: Escape) -> list[str]:
    """One layer of the pruned student as table cells (:func:`layer_head`), counted in its
    final weights."""
    return [code(row.get("layer")),
            text(row.get("type")) + ("" if row.get("pruned", True) else " (not pruned)"),
            *([channels(row)] if structured else []),
            f"{fmt.shape(row.get('before'))} → {fmt.shape(row.get('after'))}",
            fmt.count(row.get("params")), fmt.count(row.get("zeros")),
            fmt.fine_share(row.get("zero_fraction"))]
