"""decode (tokens → MIDI) against the length of the token sequence: before/after issue 19's linear beat-grid anchors.

    .venv/bin/python bench/decode_scaling.py                   # 10⁴, 10⁵, 10⁶ ids; "before" up to 2·10⁵
    .venv/bin/python bench/decode_scaling.py --base 76c452a --sizes 10000,100000

A tokens artifact of N ids is built from the default tokenizer's encoding of a test song, its bars repeated, with a
beat grid of 0.05 s steps (as many beats as the music has). "after" is `v2m decode T -o x.mid` in-process (read,
check, decode, tempo map, write); "before" times the tempo-map anchors alone (`grid_anchors`, the quadratic part) of
`stages/tokens/beat_grid.py` at --base, loaded from git, on the same score, and checks both give the same anchors.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tokens_artifact(n: int) -> dict:
    from tests.music import song
    from v2m import artifacts
    from v2m.stages.tokens.convert import encode_score
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer(None)
    ids = encode_score(song(notes_per_beat=(2, 2, 4, 1))[0], vocab)
    first = ids.index(vocab.bar_id)
    body = ids[first:-1]
    ids = ids[:first] + body * max(1, (n - first) // len(body)) + [ids[-1]]
    bars = sum(1 for i in ids if i == vocab.bar_id)
    beats = [round(0.05 * i, 3) for i in range(4 * bars)]
    data = {"tokenizer_hash": vocab.hash, "ids": ids, "meter": 4, "beat_times": beats, "downbeats": beats[::4]}
    return artifacts.make_artifact("v2m.tokens", data, stage="bench")


def old_module(base: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{base}:stages/tokens/beat_grid.py"], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType("beat_grid_before")
    exec(compile(source, "beat_grid_before.py", "exec"), module.__dict__)  # noqa: S102 - our own file at --base
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--base", default="76c452a", help="the commit before issue 19")
    parser.add_argument("--max-before", type=int, default=200_000, help="largest size timed with the old anchors")
    args = parser.parse_args()
    from miditok.utils import get_bars_ticks, get_beats_ticks

    from v2m import artifacts
    from v2m.cli.main import main as v2m
    from v2m.stages.tokens import beat_grid
    from v2m.stages.tokens.convert import decode_ids
    from v2m.stages.tokens.vocab import load_tokenizer

    before = old_module(args.base)
    vocab = load_tokenizer(None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; base {args.base}")
    print("| ids | bars | decode after (s) | µs per id | anchors after (s) | anchors before (s) | before / after |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            art = tokens_artifact(n)
            path = Path(tmp) / f"t{n}.json"
            artifacts.atomic_write_bytes(path, artifacts.dumps(art))
            start = time.perf_counter()
            code = v2m(["-q", "decode", str(path), "-o", str(Path(tmp) / f"t{n}.mid")])
            decode_s = time.perf_counter() - start
            assert code == 0
            data = art["data"]
            score = decode_ids(data["ids"], vocab)  # the score before its tempo map: what grid_anchors reads
            start = time.perf_counter()
            new = beat_grid.grid_anchors(score, data["beat_times"], data["downbeats"], get_bars_ticks, get_beats_ticks)
            new_s = time.perf_counter() - start
            old_s, ratio = "—", "—"
            if n <= args.max_before:
                start = time.perf_counter()
                old = before.grid_anchors(score, data["beat_times"], data["downbeats"], get_bars_ticks, get_beats_ticks)
                took = time.perf_counter() - start
                assert old == new, "the anchors changed"
                old_s, ratio = f"{took:.2f}", f"{took / new_s:.0f}×"
            bars = len(data["downbeats"])
            print(f"| {len(data['ids']):,} | {bars:,} | {decode_s:.2f} | {1e6 * decode_s / len(data['ids']):.1f} | "
                  f"{new_s:.2f} | {old_s} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
