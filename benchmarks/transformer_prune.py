"""Students and structured pruning of a BERT encoder, measured in ONNX Runtime.

A BERT (4 layers, hidden 256, 4 heads, FFN 1024, random init) and four smaller models made
from it: every 2nd layer (:func:`edgekd.train.students.student_from_teacher`), 50 % of the
heads removed, 50 % of the FFN channels removed, and both
(:func:`edgekd.compress.transformer_prune.prune_transformer`). Each is exported with edgekd's
ONNX export (``edgekd.backends.from_torch.to_onnx``, what the build uses), checked against
PyTorch, and timed in ONNX Runtime (batch 1, ``--threads`` intra-op threads): the models take
turns in rounds in this one process, so a machine that slows down slows all of them alike.
Prints p50 latency and the speed-up over the teacher.

    python benchmarks/transformer_prune.py [--seq 128] [--rounds 15] [--runs 10] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn


class Encoder(nn.Module):
    """forward(input_ids, attention_mask) -> the [CLS] embedding: a sentence encoder."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(num_hidden_layers=4, hidden_size=256, num_attention_heads=4,
                            intermediate_size=1024, attn_implementation="eager")
        self.bert = BertModel(config, add_pooling_layer=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]


def models() -> dict[str, nn.Module]:
    from edgekd.compress.transformer_prune import prune_transformer
    from edgekd.train.students import student_from_teacher

    torch.manual_seed(0)
    teacher = Encoder().eval()
    return {"teacher": teacher,
            "every 2nd layer": student_from_teacher(teacher, every=2),
            "50 % heads": prune_transformer(teacher, heads=0.5)[0],
            "50 % FFN": prune_transformer(teacher, ffn=0.5)[0],
            "50 % heads + FFN": prune_transformer(teacher, heads=0.5, ffn=0.5)[0]}


def export(model: nn.Module, ids: np.ndarray, mask: np.ndarray, path: Path) -> Path:
    from edgekd.backends.from_torch import to_onnx
    from edgekd.inputs.dataset import Feeds, InputSpec

    seq = ids.shape[1]
    feeds = Feeds((InputSpec("input_ids", "int64", (seq,), kind="tokens"),
                   InputSpec("attention_mask", "int64", (seq,))),
                  {"input_ids": ids, "attention_mask": mask})
    return to_onnx(model.eval(), feeds, path, ["cls"])


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--runs", type=int, default=10, help="timed runs per model per round")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(2, args.seq)).astype(np.int64)
    mask = np.ones_like(ids)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads, 1
    sessions, rows = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models().items():
            path = export(model, ids, mask, Path(tmp) / f"{len(sessions)}.onnx")
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            with torch.no_grad():
                want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            sessions[name] = session
            rows[name] = {"params": sum(p.numel() for p in model.parameters()),
                          "mb": path.stat().st_size / 1e6,
                          "diff": float(np.abs(got - want).max()), "times": []}
    feed = {"input_ids": ids[:1], "attention_mask": mask[:1]}
    for session in sessions.values():  # warm-up
        for _ in range(3):
            session.run(None, feed)
    for _ in range(args.rounds):
        for name, session in sessions.items():
            for _ in range(args.runs):
                start = time.perf_counter()
                session.run(None, feed)
                rows[name]["times"].append(time.perf_counter() - start)
    base = statistics.median(rows["teacher"]["times"])
    print(f"BERT 4x256, 4 heads, FFN 1024; sequence {args.seq}, batch 1, ONNX Runtime "
          f"{ort.__version__}, {args.threads} threads, {args.rounds} rounds x {args.runs} runs")
    print("| model | params | ONNX MB | max abs diff vs PyTorch | p50 ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        p50 = statistics.median(row["times"])
        print(f"| {name} | {row['params'] / 1e6:.2f} M | {row['mb']:.1f} | {row['diff']:.1e} | "
              f"{p50 * 1e3:.2f} | {base / p50:.2f}x |")


if __name__ == "__main__":
    main()
