"""MIDI → tokens → MIDI round trip on music21 corpus pieces, and BPE on vs off (compression, round trip).

A note is kept when a decoded note has the same pitch, onset and duration (in quarter notes) as the
tokenizer's quantised input (one merged track, MidiTok's grid). Notes the quantised input drops before
tokenisation (pitch out of range, exact duplicates) count as lost against the *original* score too, and
are listed separately.

    .venv/bin/python bench/tokens_roundtrip.py --pieces 600 --bpe 1000
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path


def note_set(score) -> Counter:
    tpq = score.ticks_per_quarter
    return Counter((Fraction(n.time, tpq), Fraction(n.duration, tpq), n.pitch) for t in score.tracks for n in t.notes)


def sample_pieces(count: int, min_notes: int = 8):
    """Up to `count` (name, score) pairs spread over the whole music21 corpus (every k-th file, all tunes)."""
    from v2m.stages.tokens.corpus import music21_sources
    from v2m.stages.tokens.corpus_read import SkipFile, read_scores

    _, sources = music21_sources()
    by_kind: dict[str, list] = {}
    for sid, path in sources:
        by_kind.setdefault(path.suffix.lower(), []).append((sid, path))
    # a fixed share per format, so ABC's many tunes do not crowd out kern and MusicXML
    quota = {".abc": 0.4, ".krn": 0.35, ".mxl": 0.2, ".xml": 0.05}
    out = []
    for suffix, share in quota.items():
        want = int(count * share) + 1
        files = by_kind.get(suffix, [])
        step = max(1, len(files) // want)
        got = 0
        for sid, path in files[::step]:
            try:
                scores, _ = read_scores(path, limit=3)
            except (SkipFile, Exception):
                continue
            for name, score in scores[:3]:
                if score.note_num() >= min_notes and got < want:
                    out.append((sid + name, score))
                    got += 1
            if got >= want:
                break
    return out[:count] if len(out) >= count else out


def roundtrip(pieces, vocab):
    from v2m.stages.tokens.convert import decode_ids, encode_score
    from v2m.stages.tokens.vocab import merge_tracks, prepare_score

    totals = Counter()
    worst = []
    for name, score in pieces:
        original = sum(1 for t in score.tracks if not t.is_drum for _ in t.notes)
        prepared = prepare_score(score, vocab)
        want = note_set(prepared)
        got = note_set(decode_ids(encode_score(score, vocab), vocab))
        kept = sum((want & got).values())
        totals["pieces"] += 1
        totals["notes_original"] += original
        totals["notes_quantised"] += sum(want.values())
        totals["notes_kept"] += kept
        totals["pieces_perfect"] += kept == sum(want.values()) == sum(got.values())
        totals["notes_extra"] += sum((got - want).values())
        in_range = sum(1 for t in merge_tracks(score).tracks for n in t.notes
                       if vocab.spec.pitch_range[0] <= n.pitch < vocab.spec.pitch_range[1])
        totals["dropped_pitch_range"] += original - in_range
        if kept < sum(want.values()):
            worst.append((kept / max(sum(want.values()), 1), name))
    return totals, sorted(worst)[:5]


def bpe(pieces, vocab, vocab_size: int):
    """Train MidiTok BPE on 80 % of the pieces; on the other 20 %: tokens per piece and round trip."""
    import miditok

    from v2m.stages.tokens.vocab import merge_tracks

    split = int(len(pieces) * 0.8)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (_, score) in enumerate(pieces):
            path = Path(tmp) / f"{i:05d}.mid"
            path.write_bytes(bytes(merge_tracks(score).dumps_midi()))
            paths.append(path)
        tokenizer = miditok.REMI(vocab.spec.miditok_config())
        started = time.perf_counter()
        tokenizer.train(vocab_size=vocab_size, model="BPE", files_paths=paths[:split])
        train_s = time.perf_counter() - started
        base_tokens = bpe_tokens = kept = wanted = 0
        for path in paths[split:]:
            from symusic import Score

            score = Score(str(path))
            plain = miditok.REMI(vocab.spec.miditok_config())
            base = plain.encode(score)[0]
            enc = tokenizer.encode(score)[0]
            base_tokens += len(base.ids)
            bpe_tokens += len(enc.ids)
            want = note_set(plain.decode([base]))
            got = note_set(tokenizer.decode([enc]))
            kept += sum((want & got).values())
            wanted += sum(want.values())
    return {"vocab": len(tokenizer), "train_s": train_s, "test_pieces": len(paths) - split, "base_tokens": base_tokens,
            "bpe_tokens": bpe_tokens, "kept": kept, "wanted": wanted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=600)
    parser.add_argument("--bpe", type=int, default=1000, help="BPE vocabulary size (0: skip the BPE comparison)")
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args()
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer(args.tokenizer)
    started = time.perf_counter()
    pieces = sample_pieces(args.pieces)
    read_s = time.perf_counter() - started
    totals, worst = roundtrip(pieces, vocab)
    rt_s = time.perf_counter() - started - read_s
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(shared with other jobs)")
    print(f"tokenizer {vocab.hash[:12]}, vocab {len(vocab)}; {totals['pieces']} pieces read in {read_s:.1f} s, "
          f"round trip {rt_s:.1f} s")
    print("\n| measure | value |\n|---|---|")
    q = totals["notes_quantised"]
    rows = [("pieces", totals["pieces"]), ("pieces with every note kept", totals["pieces_perfect"]),
            ("notes in the original scores", totals["notes_original"]),
            ("notes after the tokenizer's quantisation", q),
            ("notes kept (pitch, onset, duration equal)", f"{totals['notes_kept']} ({100 * totals['notes_kept'] / q:.3f} %)"),
            ("decoded notes not in the input", totals["notes_extra"]),
            ("original notes outside the pitch range (dropped)", totals["dropped_pitch_range"])]
    for key, value in rows:
        print(f"| {key} | {value} |")
    if worst:
        print("\nleast kept: " + ", ".join(f"{name} {100 * share:.1f} %" for share, name in worst))
    if args.bpe:
        result = bpe(pieces, vocab, args.bpe)
        ratio = result["base_tokens"] / max(result["bpe_tokens"], 1)
        print("\n| BPE | tokens (test pieces) | ratio vs off | notes kept | vocab |\n|---|---|---|---|---|")
        print(f"| off | {result['base_tokens']} | 1.00 | 100 % (reference) | {vocab.n_base} |")
        print(f"| on ({args.bpe}) | {result['bpe_tokens']} | {ratio:.2f}× shorter | "
              f"{100 * result['kept'] / max(result['wanted'], 1):.2f} % | {result['vocab']} |")
        print(f"BPE trained on {int(len(pieces) * 0.8)} pieces in {result['train_s']:.1f} s; "
              f"tested on {result['test_pieces']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
