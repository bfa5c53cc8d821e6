"""The reference table for rhythm agreement: what a perfect match and what chance look like, on real music.

For each Bach chorale from music21's corpus (a real piece, at the tempo music21 writes into its MIDI):

  (a) upper bound — the chorale's MIDI scored against the rhythm extracted from its own audio
      (rendered with FluidSynth, read by extract-rhythm's audio path): the beats the music itself implies;
      also the rendered WAV's detected onsets against the same rhythm (what evaluate sees for WAV input);
  (b) chance — the same MIDI scored against a different video's rhythm (a synthetic clip from
      v2m.samples at an unrelated tempo, read by extract-rhythm --method diff);
  (c) random — as many uniformly random onsets as the chorale has, scored against its own rhythm
      (the analytic chance level of tests/stages/evaluate/test_beat_metrics.py, on this rhythm);
  (d) detector check — onsets detected in the rendered WAV scored against the MIDI's own note onsets
      (F should be ~1; onset_offset_ms is the audio path's latency on real instruments).

Every later rhythm number in BENCHMARKS.md reads against this scale. Run from the repo root:

    .venv/bin/python bench/rhythm_reference.py [--pieces 4]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

CHORALES = ["bach/bwv66.6", "bach/bwv7.7", "bach/bwv10.7", "bach/bwv269", "bach/bwv84.5", "bach/bwv40.8"]
VIDEO_BPM = [137.0, 89.0, 151.0, 71.0, 113.0, 163.0]  # one unrelated tempo per piece (no simple ratio to 120)
SHOWN = ["onset_f1", "onset_precision", "onset_recall", "onset_offset_ms", "bcs", "bhs", "beat_align", "beat_align_video", "beat_f1",
         "tempo_related"]


def render(midi: Path, wav: Path) -> None:
    from v2m.media import find_soundfont, run_tool

    run_tool(["fluidsynth", "-ni", "-g", "0.6", "-F", str(wav), "-r", "22050", str(find_soundfont()), str(midi)],
             what=str(midi), timeout=300)


def score_rows(work: Path, name: str, video_bpm: float, seed: int) -> dict[str, dict]:
    import music21
    from symusic import Score

    from v2m.samples import SampleSpec, write_video
    from v2m.stages.evaluate import report as ev
    from v2m.stages.rhythm.extract import RhythmConfig, extract_rhythm, rhythm_from_audio

    stem = name.replace("/", "_")
    midi, wav, video = work / f"{stem}.mid", work / f"{stem}.wav", work / f"{stem}.mp4"
    music21.corpus.parse(name).write("midi", fp=str(midi))
    render(midi, wav)
    samples = ev.read_audio(wav)
    own = ev.reference_from_rhythm(rhythm_from_audio(samples, ev.SAMPLE_RATE))
    music = ev.music_from_score(Score.from_file(str(midi)), name=name)
    heard = ev.music_from_audio(samples, ev.SAMPLE_RATE, name=str(wav))

    write_video(video, SampleSpec(bpm=video_bpm, duration=round(own.duration, 1), width=256, height=144, fps=25.0,
                                  seed=seed, audio=False))
    other = ev.reference_from_rhythm(extract_rhythm(str(video), RhythmConfig(method="diff"))["data"])

    rng = np.random.default_rng(seed)
    random_onsets = np.sort(rng.uniform(0, own.duration, music.onsets.size))
    random_music = ev.Music("random", random_onsets, np.zeros(0), float("nan"), own.duration)
    rows = {
        "(a) MIDI vs own audio rhythm": ev.evaluate_pair(own, music),
        "(a) WAV onsets vs own audio rhythm": ev.evaluate_pair(own, heard),
        "(b) MIDI vs another video's rhythm": ev.evaluate_pair(other, music),
        "(c) random onsets vs own audio rhythm": ev.evaluate_pair(own, random_music),
        "(d) WAV onsets vs the MIDI's note onsets": ev.evaluate_pair(ev.Reference(music.onsets, own.duration, None), heard),
    }
    info = {"duration": own.duration, "own_bpm": own.bpm, "video_bpm_true": video_bpm, "video_bpm_found": other.bpm,
            "onsets": int(music.onsets.size)}
    return {label: {"metrics": m, "labels": l, "info": info} for label, (m, l) in rows.items()}


def mean_of(values) -> float:
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def cell(value: float, digits: int = 3) -> str:
    return "—" if not np.isfinite(value) else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pieces", type=int, default=4, help="how many chorales (at most %d)" % len(CHORALES))
    args = parser.parse_args()
    started = time.perf_counter()
    per_row: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="v2m-rhythm-ref-") as tmp:
        for i, name in enumerate(CHORALES[:args.pieces]):
            rows = score_rows(Path(tmp), name, VIDEO_BPM[i], seed=i)
            first = next(iter(rows.values()))["info"]
            print(f"{name}: {first['duration']:.1f} s, {first['onsets']} onsets, own tempo {first['own_bpm']:.1f} BPM, "
                  f"other video {first['video_bpm_true']:.0f} BPM (found {first['video_bpm_found']:.1f})", flush=True)
            for label, row in rows.items():
                per_row.setdefault(label, []).append(row)

    print(f"\nmachine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"python {platform.python_version()}; {args.pieces} chorales; wall {time.perf_counter() - started:.0f} s\n")
    header = "| row | " + " | ".join(SHOWN) + " |"
    print(header)
    print("|" + "---|" * (len(SHOWN) + 1))
    means = {}
    for label, rows in per_row.items():
        means[label] = {k: mean_of([r["metrics"].get(k) for r in rows]) for k in SHOWN}
        print(f"| {label} (mean of {len(rows)}) | " + " | ".join(cell(means[label][k]) for k in SHOWN) + " |")
    upper, chance = means["(a) MIDI vs own audio rhythm"], means["(b) MIDI vs another video's rhythm"]
    print("| ratio (a) MIDI / (b) | " + " | ".join(
        cell(upper[k] / chance[k], 2) if chance[k] and k != "onset_offset_ms" else "—" for k in SHOWN) + " |")
    relations = {label: [r["labels"].get("tempo_relation", "-") for r in rows] for label, rows in per_row.items()}
    print("\ntempo relation (music vs rhythm), per piece:")
    for label, names in relations.items():
        print(f"  {label}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
