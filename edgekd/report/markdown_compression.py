"""The compression sections of ``report.md``, in page order: how the student was pruned
(:func:`pruning_lines`) and how the INT8 model was made and what it gave in each runtime
(:func:`quantization_lines`). Their wording and cells come from :mod:`.compression`, as
``report.html``'s do; numbers go through :mod:`.format`."""

from __future__ import annotations

from typing import Any

from edgekd.measure.payoff import reference
from edgekd.report import compression
from edgekd.report import format as fmt
from edgekd.report.format import md, md_code

Lines = list[str]


def pruning_lines(report: dict[str, Any]) -> Lines:
    """How the student was pruned and fine-tuned, what it cost in accuracy and removed,
    per-layer sparsity (or channel counts), and the dense vs pruned FP32 files."""
    stages = {s["name"]: s for s in report["stages"]}
    stage: dict[str, Any] = stages.get("student_pruned", {})
    if "layers" not in stage:
        return [] if report["stages"] else [
            "## Pruning", "", "Not applied: a finished model is quantized and exported as given "
            "(`prune.*` applies to a student edgekd trains).", ""]
    structured = stage["method"] == "structured"
    lines = [f"## Pruning: {md(stage['method'])}, {md(stage['schedule'])}, target "
             f"{fmt.share(stage['target_sparsity'])} of {'channels' if structured else 'weights'}",
             "", md(compression.pruning_effect(stage, stages.get("student_distilled", {}))), "",
             *_measured_sparsity(stage),
             "| " + " | ".join(compression.layer_head(structured)) + " |",
             "|---|---|" + ("---:|" if structured else "") + "---|---:|---:|---:|"]
    lines += ["| " + " | ".join(compression.layer_cells(r, structured, md, md_code)) + " |"
              for r in stage["layers"]]
    lines += ["", *_left_dense(stage), *_dense_vs_pruned(report)]
    if stage["method"] == "unstructured":
        lines.append("\n**Unstructured sparsity gives no speed-up on ONNX Runtime, OpenVINO or "
                     "LiteRT**: the zeroed weights keep their dense shapes and run through the "
                     "same dense kernels; what it buys is a smaller compressed (gzip) file. "
                     "A latency difference measured between these same-shaped files comes "
                     "from the machine, not from pruning. `prune.method = \"structured\"` removes "
                     "channels instead.")
    else:
        lines.append(f"\nChannels were removed: {fmt.count(stage['macs_before'])} → "
                     f"{fmt.count(stage['macs_after'])} multiply-adds per sample.")
    return [*lines, ""]


def _measured_sparsity(stage: dict[str, Any]) -> Lines:
    """The totals, counted in the pruned student's weights (not the setting)."""
    if "param_sparsity" not in stage:
        return []
    lines = [f"Measured in the final weights: {fmt.fine_share(stage.get('weight_sparsity'))} "
             f"of the pruned layers' weights are zero ({fmt.count(stage.get('zero_weights'))} "
             f"of {fmt.count(stage.get('pruned_weights'))}), "
             f"{fmt.fine_share(stage['param_sparsity'])} of all parameters "
             f"({fmt.count(stage.get('params'))}; {fmt.count(stage.get('params_before'))} "
             "before pruning).", ""]
    if stage.get("sparsity_warning"):
        lines += [f"⚠️ {md(stage['sparsity_warning'])}", ""]
    return lines


def _left_dense(stage: dict[str, Any]) -> Lines:
    """The layers pruning did not touch, grouped by kind and reason."""
    rows = (stage.get("kept_whole") if stage.get("method") == "structured"
            else stage.get("skipped")) or []
    if not rows:
        return []
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["type"], r["reason"]), []).append(r)
    head = ("Layers that kept every channel:" if stage.get("method") == "structured"
            else "Layers left dense:")
    lines = [head, ""]
    for (kind, reason), members in groups.items():
        names = ", ".join(md_code(r["layer"] or "(model)") for r in members[:6])
        more = f" and {len(members) - 6} more" if len(members) > 6 else ""
        params = sum(r.get("params", 0) for r in members)
        size = f", {fmt.count(params)} params" if params else ""
        lines.append(f"- {len(members)} × {md(kind)} ({names}{more}{size}): {md(reason)}")
    return [*lines, ""]


def _dense_vs_pruned(report: dict[str, Any]) -> Lines:
    """One line per runtime: the dense reference file (the distilled student before pruning,
    never the teacher) against the pruned FP32 artifact."""
    pruned = {a["runtime"]: a for a in report["artifacts"] if a["precision"] == "fp32"}
    speed = {r["runtime"]: r for r in report.get("payoff", [])
             if r["step"] == "pruning" and r["where"] == "host"}
    refs = report.get("references", [])
    lines = []
    for runtime, a in pruned.items():
        dense = reference(refs, runtime, "dense")
        if not dense or "latency_ms" not in a or "latency_ms" not in dense:
            continue
        verdict = speed.get(dense["runtime"], {}).get("verdict", "not compared")
        lines.append(
            f"- {md(dense['runtime'])}: {md_code('reference/' + str(dense['path']))} → "
            f"{md_code(a['path'])}: file "
            f"{fmt.kib(dense['size_bytes'])} → {fmt.kib(a['size_bytes'])} KiB, gzip "
            f"{fmt.kib(dense['size_gzip_bytes'])} → {fmt.kib(a['size_gzip_bytes'])} KiB, "
            f"p50 {fmt.latency(dense['latency_ms']['p50'])} → "
            f"{fmt.latency(a['latency_ms']['p50'])} "
            f"({md(verdict)})")
    return lines


def quantization_lines(report: dict[str, Any]) -> Lines:
    """How the INT8 model was made (calibration, settings, the mixed-precision search), who
    quantized for each runtime, and what INT8 gave in each."""
    q = report.get("quantization")
    if not q:
        return []
    splits = report["dataset"].get("splits", {})
    on = "validation" if "validation" in splits else "calibration"
    kind = "dynamic" if q.get("recipe") == "dynamic" else "static"
    lines = [f"## Quantization: {kind} INT8", "",
             compression.how_int8_was_made(report, md, md_code), ""]
    recipe = compression.recipe_line(q)
    lines += [md(recipe), ""] if recipe else []
    steps = q.get("steps") or []
    if q.get("fp32_accuracy") is None or not steps:
        lines += ["Not checked against an accuracy budget (no labelled split, or "
                  "`quant.max_accuracy_drop` unset): every quantizable layer is INT8.", ""]
    elif len(steps) == 1 and not q.get("float_layers"):
        first = steps[0].get("accuracy")
        lines += [f"Accuracy check on the {on} split: FP32 {fmt.percent(q['fp32_accuracy'])}, "
                  f"every quantizable layer in INT8 {fmt.percent(first)} "
                  f"({fmt.points(compression.drop_points(first, q['fp32_accuracy']))} points):"
                  " within the accuracy budget, so no mixed-precision search was needed and no "
                  "layer is kept in float.", ""]
    else:
        lines += [f"Mixed-precision search on the {on} split (FP32 "
                  f"{fmt.percent(q['fp32_accuracy'])}): layers are kept in float, the most "
                  "helpful first, until INT8 is within the accuracy budget.", "",
                  "| " + " | ".join(compression.SEARCH_HEAD) + " |", "|---:|---|---:|---:|"]
        lines += ["| " + " | ".join(compression.search_cells(i, st, q["fp32_accuracy"],
                                                              md_code)) + " |"
                  for i, st in enumerate(steps)]
        kept = q.get("float_layers") or []
        lines += ["", f"Excluded from INT8 (kept in float): "
                      f"{', '.join(map(md_code, kept)) if kept else 'none'}; INT8 "
                      f"{fmt.percent(q.get('int8_accuracy'))}.", ""]
    rows = compression.int8_outcomes(report)
    if rows:
        lines += ["What INT8 gave in each runtime (accuracy on the test split, p50 on this host; "
                  "speed-up per machine from the payoff rows):", "",
                  "| " + " | ".join(compression.INT8_HEAD).replace("quant.*", "`quant.*`") + " |",
                  "|---|---|---|---:|---:|---:|---|---|"]
        lines += ["| " + " | ".join(compression.int8_cells(r, md)) + " |" for r in rows]
    return [*lines, ""]
