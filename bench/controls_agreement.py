"""Controls from MIDI vs controls from the same MIDI rendered to audio and read back as a rhythm artifact.

For each corpus piece (first `--bars` bars): density classes from the notes (controls_from_score's
analysis) and from the rendered audio (FluidSynth → stages.rhythm.rhythm_from_audio, the code behind
`v2m extract-rhythm song.wav` → controls_from_rhythm). Two grids for the audio side:

- `true grid`: the rhythm artifact's beats/downbeats replaced by the MIDI's own (seconds): measures the
  control *scale* (onset rate from the audio envelope vs from the notes);
- `tracked grid`: the beats extract-rhythm estimated; each tracked bar is matched to the MIDI bar that
  contains its middle (beat-tracking errors included). This is what `v2m extract-rhythm song.wav |
  v2m encode-tokens -` gives.

Prints the confusion table (rows: class from MIDI, columns: class from audio) and the share of bars
within ±1 class; then the same for the per-beat strength class (true grid: beat by beat; tracked grid:
each tracked beat against the MIDI beat within 70 ms of it, if any).

    .venv/bin/python bench/controls_agreement.py --pieces 40 --bars 12
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=40)
    parser.add_argument("--bars", type=int, default=12)
    parser.add_argument("--tokenizer", default=None)
    args = parser.parse_args()
    import soundfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tokens_roundtrip import sample_pieces

    from v2m.stages.decode.render import render_wav
    from v2m.stages.rhythm.extract import rhythm_from_audio
    from v2m.stages.tokens.beat_grid import beat_grid_seconds
    from v2m.stages.tokens.controls import analyse_score, bar_controls
    from v2m.stages.tokens.video_controls import controls_from_rhythm
    from v2m.stages.tokens.vocab import load_tokenizer, merge_tracks

    vocab = load_tokenizer(args.tokenizer)
    n = vocab.stats["n_density"]
    started = time.perf_counter()
    pieces = sample_pieces(args.pieces)
    confusion = {"true grid": np.zeros((n, n), int), "tracked grid": np.zeros((n, n), int),
                 "tracked grid, x/4 meters only": np.zeros((n, n), int)}
    strength = {"true grid": np.zeros((3, 3), int), "tracked grid": np.zeros((3, 3), int)}
    tracked_beats = {"tracked beats": 0, "matched to a MIDI beat": 0}
    for name, score in pieces:
        merged = merge_tracks(score)
        beats, downbeats = beat_grid_seconds(merged)
        if len(downbeats) < 3:
            continue
        end_s = downbeats[min(args.bars, len(downbeats) - 1)]
        from miditok.utils import get_bars_ticks

        bar_ticks = get_bars_ticks(merged, only_notes_onsets=False)
        cut = merged.clip(0, int(bar_ticks[min(args.bars, len(bar_ticks) - 1)]), clip_end=True)
        music = bar_controls(analyse_score(cut, vocab), vocab.stats)[: args.bars]
        with tempfile.TemporaryDirectory() as tmp:
            wav = render_wav(cut, Path(tmp) / "song.wav", sample_rate=22050)
            audio, rate = soundfile.read(str(wav), dtype="float32")
        audio = audio.mean(axis=1)[: int(end_s * rate)]
        rhythm = rhythm_from_audio(audio, rate)
        true = dict(rhythm, beats=[b for b in beats if b < end_s], downbeats=[d for d in downbeats if d < end_s - 1e-3],
                    meter=int(round(len(beats) / max(len(downbeats), 1))))
        for bar_m, bar_a in zip(music, controls_from_rhythm(true, vocab)["bars"]):
            confusion["true grid"][bar_m["density"], bar_a["density"]] += 1
            for s_m, s_a in zip(bar_m["strength"], bar_a["strength"]):
                strength["true grid"][s_m, s_a] += 1
        # the MIDI's per-beat strength classes with their times (bar by bar, the bar's beats in order)
        music_beats = np.asarray([b for b in beats if b < end_s - 1e-3][: sum(len(b["strength"]) for b in music)])
        music_strength = [s for b in music for s in b["strength"]][: len(music_beats)]
        try:
            tracked = controls_from_rhythm(rhythm, vocab)
        except Exception:
            continue
        starts = np.asarray(downbeats[: len(music)] + [end_s])
        for bar_a in tracked["bars"]:
            for j, s_a in enumerate(bar_a["strength"]):
                k = int(np.searchsorted(tracked["beat_times"], bar_a["start"] - 1e-6)) + j
                if k >= len(tracked["beat_times"]) or not len(music_beats):
                    continue
                tracked_beats["tracked beats"] += 1
                near = int(np.argmin(np.abs(music_beats - tracked["beat_times"][k])))
                if abs(music_beats[near] - tracked["beat_times"][k]) <= 0.07 and near < len(music_strength):
                    tracked_beats["matched to a MIDI beat"] += 1
                    strength["tracked grid"][music_strength[near], s_a] += 1
        for i, bar_a in enumerate(tracked["bars"]):
            nxt = tracked["bars"][i + 1]["start"] if i + 1 < len(tracked["bars"]) else end_s
            middle = (bar_a["start"] + nxt) / 2
            k = int(np.searchsorted(starts, middle, side="right")) - 1
            if 0 <= k < len(music):
                confusion["tracked grid"][music[k]["density"], bar_a["density"]] += 1
                # the music's "beat" is the time signature's denominator note (a half note in 4/2, an eighth in
                # 6/8); the tracker's beat is a tactus near 60-180 bpm: they agree most often in x/4
                if all(ts.denominator == 4 for ts in merged.time_signatures):
                    confusion["tracked grid, x/4 meters only"][music[k]["density"], bar_a["density"]] += 1
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
          f"(shared); {len(pieces)} pieces, first {args.bars} bars, {time.perf_counter() - started:.0f} s; "
          f"tokenizer {vocab.hash[:12]}, {n} density classes, bounds {vocab.stats['density_bounds']} onsets per "
          f"{'tactus beat ' + str(vocab.stats['tactus']) if vocab.stats.get('density_unit') == 'tactus' else 'notated beat'}")
    for grid, table in confusion.items():
        total = table.sum()
        diff = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
        within = table[diff <= 1].sum() / max(total, 1)
        exact = np.trace(table) / max(total, 1)
        print(f"\n{grid}: {total} bars, exact {100 * exact:.1f} %, within ±1 {100 * within:.1f} %")
        print("| MIDI \\ audio | " + " | ".join(str(j) for j in range(n)) + " |")
        print("|---" * (n + 1) + "|")
        for i in range(n):
            print(f"| {i} | " + " | ".join(str(v) for v in table[i]) + " |")
    print(f"\nstrength class per beat (0 none / 1 weak / 2 strong; audio classes by rank at the corpus shares "
          f"{vocab.stats['strength_shares']}); tracked grid: {tracked_beats}")
    for grid, table in strength.items():
        total = table.sum()
        print(f"\n{grid}: {total} beats, exact {100 * np.trace(table) / max(total, 1):.1f} %")
        print("| MIDI \\ audio | 0 | 1 | 2 |\n|---|---|---|---|")
        for i in range(3):
            print(f"| {i} | " + " | ".join(str(v) for v in table[i]) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
