"""Do the styles change the music? The five bundled styles' melodies for one seed, clip by clip (issue 17).

For each clip's controls (NAME.controls.json, as `v2m run` or `encode-tokens` writes them; by default the ones
bench/structure_clips.py left in its work folder) generates the line once per style with the same model and seed,
and compares every pair of styles: the share of notes (bar, onset, pitch) they have in common, relative to the
smaller line. Also each style's notes per beat and median pitch, so the table shows how they differ, not only
that they do. Prints per clip the largest pair, then the medians, and the machine.

    .venv/bin/python bench/style_melodies.py [--controls /tmp/v2m-structure/out] [--seed 0] [--model M]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def line_notes(ids: list[int], vocab) -> tuple[set, int]:
    """(bar, onset step, pitch) of every note of a token piece, and its number of beats."""
    from v2m.stages.generate.plan import note_kinds, time_signature_ids

    kinds, meters = note_kinds(vocab), {v: k for k, v in time_signature_ids(vocab).items()}
    notes, bar, onset, beats = set(), -1, 0, 0
    for token in ids:
        if token == vocab.bar_id:
            bar, onset = bar + 1, 0
        elif token in meters:
            beats += meters[token]
        elif token in kinds:
            kind, value = kinds[token]
            if kind == "pos":
                onset = value
            elif kind == "pitch":
                notes.add((bar, onset, value))
    return notes, beats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controls", type=Path, default=Path("/tmp/v2m-structure/out"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import torch

    from v2m.stages.arrange.styles import style_names
    from v2m.stages.generate.sampler import GenerateConfig, generate
    from v2m.stages.session import open_model

    torch.set_num_threads(1)
    session = open_model(args.model)
    files = sorted(args.controls.glob("*.controls.json"))
    if not files:
        raise SystemExit(f"no *.controls.json in {args.controls}: run bench/structure_clips.py first")
    styles = style_names()
    started = time.perf_counter()
    largest, medians, density, pitch = [], [], {s: [] for s in styles}, {s: [] for s in styles}
    print("| clip | bars | largest shared pair | share | median pair share |\n|---|---:|---|---:|---:|")
    for path in files:
        controls = json.loads(path.read_text())["data"]
        lines = {}
        for style in styles:
            data = generate(session.loaded.model, session.vocab, controls, GenerateConfig(seed=args.seed), style=style)
            lines[style], beats = line_notes(data["ids"], session.vocab)
            density[style].append(len(lines[style]) / max(beats, 1))
            pitch[style].append(statistics.median(p for _, _, p in lines[style]) if lines[style] else 0)
        shares = {(a, b): len(lines[a] & lines[b]) / max(min(len(lines[a]), len(lines[b])), 1)
                  for a, b in itertools.combinations(styles, 2)}
        pair = max(shares, key=shares.get)
        largest.append(shares[pair])
        medians.append(statistics.median(shares.values()))
        print(f"| {path.name.removesuffix('.controls.json')} | {len(controls['bars'])} | {pair[0]}–{pair[1]} | "
              f"{shares[pair]:.2f} | {medians[-1]:.2f} |")
    print(f"\n{len(files)} clips, seed {args.seed}: the largest pair's share median {statistics.median(largest):.2f}, "
          f"max {max(largest):.2f}, clips where every pair < 0.30: {sum(x < 0.3 for x in largest)}/{len(files)}; "
          f"median pair share {statistics.median(medians):.2f}\n")
    print("| style | notes per beat (median) | median pitch (median) |\n|---|---:|---:|")
    for style in styles:
        print(f"| {style} | {statistics.median(density[style]):.2f} | {statistics.median(pitch[style]):.0f} |")
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
