"""Baselines for "it learned": unigram and bigram NLL, sliding-window model NLL on whole pieces, and
the shuffled-controls control (each piece's control tokens replaced by another piece's).

All NLLs are nats per predicted token over the same predictions: every token of a piece after its
first (BOS), so model and baselines are scored on exactly the same targets.
"""

from __future__ import annotations

import math

import numpy as np


def unigram_nll(train: np.ndarray, pieces: list[np.ndarray], vocab_size: int, alpha: float = 1.0) -> float:
    """NLL of a unigram model (add-alpha smoothed counts of the training tokens)."""
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64) + alpha
    logp = np.log(counts / counts.sum())
    targets = np.concatenate([p[1:] for p in pieces])
    return float(-logp[targets].mean())


def bigram_nll(train: np.ndarray, train_offsets: np.ndarray, pieces: list[np.ndarray], vocab_size: int,
               lam: float | None = None, held_out: list[np.ndarray] | None = None) -> float:
    """NLL of a bigram model interpolated with the unigram (Jelinek-Mercer smoothing).

    Counts come from bigrams inside training pieces. The interpolation weight `lam` is chosen on
    `held_out` pieces (e.g. the val split) from a small grid when not given.
    """
    uni = np.bincount(train, minlength=vocab_size).astype(np.float64) + 1.0
    uni /= uni.sum()
    inside = np.ones(len(train) - 1, dtype=bool)
    inside[train_offsets[1:-1] - 1] = False  # no bigram across a piece boundary (EOS → next BOS)
    prev, nxt = train[:-1][inside], train[1:][inside]
    pair = np.zeros((vocab_size, vocab_size), dtype=np.float64)
    np.add.at(pair, (prev, nxt), 1.0)
    rows = pair.sum(axis=1, keepdims=True)
    cond = np.divide(pair, rows, out=np.zeros_like(pair), where=rows > 0)

    def nll(weight: float, seqs: list[np.ndarray]) -> float:
        a = np.concatenate([s[:-1] for s in seqs])
        b = np.concatenate([s[1:] for s in seqs])
        return float(-np.log(weight * cond[a, b] + (1 - weight) * uni[b]).mean())

    if lam is None:
        grid = [0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99]
        lam = min(grid, key=lambda w: nll(w, held_out or pieces))
    return nll(lam, pieces)


def model_nll(model, pieces: list[np.ndarray], context: int, batch: int = 8, device: str = "cpu") -> float:
    """NLL of a model on whole pieces: a sliding window of `context` tokens with stride context/2,
    each target scored once with at least context/2 tokens of history (or all it has)."""
    import torch
    import torch.nn.functional as F

    stride = max(1, context // 2)
    windows = []  # (piece index, window start, first target scored within the window)
    for i, p in enumerate(pieces):
        start = 0
        while True:
            end = min(start + context + 1, len(p))
            windows.append((i, start, 0 if start == 0 else context - stride))
            if end == len(p):
                break
            start += stride
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for j in range(0, len(windows), batch):
            chunk = windows[j:j + batch]
            seqs = [pieces[i][s:s + context + 1] for i, s, _ in chunk]
            width = max(len(s) for s in seqs)
            x = torch.zeros(len(seqs), width - 1, dtype=torch.long)
            y = torch.full((len(seqs), width - 1), -100, dtype=torch.long)
            for r, (seq, (_, _, skip)) in enumerate(zip(seqs, chunk)):
                seq = torch.as_tensor(seq.astype(np.int64))
                x[r, :len(seq) - 1] = seq[:-1]
                y[r, skip:len(seq) - 1] = seq[1 + skip:]
            logits = model(x.to(device)).float()
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(device).reshape(-1),
                                     ignore_index=-100, reduction="sum").item()
            count += int((y != -100).sum())
    return total / max(1, count)


def swap_controls(pieces: list[np.ndarray], control_kind: np.ndarray, seed: int = 0) -> list[np.ndarray]:
    """Each piece's control tokens replaced by those of another piece (a random derangement).

    `control_kind` [vocab] gives each id's control kind (0 = not a control; e.g. 1 density,
    2 strength, 3 phrase, 4 tempo...). Kinds are swapped separately, in order, so a density slot
    gets a density token; when the donor has fewer tokens of a kind, its sequence is cycled.
    The music tokens are untouched, so any NLL change comes from the model using the controls.
    """
    rng = np.random.default_rng(seed)
    n = len(pieces)
    order = rng.permutation(n)
    donor = np.roll(order, 1)[np.argsort(order)] if n > 1 else order  # piece order[k] takes from order[k-1]
    out = []
    for i, piece in enumerate(pieces):
        new = piece.copy()
        source = pieces[donor[i]]
        for kind in np.unique(control_kind[control_kind > 0]):
            slots = np.flatnonzero(control_kind[piece] == kind)
            given = source[control_kind[source] == kind]
            if len(slots) and len(given):
                new[slots] = given[np.arange(len(slots)) % len(given)]
        out.append(new)
    return out


def perplexity(nll: float) -> float:
    return math.exp(nll)
