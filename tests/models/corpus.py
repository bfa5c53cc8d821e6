"""A small synthetic v2m.corpus for model tests, written in the real format (index.json + safetensors shards).

Each piece is BOS, one control token c (ids 3..6), then an arithmetic walk over the content ids
whose stride is set by c, with a little noise, then EOS. So a model that learned beats a unigram
and a bigram model, and it needs the control token to predict well (shuffling controls hurts).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from v2m.artifacts import atomic_write_bytes, dumps, make_artifact

VOCAB = 48
CONTROLS = (3, 4, 5, 6)
CONTENT0, CONTENT_N = 7, 41


def synthetic_piece(rng: np.random.Generator, length: int) -> np.ndarray:
    c = int(rng.choice(CONTROLS))
    stride = c - 1  # 2..5
    start = int(rng.integers(0, CONTENT_N))
    walk = CONTENT0 + (start + stride * np.arange(length)) % CONTENT_N
    noise = rng.random(length) < 0.05
    walk[noise] = rng.integers(CONTENT0, VOCAB, size=int(noise.sum()))
    return np.concatenate([[1, c], walk, [2]]).astype(np.uint16)


def tokenizer(name: str = "synthetic") -> tuple[dict, str]:
    obj = {"name": name, "vocab_size": VOCAB, "controls": {"density": list(CONTROLS)}}
    return obj, hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def make_corpus(folder: Path, pieces=(60, 10, 10), seed: int = 0, name: str = "synthetic") -> Path:
    """Write a corpus with train/val/test splits of `pieces` pieces (80–200 tokens each) to `folder` (0: an empty split,
    as a corpus made from a few files has)."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tok, tok_hash = tokenizer(name)
    splits = {}
    for split, count in zip(("train", "val", "test"), pieces):
        seqs = [synthetic_piece(rng, int(rng.integers(80, 200))) for _ in range(count)]
        tokens = np.concatenate(seqs) if seqs else np.zeros(0, dtype=np.uint16)
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
        shard = f"{split}-00000.safetensors"
        save_file({"tokens": tokens, "offsets": offsets}, str(folder / shard))
        splits[split] = {"shards": [shard], "pieces": count, "tokens": int(len(tokens))}
    data = {"tokenizer": tok, "tokenizer_hash": tok_hash, "vocab_size": VOCAB,
            "special": {"pad": 0, "bos": 1, "eos": 2}, "splits": splits, "stats": {"synthetic": True}}
    atomic_write_bytes(folder / "index.json", dumps(make_artifact("v2m.corpus", data, stage="tests", seed=seed)))
    return folder
