"""``report.md``: the build report as Markdown that reads well as a GitHub Actions step
summary. One function per section, in page order; numbers go through :mod:`.format`, so
they read as they do in ``report.html`` and the command line's summary. The compression
sections (pruning, quantization) are in :mod:`.markdown_compression`, which takes their
wording and cells from :mod:`.compression`, as ``report.html`` does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgekd.report import compression, search, shipping
from edgekd.report import format as fmt
from edgekd.report.format import md, md_code
from edgekd.report.gate import BROKEN, HELD, OFF_TARGET, check_state, verdict
from edgekd.report.markdown_compression import pruning_lines, quantization_lines

Lines = list[str]


def _title(report: dict[str, Any]) -> Lines:
    """Title, target, the headline (what the build bought against the teacher), the budget
    verdict and the flags: what a reader must see first."""
    lines = [f"# edgekd build: {md_code(report['target'])}", "",
             md(report['target_description']), "", *_headline(report)]
    budget = report.get("budget")
    if budget:
        lines += [_budget_verdict(budget), ""]
    lines += [f"> ⚠️ {md(flag)}" for flag in report.get("flags", [])]
    return [*lines, ""] if report.get("flags") else lines


def _headline(report: dict[str, Any]) -> Lines:
    rows = compression.headline_rows(report)
    if not rows:
        return []
    head = compression.HEADLINE_HEAD
    return ["## Deployed student vs teacher", "", md(compression.HEADLINE_LEAD), "",
            "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(compression.headline_cells(r, md)) + " |" for r in rows], "",
            *[f"- {md(r.get('detail'))}" for r in rows], ""]


def _models(report: dict[str, Any]) -> Lines:
    """The data, every model stage, and what compression and distillation bought."""
    data, inp = report["dataset"], report["input"]
    splits = data["splits"]
    lines = [f"Data: {md(data['name'])} — train {md(splits['train'])}, test "
             f"{md(splits['test'])}, calibration {md(splits['calibration'])} (seed "
             f"{md(data['seed'])}). Input {md_code(inp['shape'])} {md(inp['dtype'])}, "
             + ("fed as stored (integers are never preprocessed)."
                if str(inp["dtype"]).startswith(("int", "uint", "bool")) else
                f"{md_code(inp['preprocessing']['formula'])}."),
             "", "## Models", "",
             "| stage | params | non-zero | test accuracy |", "|---|---:|---:|---:|"]
    lines += [f"| {md(s['name'])} | {fmt.count(s['params'])} | {fmt.count(s['nonzero_params'])} | "
              f"{_stage_figure(s)} |" for s in report["stages"]]
    kd_lines = [f"- {md(s['name'])}: distilled layer by layer from the teacher (student layer "
              f"<- teacher layer {md_code(t.get('layer_map'))}, hidden states weight "
              f"{md(t.get('hidden_weight'))}, attention {md(t.get('attention_loss'))} weight "
              f"{md(t.get('attention_weight'))}, output {md(t.get('output_loss'))})."
              for s in report["stages"] if isinstance(t := s.get("transformer"), dict)]
    lines += ["", *kd_lines] if kd_lines else []
    if not report["stages"]:
        lines.append(f"| (finished model: {md(report.get('model', {}).get('onnx', 'ONNX'))}) "
                     "| | | |")
    summary = report.get("summary", {})
    lines.append("")
    if "compression" in summary:
        lines.append(f"- Compression: the student has **{fmt.fold(summary['compression'])} "
                     "fewer parameters** than the teacher.")
    if "distillation_gain_points" in summary:
        lines.append(f"- Distillation: {fmt.percent(summary['distilled_accuracy'])} vs "
                     f"{fmt.percent(summary['scratch_accuracy'])} from scratch "
                     f"(**{fmt.points(summary['distillation_gain_points'])} points**).")
    lines += [f"- ⚠️ {md(s['warning'])}" for s in report["stages"] if s.get("warning")]
    ins = report.get("inputs", [])
    if len(ins) > 1 or any(i["role"] != "data" or i["dtype"] != "float32" for i in ins):
        lines += ["", "| input | shape | dtype | role | fed as |", "|---|---|---|---|---|"]
        lines += [f"| {md_code(i['name'])} | {md_code(i['shape'])} | {md(i['dtype'])} | "
                  f"{md(i['role'])} | {md(i.get('preprocessing', ''))} |" for i in ins]
    return lines


def _artifacts(report: dict[str, Any]) -> Lines:
    """Each shipped file, checked against the model it came from."""
    lines = [
        "", "## Artifacts", "",
        "Each artifact is compared with the model it came from on the whole test split: top-1 "
        "agreement for classifiers; for every model the worst sample's cosine similarity and "
        "relative error (‖Δ‖ / ‖reference‖).", "",
        "| file | runtime | precision | size KiB | gzip KiB | accuracy | agreement | "
        "min cosine | max rel. error | max abs Δ |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {md_code(a['path'])} | {md(a['runtime'])} "
              f"{md(fmt.version(a['runtime_version']))} | "
              f"{md(a['precision'])} | {fmt.kib(a['size_bytes'])} | "
              f"{fmt.kib(a.get('size_gzip_bytes'))} | {fmt.percent(a['accuracy'])} | "
              f"{fmt.percent(a['top1_agreement'])} | {fmt.cosine(a.get('cosine_min'))} | "
              f"{fmt.error(a.get('max_rel_error'))} | {fmt.error(a.get('max_abs_diff'))} |"
              for a in report["artifacts"]]
    lines += ["", "To run one on the device: `README.md` beside this report says which files to "
              "copy and what to install; `run_<runtime>.py` prints its prediction for one input."]
    return [*lines, "", *_outputs(report)]


def _outputs(report: dict[str, Any]) -> Lines:
    """Every output of every artifact on its own (what the build's verification gates), and
    the stream check of a stateful model."""
    rows = [(a["path"], "test split", o) for a in report["artifacts"] for o in a.get("outputs", [])]
    rows += [(a["path"], f"stream of {a['stream']['chunks']}, last chunk", o)
             for a in report["artifacts"] if a.get("stream") for o in a["stream"]["last"]]
    if not rows or (len(report.get("outputs", [])) < 2 and not any(
            a.get("stream") for a in report["artifacts"])):
        return []
    lines = [
        "### Every output", "",
        "Each output against the same output of the model: the largest error over that "
        "output's range on the test set, its 99th percentile, the worst cosine (outputs of 8 "
        "or more elements), top-1 agreement (classifier outputs) and decision agreement "
        "(outputs with a threshold).", "",
        "| file | on | output | max abs Δ | err / range | p99 | min cosine | top-1 | decisions |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += [f"| {md_code(path)} | {md(on)} | {md_code(o['name'])} | "
              f"{fmt.error(o.get('max_abs_error'))} | {fmt.percent(o.get('rel_error'))} | "
              f"{fmt.percent(o.get('rel_error_p99'))} | {fmt.cosine(o.get('cosine_min'))} | "
              f"{fmt.percent(o.get('top1_agreement'))} | "
              f"{fmt.percent(o.get('decision_agreement'))} |" for path, on, o in rows]
    return [*lines, ""]


# How each robustness figure reads: (title, cell format, gap column applies)
ROBUSTNESS_METRICS = {
    "accuracy": ("test accuracy", fmt.percent),
    "agreement": ("top-1 agreement with each model's own clean predictions", fmt.percent),
    "rmse": ("RMSE against the labels", fmt.error),
    "relative_deviation": ("deviation from each model's own clean outputs, relative to their "
                           "norm", fmt.error),
}


def _robustness(report: dict[str, Any]) -> Lines:
    """A figure per corruption and model, the distilled-minus-scratch gap, and the finding;
    or why robustness was not measured."""
    rob = report.get("robustness")
    if not rob:
        return []
    if "skipped" in rob:
        return ["", "## Robustness under input corruptions", "",
                f"Not measured: {md(rob['skipped'])}."]
    metric = rob.get("metric", "accuracy")
    title, cell = ROBUSTNESS_METRICS.get(metric, (metric, fmt.number))
    models = rob["models"]
    gap = any("distilled_minus_scratch_points" in c for c in rob["conditions"])
    several = len({c.get("input") for c in rob["conditions"]} - {None}) > 1
    lines = ["", f"## Robustness: {md(title)} under input corruptions", "",
             "| condition | " + ("input | " if several else "")
             + " | ".join(md_code(m) if "." in m else md(m) for m in models)
             + (" | distilled − scratch |" if gap else " |"),
             "|---|" + ("---|" if several else "") + "---:|" * (len(models) + gap)]
    for c in rob["conditions"]:
        cells = [cell(c[metric].get(m)) for m in models]
        if gap:
            cells.append(fmt.points(c.get("distilled_minus_scratch_points")))
        where = [md(f"{c['input']} ({c['kind']})" if c.get("input") else "all clean")] \
            if several else []
        lines.append(f"| {md(c['name'])} | " + " | ".join(where + cells) + " |")
    units = rob.get("units") or rob.get("pixel_units", "")
    lines += ["", f"Corruptions in {md(units)}; seed {md(rob['seed'])}, {md(rob['samples'])} "
              "test samples, the same corrupted inputs for every model; `.onnx`/`.xml`/"
              "`.tflite` columns are the shipped INT8 artifacts (the pruned student), run in "
              "their runtime."]
    lines += [f"Not corrupted: {md(why)}." for why in rob.get("not_corrupted", [])]
    if "summary" in rob:
        lines += ["", f"**{md(rob['summary']['finding'])}**"]
    return lines


def _latency_row(name: str, where: str, m: dict[str, Any], size: Any) -> str:
    lat, mem = m["latency_ms"], m["memory"]
    return (f"| {md_code(name)} | {md(where)} | {md(m.get('threads', ''))} | "
            f"{fmt.latency(lat['p50'])} ({fmt.latency_range(lat['p50_ci95'])}) | "
            f"{fmt.latency(lat['p95'])} | {fmt.latency(lat['p99'])} | "
            f"{fmt.latency(lat['mean'])} ± {fmt.latency(lat['std'])} | "
            f"{fmt.mib(mem['peak_rss_mb'])} | "
            f"{fmt.mib(mem.get('model_rss_mb'))} | {fmt.kib(size)} |")


def _latency(report: dict[str, Any]) -> Lines:
    """Every measurement (this host and each device), and how it was measured."""
    lines = ["", "## Latency and memory (MiB)", "",
             "| file | where | threads | p50 (95 % CI) | p95 | p99 | mean ± std | peak RSS | "
             "model RSS | file KiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for a in report["artifacts"] + report.get("references", []):
        if "latency_ms" in a:
            lines.append(_latency_row(a["path"], "this host", a, a["size_bytes"]))
        for r in a.get("remote", []):
            dev = r.get("device", {})
            where = f"{r['remote']} ({dev.get('model') or dev.get('cpu', '?')})"
            lines.append(_latency_row(a["path"], where, r, a["size_bytes"]))
    b = report["bench"]
    return [*lines, "",
            f"Each artifact in its own process: {md(b['warmup'])} warm-up runs, then at least "
            f"{md(b['runs'])} timed runs and {fmt.limit(b.get('seconds', 0))} s; batch "
            f"{md(b['batch'])}; {md(b['threads'])} thread(s) here (the target asks for "
            f"{md(b['target_threads'])}; remote "
            "devices use the target's count). Timed: one inference call with inputs already "
            "bound. **peak RSS**: the process's high-water mark (Python + NumPy + runtime + "
            "model). **model RSS**: resident memory after importing the runtime, loading the "
            "model and one inference, minus the empty interpreter's (runtime libraries + model "
            "+ arena). `reference/dense_fp32.*` is the distilled student before pruning, "
            "`reference/teacher_fp32.*` the teacher.", ""]


def _payoff(report: dict[str, Any]) -> Lines:
    if not report.get("payoff"):
        return []
    return ["## Does each step pay off?", "",
            *[f"- {'⚠️ ' if r['verdict'] == 'slower' else ''}{md(r['detail'])}"
              for r in report["payoff"]], ""]


def _placement(report: dict[str, Any]) -> Lines:
    """Which nodes did not run as intended (float kernels in an INT8 model, fallbacks)."""
    lines = ["## What ran where", ""]
    for a in report["artifacts"]:
        p = a.get("placement") or {}
        off = p.get("not_as_intended") or []
        if "error" in p:
            lines.append(f"- {md_code(a['path'])}: could not inspect ({md(p['error'])})")
        elif off:
            lines.append(f"- {md_code(a['path'])}: {len(off)} of {md(p['nodes'])} node(s) not "
                         "as intended: " + ", ".join(
                             f"{md(n['op'])} {md_code(n['node'])} ({md(n['ran'])})"
                             for n in off[:12]))
        elif p:
            lines.append(f"- {md_code(a['path'])}: all {md(p['nodes'])} node(s) as intended "
                         f"({'INT8' if p['quantized'] else 'float'}; {md(p['how'])})")
    return [*lines, ""]


_BUDGET_MARKS = {HELD: "✅", BROKEN: "❌", OFF_TARGET: "⚠️ not on target"}


def _budget_verdict(budget: dict[str, Any]) -> str:
    """The bold verdict under the title: a figure measured on a machine that is not the
    target's is counted apart, never as holding."""
    checks = budget["checks"]
    states = {check_state(c) for c in checks}
    mark = "❌" if BROKEN in states else "⚠️" if OFF_TARGET in states else "✅"
    return (f"**Budgets: {mark} {md(verdict(checks))}** ({len(checks)} checks, "
            f"{md(budget['source'])})")


def _budgets(report: dict[str, Any]) -> Lines:
    budget = report.get("budget")
    if not budget:
        return []
    return ["## Budgets", "", "| budget | artifact | measured | limit | margin | measured on | |",
            "|---|---|---:|---:|---:|---|---|",
            *[f"| {md(c['budget'])} | {md_code(c['subject'])} | {fmt.number(c['measured'])} "
              f"{md(c['unit'])} | "
              f"{fmt.limit(c['limit'])} | {fmt.signed(c['margin'])} | "
              f"{md(c.get('measured_on', ''))} | {_BUDGET_MARKS[check_state(c)]} |"
              for c in budget["checks"]], ""]


def _nulls(report: dict[str, Any]) -> Lines:
    """Values the build could not measure as finite numbers, so the tables show "–"."""
    notes = report.get("nulls") or []
    if not notes:
        return []
    return ["## Values written as null", "",
            *[f"- {md_code(n['field'])}: {md(n['why'])}" for n in notes], ""]


def _search(report: dict[str, Any]) -> Lines:
    section = report.get("search")
    return search.markdown_lines(section) if isinstance(section, dict) else []


def render_markdown(build_report: Mapping[str, Any]) -> str:
    """The build report as Markdown that reads well as a GitHub Actions step summary."""
    report = dict(build_report)
    sections = (_title, _models, _artifacts, pruning_lines, quantization_lines, _robustness,
                _latency, _payoff, shipping.markdown_lines, _placement, _budgets, _search,
                _nulls)
    lines: Lines = []
    for line in (line for section in sections for line in section(report)):
        if line or (lines and lines[-1]):  # sections pad themselves: one blank line between
            lines.append(line)
    lines += [f"Built in {fmt.seconds(report['build_seconds'])} on "
              f"{md(report['host']['machine'])} ({md(report['host']['cpus'])} CPUs).", ""]
    return "\n".join(lines)


def _stage_figure(stage: dict[str, Any]) -> str:
    """A stage's test accuracy, or for a model that is not a classifier its mean cosine
    with the teacher's outputs on the test split."""
    if stage.get("accuracy") is None and stage.get("teacher_cosine") is not None:
        return f"cosine with the teacher {stage['teacher_cosine']:.4f}"
    return fmt.percent(stage.get("accuracy"))
