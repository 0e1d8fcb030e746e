"""``report.html``: one self-contained page for a build report, with tables and two SVG plots.

Everything the page needs is inside it (inline CSS, inline SVG from :mod:`.plots` and
:mod:`.latency_plot`, a few lines of script), so it can be attached to a CI run or copied off a
device and opened offline. Every key of the report may be missing: a missing value shows as
"–", never as an error. Numbers go through :mod:`.format`, so they read as they do in
``report.md`` and the CLI's summary; the compression sections share their wording with
``report.md`` through :mod:`.compression`.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from edgekd.report import compression, search, shipping
from edgekd.report import format as fmt
from edgekd.report import markdown as md
from edgekd.report.gate import verdict
from edgekd.report.latency_plot import latency_svg
from edgekd.report.plots import accuracy_size_svg, as_dict, dicts, measured

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:12.5px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f2f2f2}td.num{text-align:right;white-space:nowrap}
caption{text-align:left;color:#555;padding-bottom:3px}.wide{overflow-x:auto}
tr.pass td{background:#e8f5e9}tr.fail td{background:#ffebee}
.flag{border-left:5px solid;padding:6px 10px;margin:6px 0}
.flag.red{border-color:#c62828;background:#ffebee}.flag.amber{border-color:#ef8f00;background:#fff8e1}
figure.plot{margin:1em 0}figure.plot svg{max-width:100%;height:auto}
.meta{color:#555}ul{margin:0;padding-left:1.2em}
"""

# Lets a headless browser prove the plots were laid out (`--dump-dom` shows the count).
_SCRIPT = """<script>window.addEventListener("load", function () {
  var svgs = Array.from(document.querySelectorAll("figure.plot svg"));
  document.body.dataset.plotsRendered = String(svgs.filter(function (s) {
    var r = s.getBoundingClientRect(); return r.width > 50 && r.height > 50; }).length);
});</script>"""

_ONE = r"(–|[-+]?[0-9][0-9.,]*(e[-+]?[0-9]+)?( %|%|×)?(–[0-9.e-]+)?)"
_NUMBER = re.compile(rf"^{_ONE}( → {_ONE})?$")  # a number, or a before → after pair
_BAD = ("slower", "fail", "exceed", "over budget", "did not run as intended")


def _e(v: Any) -> str:
    return fmt.MISSING if v is None else html.escape(str(v))


def _table(title: str, head: Sequence[str], rows: list[tuple[str, list[str]]],
           caption: str = "", lead: str = "") -> str:
    """A titled table; cells are already escaped HTML. Nothing at all when there are no rows."""
    if not rows:
        return ""
    cap = f"<caption>{caption}</caption>" if caption else ""
    ths = "".join(f"<th>{h}</th>" for h in head)
    trs = "".join(f'<tr class="{cls}">' + "".join(
        f'<td class="num">{c}</td>' if _NUMBER.match(c) else f"<td>{c}</td>" for c in cells)
        + "</tr>" for cls, cells in rows)
    lead = f"<p>{lead}</p>" if lead else ""  # prose too long for a caption
    return (f'<h2>{title}</h2>{lead}<div class="wide"><table>{cap}<tr>{ths}</tr>{trs}'
            "</table></div>")


def _header(r: dict[str, Any]) -> str:
    host, bench = as_dict(r.get("host")), as_dict(r.get("bench"))
    facts = [f"edgekd {_e(r.get('edgekd_version'))}",
             f"built in {fmt.seconds(r.get('build_seconds'))}",
             f"host {_e(host.get('machine'))}, {_e(host.get('cpus'))} CPUs"]
    facts += [f"{_e(k)} {_e(v)}" for k, v in bench.items() if not isinstance(v, dict | list)]
    return (f"<h1>edgekd build: {_e(r.get('target', 'unknown target'))}</h1>"
            f"<p>{_e(r.get('target_description', ''))}</p>"
            f'<p class="meta">{" · ".join(facts)}</p>{_summary(r)}')


def _summary(r: dict[str, Any]) -> str:
    """What compression and distillation bought, as the CLI and report.md say it."""
    s = as_dict(r.get("summary"))
    parts = []
    if "compression" in s:
        parts.append(f"the student has {fmt.fold(s['compression'])} fewer parameters than "
                     "the teacher")
    if "distillation_gain_points" in s:
        parts.append(f"distillation: {fmt.percent(s.get('distilled_accuracy'))} vs "
                     f"{fmt.percent(s.get('scratch_accuracy'))} from scratch "
                     f"({fmt.points(s['distillation_gain_points'])} points)")
    text = "; ".join(parts)
    return f"<p>{text[:1].upper()}{text[1:]}.</p>" if parts else ""


def _headline(r: dict[str, Any]) -> str:
    """Deployed student vs teacher, per runtime and machine: the first table of the page."""
    rows = [("", compression.headline_cells(h, _e)) for h in compression.headline_rows(r)]
    return ('<section id="headline">'
            + _table("Deployed student vs teacher", compression.HEADLINE_HEAD, rows,
                     lead=_e(compression.HEADLINE_LEAD)) + "</section>") if rows else ""


def _flags(r: dict[str, Any]) -> str:
    flags = [f for f in r.get("flags") or [] if f] if isinstance(r.get("flags"), list) else []
    items = "".join(
        f'<div class="flag {"red" if any(b in str(f).lower() for b in _BAD) else "amber"}">'
        f"{_e(f)}</div>" for f in flags)
    return f'<section id="flags"><h2>Flags</h2>{items}</section>' if flags else ""


def _budget_row(c: dict[str, Any]) -> tuple[str, list[str]]:
    """A check measured on a machine that is not the target's is neither pass nor fail."""
    off = c.get("on_target") is False
    css = "" if off else "pass" if c.get("ok") is True else "fail" if c.get("ok") is False else ""
    result = ("not on target" if off else "pass" if c.get("ok") is True
              else "FAIL" if c.get("ok") is False else "–")
    return (css, [_e(c.get("budget")), _e(c.get("subject")), fmt.number(c.get("measured")),
                  fmt.limit(c.get("limit")), fmt.signed(c.get("margin")), _e(c.get("unit")),
                  _e(c.get("measured_on", "")), result])


def _budget(r: dict[str, Any]) -> str:
    b = as_dict(r.get("budget"))
    checks = dicts(b.get("checks"))
    return _table("Budget", ["budget", "subject", "measured", "limit", "margin", "unit",
                             "measured on", "result"], [_budget_row(c) for c in checks],
                  f"from {_e(b.get('source'))}; {_e(verdict(checks))}")


def _stages(r: dict[str, Any]) -> str:
    rows = [("", [_e(s.get("name")), fmt.count(s.get("params")),
                  fmt.count(s.get("nonzero_params")), fmt.share(s.get("weight_sparsity")),
                  fmt.percent(s.get("accuracy")) if s.get("accuracy") is not None
                  or s.get("teacher_cosine") is None
                  else f"cosine with the teacher {s['teacher_cosine']:.4f}"])
            for s in dicts(r.get("stages"))]
    return _table("Models", ["stage", "params", "non-zero", "weight sparsity", "accuracy"],
                  rows)


def _latency_cells(m: dict[str, Any]) -> list[str]:
    lat, mem = as_dict(m.get("latency_ms")), as_dict(m.get("memory"))
    return ([fmt.latency(lat.get(k)) for k in ("p50", "p95", "p99", "mean", "std")]
            + [fmt.latency_range(lat.get("p50_ci95"))]
            + [fmt.mib(mem.get(k)) for k in ("peak_rss_mb", "model_rss_mb")])


def _runtime(a: dict[str, Any]) -> str:
    version = a.get("runtime_version")
    return _e(a.get("runtime")) + (f" {_e(fmt.version(version))}" if version else "")


def _artifacts(r: dict[str, Any]) -> str:
    rows = []
    for a in measured(r):
        name = _e(a.get("path"))
        rows.append(("", [name, _runtime(a), _e(a.get("precision")), fmt.kib(a.get("size_bytes")),
                          fmt.kib(a.get("size_gzip_bytes")), fmt.percent(a.get("accuracy")),
                          fmt.percent(a.get("top1_agreement")), fmt.cosine(a.get("cosine_min"))]
                     + _latency_cells(a)))
        rows += [("", [f"{name} @ {_e(m.get('remote') or '?')}"] + ["–"] * 7 + _latency_cells(m))
                 for m in dicts(a.get("remote"))]
    head = ["file", "runtime", "precision", "KiB", "gzip KiB", "accuracy", "top-1 agreement",
            "min cosine", "p50", "p95", "p99", "mean", "std", "p50 95% CI", "peak RSS MiB",
            "model RSS MiB"]
    return _table("Artifacts", head, rows)


def _outputs(r: dict[str, Any]) -> str:
    """Every output of every artifact (several outputs, or a stream check)."""
    arts = dicts(r.get("artifacts"))
    if len(dicts(r.get("outputs"))) < 2 and not any(a.get("stream") for a in arts):
        return ""
    rows = []
    for a in arts:
        stream: dict[str, Any] = a["stream"] if isinstance(a.get("stream"), dict) else {}
        for on, checks in (("test split", a.get("outputs")),
                           ("stream, last chunk", stream.get("last"))):
            rows += [("", [_e(a.get("path")), on, _e(o.get("name")),
                           fmt.error(o.get("max_abs_error")), fmt.percent(o.get("rel_error")),
                           fmt.cosine(o.get("cosine_min")), fmt.percent(o.get("top1_agreement")),
                           fmt.percent(o.get("decision_agreement"))]) for o in dicts(checks)]
    head = ["file", "on", "output", "max abs Δ", "error / range", "min cosine", "top-1",
            "decisions"]
    return _table("Every output", head, rows)


def _quantization(r: dict[str, Any]) -> str:
    """How the INT8 model was made, the mixed-precision search, and what INT8 gave in each
    runtime: the same rows as ``report.md``'s quantization section."""
    q = as_dict(r.get("quantization"))
    if not q:
        return ""
    splits = as_dict(as_dict(r.get("dataset")).get("splits"))
    kind = "dynamic" if q.get("recipe") == "dynamic" else "static"
    intro = f"<h2>Quantization: {kind} INT8</h2><p>{compression.how_int8_was_made(r, _e, _e)}</p>"
    recipe = compression.recipe_line(q)
    intro += f"<p>{_e(recipe)}</p>" if recipe else ""
    fp32 = q.get("fp32_accuracy")
    steps = [("", compression.search_cells(i, s, fp32, _e))
             for i, s in enumerate(dicts(q.get("steps")))]
    on = "validation" if "validation" in splits else "calibration"
    kept = ", ".join(map(str, q.get("float_layers") or [])) or "none"
    search = _table("Quantization: accuracy check and mixed-precision search",
                    compression.SEARCH_HEAD, steps, f"on the {on} split, FP32 {fmt.percent(fp32)}",
                    lead="Step 0 has every quantizable layer in INT8; while INT8 loses more than "
                         "the accuracy budget, layers are kept in float, the most helpful first. "
                         f"Excluded from INT8 (kept in float): {_e(kept)}.")
    head = [h + " (this host)" if h.startswith("p50") else h for h in compression.INT8_HEAD]
    made = _table("Quantization: who made each runtime's INT8 model, and what it gave", head,
                  [("", compression.int8_cells(o, _e)) for o in compression.int8_outcomes(r)],
                  "accuracy on the test split; speed-up per machine from the payoff rows")
    return intro + search + made


def _pruning(r: dict[str, Any]) -> str:
    """The pruned student: accuracy before and after, its layers counted in its final
    weights (output channels too when channels were removed), and what stayed dense."""
    stages = {s.get("name"): s for s in dicts(r.get("stages"))}
    stage = stages.get("student_pruned", {})
    if not stage:
        return ("<h2>Pruning</h2><p>Not applied: a finished model is quantized and exported "
                "as given.</p>" if dicts(r.get("artifacts")) and not stages else "")
    structured = stage.get("method") == "structured"
    rows = [("", compression.layer_cells(x, structured, _e, _e))
            for x in dicts(stage.get("layers"))]
    lead = (f"{_e(stage.get('method'))} {_e(stage.get('schedule'))}, target "
            f"{fmt.share(stage.get('target_sparsity'))}. "
            f"{_e(compression.pruning_effect(stage, as_dict(stages.get('student_distilled'))))}")
    caption = (f"measured in the final weights: "
               f"{fmt.fine_share(stage.get('weight_sparsity'))} of the pruned layers' weights "
               f"zero, {fmt.fine_share(stage.get('param_sparsity'))} of all parameters")
    if stage.get("sparsity_warning"):
        caption += f"<br>⚠ {_e(stage['sparsity_warning'])}"
    dense = (stage.get("kept_whole") if structured else stage.get("skipped"))
    left = [("", [_e(x.get("layer")), _e(x.get("type")), fmt.count(x.get("params")),
                  _e(x.get("reason"))]) for x in dicts(dense)]
    return (_table("Pruning: layers", compression.layer_head(structured), rows, caption, lead)
            + _table("Pruning: layers left whole", ["layer", "type", "params", "why"], left))


def _payoff(r: dict[str, Any]) -> str:
    rows = [("fail" if p.get("verdict") == "slower" else
             "pass" if p.get("verdict") == "faster" else "",
             [_e(p.get("runtime")), _e(p.get("where", "host")), _e(p.get("step")),
              _e(p.get("baseline")), _e(p.get("candidate")), fmt.times(p.get("speedup")),
              fmt.times(p.get("size_ratio")), _e(p.get("verdict")), _e(p.get("detail"))])
            for p in dicts(r.get("payoff"))]
    return _table("Does each step pay off?", ["runtime", "where", "step", "baseline",
                  "candidate", "speedup", "size ratio", "verdict", "detail"], rows)


def _placement(r: dict[str, Any]) -> str:
    rows = []
    for a in measured(r):
        p = as_dict(a.get("placement"))
        odd = dicts(p.get("not_as_intended"))
        ran = ("not recorded" if not p else "all as intended" if not odd else "<ul>" + "".join(
            f"<li>{_e(n.get('node'))} ({_e(n.get('op'))}): {_e(n.get('ran'))}</li>"
            for n in odd) + "</ul>")
        how = f"<br><small>{_e(p['how'])}</small>" if p.get("how") else ""
        rows.append(("fail" if odd else "", [_e(a.get("path")), _e(p.get("quantized")),
                                             _e(p.get("nodes")), ran + how]))
    return _table("What ran where", ["file", "quantized", "nodes", "not as intended"], rows)


def _robustness(r: dict[str, Any]) -> str:
    rob = as_dict(r.get("robustness"))
    if "skipped" in rob:
        return f"<h2>Robustness under input corruptions</h2><p>Not measured: " \
               f"{_e(rob.get('skipped'))}.</p>"
    metric = str(rob.get("metric") or "accuracy")
    title, cell = md.ROBUSTNESS_METRICS.get(metric, (metric, fmt.number))
    models = [str(m) for m in rob.get("models") or []] if isinstance(rob.get("models"), list) \
        else []
    conds = dicts(rob.get("conditions"))
    gap = any("distilled_minus_scratch_points" in c for c in conds)
    rows = [("", [_e(c.get("name")),
                  _e(f"{c['input']} ({c.get('kind')})" if c.get("input") else "all clean")]
             + [cell(as_dict(c.get(metric)).get(m)) for m in models]
             + ([fmt.points(c.get("distilled_minus_scratch_points"))] if gap else []))
            for c in conds]
    finding = as_dict(rob.get("summary")).get("finding")
    reasons = rob.get("not_corrupted")
    skipped = "".join(f" Not corrupted: {_e(why)}."
                      for why in (reasons if isinstance(reasons, list) else []))
    units = rob.get("units") or rob.get("pixel_units")
    return _table(f"Robustness: {_e(title)} under input corruptions",
                  ["condition", "input", *map(_e, models)]
                  + (["distilled − scratch (points)"] if gap else []), rows,
                  f"{_e(units)}.{skipped} {_e(finding) if finding else ''}")


def _nulls(r: dict[str, Any]) -> str:
    rows = [("", [_e(n.get("field")), _e(n.get("why"))]) for n in dicts(r.get("nulls"))]
    return _table("Values written as null", ["field", "why"], rows,
                  "the build could not measure these as finite numbers")

def render_html(report: Mapping[str, Any]) -> str:
    """The whole report as one HTML page that needs no network and no other file."""
    import matplotlib  # lazy: importing this module must stay cheap

    r = dict(report) if isinstance(report, Mapping) else {}
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text: small, crisp
        plots = (f'<figure class="plot" id="plot-accuracy-size">{accuracy_size_svg(r)}'
                 f'</figure><figure class="plot" id="plot-latency">{latency_svg(r)}</figure>')
    found = r.get("search")
    body = (_header(r) + _headline(r) + _flags(r) + _budget(r)
            + (search.html_section(found) if isinstance(found, dict) else "")
            + plots + _stages(r) + _artifacts(r) + _outputs(r) + _pruning(r) + _quantization(r)
            + _robustness(r) + _payoff(r) + shipping.html_section(r) + _placement(r) + _nulls(r))
    title = f"edgekd build: {_e(r.get('target', 'unknown target'))}"
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_CSS}</style></head>\n"
            f"<body>\n{body}\n{_SCRIPT}\n</body></html>\n")
