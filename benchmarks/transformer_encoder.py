"""A real pretrained sentence encoder (all-MiniLM-L6-v2, 22.7 M parameters) built by edgekd
as it is (deploy-only: no teacher, no training) for each runtime, and every artifact measured
on real English sentences against the PyTorch FP32 embeddings: issue 16 item 6, teacher half.

For each sequence length, the script writes an edgekd project whose ``model.student`` is the
encoder's sentence-transformers folder (edgekd reads its Pooling and Normalize modules, so the
model's output is the sentence embedding), ``task = "regression"``, a test split of real
sentences and a calibration split of other sentences (token ids + attention mask, .npz), and
runs ``edgekd build`` once per target in its own process. A build that fails is a row with its
error line. Then each artifact is loaded in its real runtime (``get_backend(runtime).load``),
run on the test split and compared with the teacher's FP32 embeddings, computed in PyTorch
straight from ``transformers`` (``text_corpus.embed``, not edgekd's copy of the pooling):

- cosine: mean and worst over the test sentences;
- top-10 agreement: for each test sentence, the share of its 10 nearest neighbours among the
  other test sentences under the artifact's embeddings that are also among the teacher's 10;
- size of the artifact's files; p50 latency and peak RSS from report.json (edgekd's benchmark
  worker, batch 1, the threads the report names).

The verification gate is loosened in the benchmark project (``min_cosine``, and
``max_output_error``) ONLY so that an INT8 artifact that misses it is kept and measured here;
``quant.min_cosine`` (the accuracy-aware search's target) is the real goal, 0.99, unless
``--search-min-cosine -1`` turns the search off (the recipe's first INT8 model is kept).

    PYTHONPATH=/work/tools/h16/corpus/site python benchmarks/transformer_encoder.py \\
        --sentences 500 --calibration 200 --lengths 32 128
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import text_corpus  # noqa: E402

RUNTIMES = {"x86-cpu": ("onnxruntime",), "intel-cpu": ("openvino",),
            "raspberrypi": ("tflite", "onnxruntime")}
# The gate is loosened only to keep failing artifacts for measurement (see the docstring).
KEEP_FOR_MEASUREMENT = -1.0
SEARCH_MIN_COSINE = 0.99


@dataclass
class Row:
    target: str
    runtime: str
    precision: str
    length: int
    cos_mean: float | None = None
    cos_min: float | None = None
    top10: float | None = None
    size_mb: float | None = None
    p50_ms: float | None = None
    rss_mb: float | None = None
    threads: int | None = None
    error: str = ""


def write_project(root: Path, folder: Path, test: dict[str, np.ndarray],
                  calibration: dict[str, np.ndarray], runs: int, search: float) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "test.npz", **test)  # type: ignore[arg-type]
    np.savez(root / "calibration.npz", **calibration)  # type: ignore[arg-type]
    n_cal = len(calibration["input_ids"])
    (root / "edgekd.toml").write_text(f"""\
# all-MiniLM-L6-v2 as it is: deploy-only, the sentence embedding is the output.
[model]
student = "{folder}"
task = "regression"
[data]
test = "test.npz"
calibration = "calibration.npz"
validation = "calibration.npz"
[quant]
calibration_samples = {n_cal}
min_cosine = {search}
[bench]
warmup = 5
runs = {runs}
seconds = 0
[robustness]
token_dropout = []
token_replace = []
""")
    return root / "edgekd.toml"


def build(config: Path, target: str, runtime: str, out: Path, log: Path,
          fp32_only: bool = False) -> str:
    """``edgekd build`` of one runtime of ``target``, in its own process: '' or the error
    line. One runtime per build, so one runtime's failure leaves the others measured."""
    cmd = [sys.executable, "-m", "edgekd", "build", "--config", str(config), "--target",
           target, "--out", str(out), "--set", f"runtimes=[\"{runtime}\"]",
           "--set", f"min_cosine={KEEP_FOR_MEASUREMENT}", "--set", "max_output_error=1000"]
    if fp32_only:
        cmd += ["--set", f"quant.skip_int8=[\"{runtime}\"]"]
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, text=True, check=False)
    if proc.returncode == 0:
        return ""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or [f"exit {proc.returncode}"])[-1][:300]


def run_artifact(path: Path, runtime: str, arrays: dict[str, np.ndarray],
                 threads: int) -> np.ndarray:
    from edgekd.backends import get_backend

    runner = get_backend(runtime).load(path, threads)
    size = getattr(runner, "fixed_batch", None) or 32
    out = [runner.run_all({k: v[i:i + size] for k, v in arrays.items()})[0]
           for i in range(0, len(arrays["input_ids"]), size)]
    emb = np.concatenate(out).astype(np.float64).reshape(len(arrays["input_ids"]), -1)
    return emb


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True).clip(min=1e-12)


def top_k(emb: np.ndarray, k: int) -> np.ndarray:
    scores = emb @ emb.T
    np.fill_diagonal(scores, -np.inf)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def compare(emb: np.ndarray, ref: np.ndarray, k: int = 10) -> tuple[float, float, float]:
    """(mean cosine, worst cosine, top-k neighbour agreement) of ``emb`` with ``ref``."""
    a, b = unit(emb), unit(ref)
    cos = (a * b).sum(1)
    mine, theirs = top_k(a, k), top_k(b, k)
    overlap = [len(set(m) & set(t)) / k for m, t in zip(mine, theirs, strict=True)]
    return float(cos.mean()), float(cos.min()), float(np.mean(overlap))


def measure(report: Path, length: int, target: str, arrays: dict[str, np.ndarray],
            ref: np.ndarray, threads: int, note: str = "") -> list[Row]:
    data = json.loads(report.read_text())
    rows = []
    for art in data["artifacts"]:
        row = Row(target, art["runtime"], art["precision"], length,
                  size_mb=art["size_bytes"] / 1e6,
                  p50_ms=(art.get("latency_ms") or {}).get("p50"),
                  rss_mb=(art.get("memory") or {}).get("peak_rss_mb"),
                  threads=(data.get("bench") or {}).get("threads"), error=note)
        try:
            emb = run_artifact(report.parent / art["path"], art["runtime"], arrays, threads)
            row.cos_mean, row.cos_min, row.top10 = compare(emb, ref)
        except Exception as exc:  # noqa: BLE001 - a row, not a crash
            row.error = f"{note} {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        rows.append(row)
    return rows


def build_and_measure(config: Path, target: str, runtime: str, length: int,
                      test: dict[str, np.ndarray], ref: np.ndarray,
                      args: argparse.Namespace) -> list[Row]:
    """The rows of one runtime: its artifacts measured, or its error line (and then the FP32
    artifact alone, built again without INT8, when that one builds)."""
    out = config.parent / "out"
    rows: list[Row] = []
    for fp32_only in (False, True):
        start = time.monotonic()
        log = config.parent / f"build-{target}-{runtime}{'-fp32' if fp32_only else ''}.log"
        error = build(config, target, runtime, out, log, fp32_only)
        print(f"seq {length} {target} {runtime}{' fp32 only' if fp32_only else ''}: "
              f"{time.monotonic() - start:.0f} s{', ' + error if error else ''}",
              file=sys.stderr, flush=True)
        report = out / target / "report.json"
        if not error and report.exists():
            got = measure(report, length, target, test, ref, args.threads,
                          note="(FP32 only: INT8 failed above)" if fp32_only else "")
            for row in got:
                print(f"  {row}", file=sys.stderr, flush=True)
            return rows + got
        rows.append(Row(target, runtime, "fp32" if fp32_only else "all", length,
                        error=error or "no report.json"))
    return rows


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row], args: argparse.Namespace) -> str:
    lines = [
        f"all-MiniLM-L6-v2 (22.7 M parameters) built by edgekd as it is, {args.sentences} test "
        f"sentences (World English Bible verses), {args.calibration} other ones to calibrate; "
        "figures against the PyTorch FP32 embeddings (transformers + mean pooling + L2). "
        "The build's verification gate was lowered (min_cosine=-1, max_output_error=1000) "
        "ONLY to keep failing INT8 artifacts for this measurement; quant.min_cosine (the "
        f"accuracy-aware search's target) = {args.search_min_cosine}"
        f"{' (no search: the recipe first INT8 model)' if args.search_min_cosine < 0 else ''}"
        ". p50 and peak RSS: report.json (edgekd's bench worker, batch 1, "
        "threads column).", "",
        "| target | runtime | precision | seq | cos mean | cos worst | top-10 agree | size MB "
        "| p50 ms | peak RSS MB | threads | error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r.target} | {r.runtime} | {r.precision} | {r.length} | "
            f"{fmt(r.cos_mean, '.4f')} | {fmt(r.cos_min, '.4f')} | "
            f"{'-' if r.top10 is None else f'{100 * r.top10:.1f} %'} | "
            f"{fmt(r.size_mb, '.1f')} | {fmt(r.p50_ms, '.2f')} | {fmt(r.rss_mb, '.0f')} | "
            f"{r.threads or '-'} | {r.error.replace('|', '/')} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=500, help="test sentences")
    parser.add_argument("--calibration", type=int, default=200, help="calibration sentences")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--targets", nargs="+", default=list(RUNTIMES),
                        choices=list(RUNTIMES))
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino", "tflite"],
                        help="build only these runtimes of each target")
    parser.add_argument("--threads", type=int, default=2, help="threads to run artifacts")
    parser.add_argument("--runs", type=int, default=100, help="timed runs per artifact")
    parser.add_argument("--search-min-cosine", type=float, default=SEARCH_MIN_COSINE,
                        help="quant.min_cosine, the accuracy-aware search's target; -1 keeps "
                        "the recipe's first INT8 model (no search: much faster)")
    parser.add_argument("--work", type=Path, default=Path("build/transformer_encoder"))
    args = parser.parse_args()
    try:
        folder, tokenizer = text_corpus.pretrained_encoder()
        texts = text_corpus.sentences(args.sentences + args.calibration, seed=0)
    except (text_corpus.MissingPackage, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    import torch
    from transformers import AutoModel

    torch.set_num_threads(args.threads)
    teacher = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    test_texts, cal_texts = texts[:args.sentences], texts[args.sentences:]
    rows: list[Row] = []
    for length in args.lengths:
        test = text_corpus.token_arrays(tokenizer, test_texts, length)
        cal = text_corpus.token_arrays(tokenizer, cal_texts, length)
        ref = text_corpus.embed(teacher, test)
        root = args.work.resolve() / f"seq{length}"
        config = write_project(root, folder, test, cal, args.runs, args.search_min_cosine)
        for target in args.targets:
            for runtime in [r for r in RUNTIMES[target] if r in args.runtimes]:
                rows += build_and_measure(config, target, runtime, length, test, ref, args)
    text = table(rows, args)
    print(text)
    (args.work / "table.md").write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
