"""Did the model learn, and does it use the controls? Test-split NLL of a model vs baselines, one run.

    .venv/bin/python bench/model_learned.py MODEL.safetensors CORPUS/ [--split test] [--max-pieces 200]

Rows (nats per predicted token, the same targets for every row: each piece's tokens after BOS):
unigram and bigram baselines (counts from the train split; the bigram's interpolation weight chosen on
val), the model (sliding window, stride context/2), and the model with each piece's control tokens
replaced by another piece's (kinds swapped separately: density for density, mode for mode...). The model
must beat both baselines, and true controls must give a lower NLL than shuffled ones.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import time

import numpy as np
import torch

from v2m.models.baselines import bigram_nll, model_nll, swap_controls, unigram_nll
from v2m.models.data import read_corpus
from v2m.models.loading import load_model


def control_kinds(tokenizer: dict, vocab_size: int) -> tuple[np.ndarray, list[str]]:
    """[vocab] control kind per id (0 = not a control) from the tokenizer JSON's control names ('Density_3' → Density)."""
    kinds = np.zeros(vocab_size, dtype=np.int64)
    names: list[str] = []
    base = len(tokenizer.get("base_vocab", []))
    for offset, name in enumerate(tokenizer.get("controls", [])):
        kind = name.split("_")[0]
        if kind not in names:
            names.append(kind)
        kinds[base + offset] = names.index(kind) + 1
    return kinds, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("corpus")
    parser.add_argument("--split", default="test")
    parser.add_argument("--max-pieces", type=int, default=0, help="evaluate the first N pieces only (0 = all)")
    parser.add_argument("--context", type=int, default=0, help="window (default: the model's max_len)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the control shuffle")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    started = time.perf_counter()
    loaded = load_model(args.model, device=args.device)
    corpus = read_corpus(args.corpus)
    if loaded.meta["tokenizer_hash"] != corpus.tokenizer_hash:
        raise SystemExit(f"{args.corpus}: corpus made with another tokenizer than {args.model}")
    train, val, evaluated = corpus.load("train"), corpus.load("val"), corpus.load(args.split)
    count = evaluated.pieces if not args.max_pieces else min(args.max_pieces, evaluated.pieces)
    pieces = [evaluated.piece(p) for p in range(count)]
    val_pieces = [val.piece(p) for p in range(val.pieces)]
    context = args.context or loaded.config.max_len
    kinds, kind_names = control_kinds(corpus.tokenizer, corpus.vocab_size)

    rows = [("unigram (add-one)", unigram_nll(train.tokens, pieces, corpus.vocab_size)),
            ("bigram (interpolated with unigram)", bigram_nll(train.tokens, train.offsets, pieces, corpus.vocab_size,
                                                              held_out=val_pieces))]
    true_nll = model_nll(loaded.model, pieces, context, device=args.device)
    rows.append(("model, true controls", true_nll))
    shuffled_nll = None
    if kinds.any():
        shuffled = swap_controls(pieces, kinds, seed=args.seed)
        changed = sum(int((a != b).sum()) for a, b in zip(pieces, shuffled))
        shuffled_nll = model_nll(loaded.model, shuffled, context, device=args.device)
        rows.append((f"model, controls shuffled across pieces ({changed} tokens changed)", shuffled_nll))
        # the difference restricted to music tokens: do the controls help predict the notes?
        mask = [kinds[p[1:]] == 0 for p in pieces]
        rows.append(("  (music tokens only) true controls", _masked_nll(loaded.model, pieces, mask, context, args.device)))
        rows.append(("  (music tokens only) shuffled controls",
                     _masked_nll(loaded.model, shuffled, mask, context, args.device)))

    targets = sum(len(p) - 1 for p in pieces)
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"model: {args.model} ({sum(p.numel() for p in loaded.model.parameters()) / 1e6:.2f} M parameters); "
          f"corpus {args.corpus}, split '{args.split}': {count} pieces, {targets:,} predicted tokens; "
          f"control kinds: {', '.join(kind_names) or 'none'}")
    print()
    print(f"| {'NLL on the same tokens':<62} | {'nats/token':>10} | {'perplexity':>10} | {'× model NLL':>11} |")
    print(f"|{'-' * 64}|{'-' * 12}|{'-' * 12}|{'-' * 13}|")
    for name, nll in rows:
        print(f"| {name:<62} | {nll:>10.4f} | {math.exp(nll):>10.2f} | {nll / true_nll:>11.2f} |")
    print()
    verdict = [f"beats unigram: {true_nll < rows[0][1]}", f"beats bigram: {true_nll < rows[1][1]}"]
    if shuffled_nll is not None:
        verdict.append(f"true controls < shuffled: {true_nll < shuffled_nll} (Δ {shuffled_nll - true_nll:+.4f} nats/token)")
    print("; ".join(verdict) + f"  [{time.perf_counter() - started:.0f} s]")


def _masked_nll(model, pieces, masks, context, device) -> float:
    """model_nll over the targets where mask is True (per piece, aligned with piece[1:])."""
    import torch.nn.functional as F

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for piece, mask in zip(pieces, masks):
            ids = torch.as_tensor(piece.astype(np.int64), device=device)
            nll = torch.empty(len(piece) - 1, device=device)
            stride = max(1, context // 2)
            start = 0
            while True:
                end = min(start + context + 1, len(piece))
                logits = model(ids[start:end - 1][None]).float()[0]
                losses = F.cross_entropy(logits, ids[start + 1:end], reduction="none")
                skip = 0 if start == 0 else context - stride
                nll[start + skip:end - 1] = losses[skip:]
                if end == len(piece):
                    break
                start += stride
            keep = torch.as_tensor(mask, device=device)
            total += float(nll[keep].sum())
            count += int(keep.sum())
    return total / max(1, count)


if __name__ == "__main__":
    main()
