"""Does the model follow the density controls? Generate under requested per-bar density classes
(sparse → dense → sparse), measure each generated bar's density class, print the confusion table.

    .venv/bin/python bench/model_controls.py MODEL.safetensors [--bars 24] [--samples 4] [--seed 0]

Generation is the real `generate` stage (stages/generate/sampler.py: controls forced after every Bar, the rest
sampled). Each generated piece is decoded to a score and re-analysed with the training-side control
code (stages/tokens/controls.py: analyse_score + bar_controls), so "measured" is on exactly the scale the
model was trained on. A bar the re-analysis does not find counts as a miss. Strength is held neutral
(1 on every beat) so only density varies. Target (issue 6): ±1 class in ≥ 80 % of bars.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from v2m.stages.tokens.convert import decode_ids


def requested_densities(bars: int, n_density: int) -> list[int]:
    """A triangle over the non-empty classes: sparsest → densest → sparsest, spread over `bars` bars."""
    top = n_density - 1
    up = np.linspace(1, top, num=(bars + 1) // 2)
    return [int(round(v)) for v in np.concatenate([up, up[::-1][bars % 2:]])][:bars]


def make_controls(vocab, densities: list[int], meter: int, bpm: float) -> dict:
    from v2m.stages.tokens.controls import tempo_class

    beat = 60.0 / bpm
    n_beats = len(densities) * meter
    beat_times = [round(i * beat, 3) for i in range(n_beats + 1)]
    downbeats = beat_times[:-1:meter]
    bars = [{"start": downbeats[i], "density": d, "strength": [1] * meter, "phrase": i % 8 == 0, "velocity": 80}
            for i, d in enumerate(densities)]
    return {"tokenizer_hash": vocab.hash, "meter": meter, "tempo_bpm": bpm, "tempo_class": tempo_class(bpm, vocab.stats),
            "mode": "major", "register": "mid", "duration": beat_times[-1], "beat_times": beat_times,
            "downbeats": downbeats, "bars": bars}


def measured_densities(ids: list[int], vocab) -> list[int]:
    from v2m.stages.tokens.controls import analyse_score, bar_controls

    score = decode_ids(ids, vocab)
    analysis = analyse_score(score, vocab)
    return [bar["density"] for bar in bar_controls(analysis, vocab.stats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--bars", type=int, default=24)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--meter", type=int, default=4)
    parser.add_argument("--bpm", type=float, default=100.0)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from v2m.models.loading import load_model
    from v2m.stages.generate.sampler import GenerateConfig, generate
    from v2m.stages.tokens.vocab import load_tokenizer

    started = time.perf_counter()
    loaded = load_model(args.model, device=args.device)
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    n_density = int(vocab.stats["n_density"])
    wanted = requested_densities(args.bars, n_density)
    controls = make_controls(vocab, wanted, args.meter, args.bpm)
    config = GenerateConfig(temperature=args.temperature, top_p=args.top_p, seed=args.seed, num_samples=args.samples)
    data = generate(loaded.model, vocab, controls, config)
    pieces = [data["ids"], *data.get("samples", [])]

    confusion = np.zeros((n_density, n_density + 1), dtype=np.int64)  # last column: bar not found
    for ids in pieces:
        got = measured_densities(ids, vocab)
        for i, want in enumerate(wanted):
            confusion[want, got[i] if i < len(got) else n_density] += 1
    total = confusion.sum()
    within = sum(confusion[w, g] for w in range(n_density) for g in range(n_density) if abs(w - g) <= 1)
    exact = np.trace(confusion[:, :n_density])

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"model: {args.model}; {len(pieces)} samples × {args.bars} bars, meter {args.meter}, {args.bpm:g} bpm, "
          f"temperature {args.temperature:g}, top-p {args.top_p:g}, seed {args.seed}")
    print(f"requested density classes per bar: {' '.join(map(str, wanted))}")
    for k, ids in enumerate(pieces):
        print(f"measured (sample {k}):               {' '.join(map(str, measured_densities(ids, vocab)[:args.bars]))}")
    print()
    header = " ".join(f"{g:>4}" for g in range(n_density)) + "  miss"
    print(f"| requested \\ measured | {header} |")
    for w in range(n_density):
        if confusion[w].sum():
            print(f"| {w:>20} | " + " ".join(f"{c:>4}" for c in confusion[w, :n_density]) + f"  {confusion[w, -1]:>4} |")
    print()
    print(f"within ±1 class: {within}/{total} = {within / total:.0%} (target ≥ 80 %); exact: {exact / total:.0%}  "
          f"[{time.perf_counter() - started:.0f} s]")


if __name__ == "__main__":
    main()
