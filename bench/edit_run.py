"""`v2m run` end to end on edited footage with ground truth (v2m.montage): what a user gets back.

For each clip the output MIDI's own beat grid (its tempo map and time signatures) is scored against the truth:
montages by per-scene beat F (±70 ms); clips of cuts without a pulse by cuts on a MIDI beat and on a MIDI
downbeat (±35 ms). For every clip: the MIDI's and the WAV's length against the video's, and the first note's
time. One `v2m run` over the folder (one model load), the default model unless --model; its wall time is
printed.

    .venv/bin/python bench/edit_run.py                 # 6 montages, 6 cut clips, 2 stills
    .venv/bin/python bench/edit_run.py --count 3 --keep /tmp/edit-run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import symusic

sys.path.insert(0, str(Path(__file__).resolve().parent))
from edit_accuracy import cut_scenes, montage_scenes, on_grid  # noqa: E402  (a sibling bench script)

from v2m.montage import Scene, write_montage  # noqa: E402
from v2m.samples import SampleSpec  # noqa: E402
from v2m.stages.evaluate.beat_metrics import beat_f_measure  # noqa: E402


def midi_grid(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Beat and downbeat times (s) of a MIDI file's tempo map and time signatures, its end and first note (s)."""
    score = symusic.Score.from_file(str(path))
    tpq, end_ticks = score.ticks_per_quarter, score.end()
    signatures = sorted(score.time_signatures, key=lambda s: s.time) or [symusic.TimeSignature(0, 4, 4)]
    beat_ticks, bar_ticks = [], []
    for k, sig in enumerate(signatures):
        step = tpq * 4 // sig.denominator
        stop = signatures[k + 1].time if k + 1 < len(signatures) else end_ticks
        for i, t in enumerate(range(sig.time, stop, step)):
            beat_ticks.append(t)
            if i % sig.numerator == 0:
                bar_ticks.append(t)
    seconds = _seconds(np.asarray(beat_ticks + bar_ticks + [end_ticks], dtype=np.float64), score)
    beats, bars = seconds[:len(beat_ticks)], seconds[len(beat_ticks):-1]
    timed = score.to("second")
    first = min((n.time for t in timed.tracks for n in t.notes), default=float("nan"))
    return beats, bars, float(seconds[-1]), float(first)


def _seconds(ticks: np.ndarray, score) -> np.ndarray:
    tempos = sorted(score.tempos, key=lambda t: t.time) or [symusic.Tempo(0, 120.0)]
    starts = np.array([t.time for t in tempos], dtype=np.float64)
    per_tick = np.array([60.0 / (t.qpm * score.ticks_per_quarter) for t in tempos])
    offsets = np.concatenate([[0.0], np.cumsum(np.diff(starts) * per_tick[:-1])])
    k = np.searchsorted(starts, ticks, side="right") - 1
    return offsets[k] + (ticks - starts[k]) * per_tick[k]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=6, help="montages and cut clips (stills: a third)")
    parser.add_argument("--model", help="checkpoint (default: the shipped default model)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", help="keep the clips and run's outputs in this folder")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="v2m-edit-run-") as scratch:
        root = Path(args.keep or scratch)
        clips, out = root / "clips", root / "out"
        clips.mkdir(parents=True, exist_ok=True)
        truths = {}
        for i in range(args.count):
            truths[f"montage{i}"] = write_montage(clips / f"montage{i}.mp4", montage_scenes(rng),
                                                  SampleSpec(width=320, height=180, seed=900 + i, noise=4.0))
            truths[f"cuts{i}"] = write_montage(clips / f"cuts{i}.mp4", cut_scenes(rng),
                                               SampleSpec(width=320, height=180, seed=950 + i, noise=4.0))
        for i in range(max(1, args.count // 3)):
            truths[f"still{i}"] = write_montage(clips / f"still{i}.mp4", [Scene(float(rng.uniform(5, 9)), "still")],
                                                SampleSpec(width=320, height=180, seed=990 + i, noise=3.0))
        command = [sys.executable, "-m", "v2m", "-q", "run", str(clips), "-o", str(out), "--force"]
        command += ["--model", args.model] if args.model else []
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stderr, file=sys.stderr)
            return 1
        rows = []
        for name, truth in truths.items():
            beats, bars, midi_end, first = midi_grid(out / f"{name}.mid")
            info = soundfile.info(str(out / f"{name}.wav"))
            rhythm = json.loads((out / f"{name}.rhythm.json").read_text())["data"]["tempo"]
            row = {"name": name, "video": truth["duration"], "midi": midi_end, "wav": info.frames / info.samplerate,
                   "first": first, "tempo": rhythm}
            if name.startswith("montage"):
                row["scene_f"] = [beat_f_measure(np.asarray(s["beats"]), beats[(beats >= s["start"] - 0.07)
                                                                                & (beats < s["end"])]).f1
                                  for s in truth["scenes"]]
            elif name.startswith("cuts"):
                row["on_beat"] = on_grid(truth["cuts"], beats, 0.035)
                row["on_bar"] = on_grid(truth["cuts"], bars, 0.035)
            rows.append(row)

    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; model {args.model or 'default'}; `v2m run` on {len(truths)} clips: "
          f"{wall:.1f} s wall\n")
    print("| clip | video s | MIDI − video s | WAV − video s | first note s | tempo (source, confidence) "
          "| MIDI grid vs truth |")
    print("|---|---:|---:|---:|---:|---|---|")
    for r in rows:
        if "scene_f" in r:
            grid = "per-scene beat F " + ", ".join(f"{f:.2f}" for f in r["scene_f"])
        elif "on_beat" in r:
            grid = (f"cuts on a beat {sum(r['on_beat'])}/{len(r['on_beat'])}, "
                    f"on a downbeat {sum(r['on_bar'])}/{len(r['on_bar'])}")
        else:
            grid = ""
        t = r["tempo"]
        print(f"| {r['name']} | {r['video']:.2f} | {r['midi'] - r['video']:+.3f} | {r['wav'] - r['video']:+.3f} | "
              f"{r['first']:.3f} | {t['bpm']:.1f} ({t['source']}, {t['confidence']:.2f}) | {grid} |")
    scene_f = [f for r in rows for f in r.get("scene_f", [])]
    on_beat = [x for r in rows for x in r.get("on_beat", [])]
    on_bar = [x for r in rows for x in r.get("on_bar", [])]
    print("\n| measure | value |\n|---|---:|")
    print(f"| per-scene beat F of the MIDI grid, median of {len(scene_f)} scenes | {statistics.median(scene_f):.3f} |")
    print(f"| cuts on a MIDI beat (±35 ms), {len(on_beat)} cuts | {np.mean(on_beat):.3f} |")
    print(f"| cuts on a MIDI downbeat (±35 ms) | {np.mean(on_bar):.3f} |")
    print(f"| largest abs(MIDI − video) s | {max(abs(r['midi'] - r['video']) for r in rows):.3f} |")
    print(f"| largest abs(WAV − video) s | {max(abs(r['wav'] - r['video']) for r in rows):.3f} |")
    print(f"| latest first note s | {max(r['first'] for r in rows):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
