"""Token corpora for training and evaluation: read a v2m.corpus (index.json + safetensors shards)
and cut it into training windows and fixed evaluation windows.

Only numpy, safetensors and v2m's core are needed to read a corpus (the GPU machine has no
MidiTok). Batches are a pure function of (seed, step, rank): no sampler state to save, so a
resumed run draws exactly the batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from v2m.artifacts import read_artifact
from v2m.errors import V2MError


@dataclass(frozen=True)
class Split:
    """One split: all pieces' ids concatenated (each piece BOS..EOS) and piece boundaries."""

    name: str
    tokens: np.ndarray   # [N] int64
    offsets: np.ndarray  # [P+1] int64, piece p = tokens[offsets[p]:offsets[p+1]]

    @property
    def pieces(self) -> int:
        return len(self.offsets) - 1

    def piece(self, p: int) -> np.ndarray:
        return self.tokens[self.offsets[p]:self.offsets[p + 1]]


@dataclass(frozen=True)
class Corpus:
    path: str
    tokenizer: dict
    tokenizer_hash: str
    vocab_size: int
    special: dict
    splits: dict  # name → {"shards", "pieces", "tokens"} as in the index

    def load(self, name: str) -> Split:
        """Read and check the shards of split `name`."""
        if name not in self.splits:
            raise V2MError(f"{self.path}: corpus has no '{name}' split", f"its splits: {', '.join(self.splits)}")
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        folder = Path(self.path)
        tokens, offsets, base = [], [np.zeros(1, dtype=np.int64)], 0
        for shard in self.splits[name].get("shards", []):
            f = folder / shard
            if not f.is_file():
                raise V2MError(f"{self.path}: shard {shard} is missing", "rebuild the corpus with v2m encode-tokens")
            try:
                data = load_file(str(f))
            except (SafetensorError, OSError) as e:
                raise V2MError(f"{f}: unreadable corpus shard ({e})", "rebuild the corpus with v2m encode-tokens")
            if "tokens" not in data or "offsets" not in data:
                raise V2MError(f"{f}: corpus shard without 'tokens' and 'offsets' tensors")
            t, o = data["tokens"].astype(np.int64), data["offsets"].astype(np.int64)
            if len(o) < 1 or o[0] != 0 or o[-1] != len(t) or np.any(np.diff(o) < 0):
                raise V2MError(f"{f}: corpus shard offsets do not match its tokens; the shard is corrupt")
            tokens.append(t)
            offsets.append(o[1:] + base)
            base += len(t)
        all_tokens = np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int64)
        if len(all_tokens) and int(all_tokens.max()) >= self.vocab_size:
            raise V2MError(f"{self.path}: split '{name}' has token id {int(all_tokens.max())} ≥ vocab_size {self.vocab_size}")
        return Split(name, all_tokens, np.concatenate(offsets))


def read_corpus(path: str | Path) -> Corpus:
    """A corpus folder (or its index.json), checked: format v2m.corpus, tokenizer present."""
    p = Path(path)
    if not p.exists():
        raise V2MError(f"{path}: no such corpus", "make one with: v2m encode-tokens --source music21 -o CORPUS/")
    index = p / "index.json" if p.is_dir() else p
    if not index.is_file():
        raise V2MError(f"{path}: not a corpus folder (no index.json)", "make one with: v2m encode-tokens FOLDER -o CORPUS/")
    data = read_artifact(index, expect="v2m.corpus")["data"]
    missing = [k for k in ("tokenizer", "tokenizer_hash", "vocab_size", "splits") if k not in data]
    if missing:
        raise V2MError(f"{index}: corpus index lacks {', '.join(missing)}", "rebuild the corpus with v2m encode-tokens")
    return Corpus(str(index.parent), data["tokenizer"], data["tokenizer_hash"], int(data["vocab_size"]),
                  data.get("special", {"pad": 0, "bos": 1, "eos": 2}), data["splits"])


def window_starts(split: Split, batch: int, context: int, seed: int, step: int,
                  piece_start_frac: float = 0.0) -> np.ndarray:
    """Start offsets [batch] of the global batch's windows (context+1 tokens each) for one step.

    A share `piece_start_frac` starts at a piece's BOS (so the model sees global controls and
    openings); the rest start anywhere. Pure in (seed, step); DDP rank r takes the r-th slice, so
    the global batch is the same for any number of processes.
    """
    last = len(split.tokens) - (context + 1)
    if last < 0:
        raise V2MError(f"the '{split.name}' split has {len(split.tokens)} tokens, fewer than one window of {context + 1}",
                       "use a smaller --context or a bigger corpus")
    rng = np.random.default_rng([seed, step])
    starts = rng.integers(0, last + 1, size=batch)
    at_piece = rng.random(batch) < piece_start_frac
    piece_starts = split.offsets[:-1][split.offsets[:-1] <= last]
    if at_piece.any() and len(piece_starts):
        starts[at_piece] = piece_starts[rng.integers(0, len(piece_starts), size=int(at_piece.sum()))]
    return starts


def gather_windows(tokens, starts, context: int):
    """Windows x [B, T] and targets y [B, T] (x shifted by one) from a 1-D torch tensor of tokens."""
    import torch

    index = torch.as_tensor(starts, device=tokens.device)[:, None] + torch.arange(context + 1, device=tokens.device)
    window = tokens[index]
    return window[:, :-1], window[:, 1:]


def eval_starts(split: Split, context: int, max_tokens: int) -> np.ndarray:
    """Fixed, non-overlapping window starts covering the first ≤ max_tokens predictions of a split."""
    count = min(max(1, max_tokens // context), (len(split.tokens) - 1) // context)
    return np.arange(count, dtype=np.int64) * context
