"""Encode throughput: v2m encode_score (MidiTok REMI + control analysis + interleaving) vs plain MidiTok REMI
with the same configuration, on the same MIDI files, side by side in one process.

The files are music21 corpus pieces written out as MIDI once (bench/tokens_roundtrip.py's sample), so
both sides read the same bytes from disk.

    .venv/bin/python bench/encode_throughput.py --pieces 300 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path


def timed(fn, paths, repeat: int) -> tuple[float, int]:
    """Best-of-`repeat` wall time (s) for running `fn` over all paths, and the tokens it produced."""
    best, tokens = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        tokens = sum(fn(p) for p in paths)
        best = min(best, time.perf_counter() - started)
    return best, tokens


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args()
    import miditok
    import symusic

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tokens_roundtrip import sample_pieces

    from v2m.stages.tokens.convert import encode_score
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer(args.tokenizer)
    plain = miditok.REMI(vocab.spec.miditok_config())
    pieces = sample_pieces(args.pieces)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (_, score) in enumerate(pieces):
            path = Path(tmp) / f"{i:05d}.mid"
            path.write_bytes(bytes(score.dumps_midi()))
            paths.append(path)

        def load_only(p):
            return symusic.Score(str(p)).note_num() * 0

        def miditok_plain(p):
            seqs = plain.encode(symusic.Score(str(p)))
            return sum(len(s.ids) for s in seqs) if isinstance(seqs, list) else len(seqs.ids)

        def v2m_encode(p):
            return len(encode_score(symusic.Score(str(p)), vocab))

        rows = [(name, *timed(fn, paths, args.repeat)) for name, fn in
                (("symusic load only", load_only), ("MidiTok REMI (per track)", miditok_plain),
                 ("v2m encode_score (merged + controls)", v2m_encode))]
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(shared with other jobs; best of {args.repeat}); {len(paths)} MIDI files, one process")
    base = rows[1][1]
    print("\n| encoder | wall s | files/s | tokens/s | time vs MidiTok |\n|---|---|---|---|---|")
    for name, seconds, tokens in rows:
        print(f"| {name} | {seconds:.2f} | {len(paths) / seconds:.0f} | {tokens / seconds:.0f} | {seconds / base:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
