"""Accuracy of extract-rhythm on synthetic videos with ground truth (v2m.samples).

A sweep of videos from 60 to 180 BPM, four motion kinds (bounce, flash, pan, mixed), pixel noise
from 0 to 20 (8-bit std), 3/4 and 4/4 accents and hard cuts at random times. For each, the rhythm
is extracted exactly as `v2m extract-rhythm` does (probe → low-res ffmpeg stream → analysis) and
scored against the truth:

- beat F-measure (mir_eval, ±70 ms, no trimming of the first seconds),
- tempo within 4 % of the truth, and octave errors (within 4 % of half or double) counted apart,
- scene-cut precision and recall (a detected cut matches a true one within ±0.1 s),
- meter and downbeat F-measure (not required, reported).

With `--fast`, the sweep's pulses are faster than extract-rhythm's range (185-300 BPM, 4/4 accents): the
expected answer is half the pulse on every other pulse (the truth is folded so: tempo / 2, the better of
the two every-other-beat grids, meter 2), so "tempo≤4%" counts duple readings and "!" flags the rest
(a reading in threes, 200 -> 66.7 BPM, before the comb penalised third-way lags).

    .venv/bin/python bench/rhythm_accuracy.py                 # 24 videos, both methods
    .venv/bin/python bench/rhythm_accuracy.py --count 8 --methods flow
    .venv/bin/python bench/rhythm_accuracy.py --fast --count 24
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import mir_eval
import numpy as np

from v2m.samples import MOTIONS, SampleSpec, write_video
from v2m.stages.rhythm.extract import RhythmConfig, rhythm_from_frames
from v2m.stages.rhythm.stream import analysis_size, probe, stream_frames


def sweep_specs(count: int, seed: int = 0, fast: bool = False) -> list[SampleSpec]:
    """`count` sample specs covering tempo, motion kind, noise, meter and size (`fast`: 185-300 BPM pulses)."""
    rng = np.random.default_rng(seed)
    lo, hi = (185, 300) if fast else (60, 180)
    bpms = np.linspace(lo, hi, count) + rng.uniform(-3, 3, count)
    sizes = [(320, 180), (480, 270), (640, 360)]
    specs = []
    for i, bpm in enumerate(bpms):
        specs.append(SampleSpec(bpm=round(float(np.clip(bpm, lo, hi)), 1), duration=float(rng.choice([15, 20, 25])),
                                width=sizes[i % 3][0], height=sizes[i % 3][1], seed=1000 + i, motion=MOTIONS[i % 4],
                                noise=[0.0, 6.0, 12.0, 20.0][(i // 4) % 4], meter=3 if i % 5 == 2 and not fast else 4,
                                audio=False))
    return specs


def extract(path: Path, method: str) -> dict:
    """What `v2m extract-rhythm --method METHOD` computes, in-process."""
    config = RhythmConfig(method=method)
    info = probe(path)
    rate = min(info.fps or config.max_rate, config.max_rate)
    size = analysis_size(info, config.analysis_width)
    return rhythm_from_frames(stream_frames(info, size, rate), rate, info.fps, config)


def folded(truth: dict, rhythm: dict) -> dict:
    """The truth for a pulse above the tempo range: half the tempo, the every-other-beat grid that the
    extracted beats match better, 4/4 accents read as 2 beats a bar (downbeats unchanged)."""
    beats = np.array(truth["beats"])
    grid = max((beats[k::2] for k in (0, 1)), key=lambda b: mir_eval.beat.f_measure(b, np.array(rhythm["beats"]), 0.07))
    return {**truth, "bpm": truth["bpm"] / 2, "beats": grid.tolist(), "meter": max(1, truth["meter"] // 2)}


def score(truth: dict, rhythm: dict) -> dict:
    beats_true, beats = np.array(truth["beats"]), np.array(rhythm["beats"])
    bpm, true_bpm = rhythm["tempo"]["bpm"], truth["bpm"]
    cuts_true, cuts = np.array(truth["cuts"]), np.array(rhythm["cuts"])
    matched = len(mir_eval.util.match_events(cuts_true, cuts, 0.1)) if len(cuts_true) and len(cuts) else 0
    return {
        "f": mir_eval.beat.f_measure(beats_true, beats, 0.07),
        "tempo_ok": abs(bpm / true_bpm - 1) <= 0.04,
        "octave": any(abs(bpm / (true_bpm * m) - 1) <= 0.04 for m in (0.5, 2.0)),
        "tempo_err": bpm / true_bpm - 1,
        "cut_tp": matched, "cut_det": len(cuts), "cut_true": len(cuts_true),
        "meter_ok": rhythm["meter"] == truth["meter"],
        "down_f": mir_eval.beat.f_measure(np.array(truth["downbeats"]), np.array(rhythm["downbeats"]), 0.07),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=24)
    parser.add_argument("--methods", default="flow,diff")
    parser.add_argument("--keep", help="folder to keep (and reuse) the generated videos in")
    parser.add_argument("--fast", action="store_true", help="pulses above the tempo range (185-300 BPM), scored folded")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="v2m-acc-"))
    folder.mkdir(parents=True, exist_ok=True)
    methods = args.methods.split(",")
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
          file=sys.stderr)
    header = f"{'#':>2} {'motion':6} {'size':>8} {'noise':>5} {'m':>1} {'bpm':>6} " + " ".join(
        f"{m + ' bpm':>9} {'F':>5} {'cuts':>6} {'conf':>5}" for m in methods)
    print(header)
    timings = {m: 0.0 for m in methods}
    for i, spec in enumerate(sweep_specs(args.count, fast=args.fast)):
        path = folder / f"{'f' if args.fast else 's'}{i:02d}.mp4"
        import json

        truth_path = path.with_name(path.name + ".truth.json")
        if path.exists() and truth_path.exists():
            truth = json.loads(truth_path.read_text())
        else:
            truth = write_video(path, spec)
            truth_path.write_text(json.dumps(truth))
        cells = []
        for method in methods:
            t0 = time.perf_counter()
            rhythm = extract(path, method)
            result = score(folded(truth, rhythm) if args.fast else truth, rhythm)
            timings[method] += time.perf_counter() - t0
            rows[method].append(result)
            flag = "" if result["tempo_ok"] else ("*" if result["octave"] else "!")
            cells.append(f"{rhythm['tempo']['bpm']:>8.1f}{flag or ' '} {result['f']:5.2f} "
                         f"{result['cut_tp']}/{result['cut_det']}/{result['cut_true']:<2} "
                         f"{rhythm['tempo']['confidence']:4.2f}{'p' if rhythm['tempo'].get('planned') else ' '}")
        print(f"{i:2d} {spec.motion:6} {spec.width:>4}x{spec.height:<3} {spec.noise:5.0f} {spec.meter} {spec.bpm:6.1f} "
              + " ".join(cells), flush=True)
    print("\n(tempo flags: * octave error, ! other error; cuts = matched/detected/true; conf = tempo confidence,\n"
          "p where part of the grid was planned on the cuts instead of tracked)\n")
    print(f"{'method':6} {'videos':>6} {'median F':>8} {'mean F':>6} {'tempo≤4%':>8} {'octave':>6} "
          f"{'cut P':>6} {'cut R':>6} {'meter':>6} {'downbeat F':>10} {'s/video':>7}")
    for method in methods:
        r = rows[method]
        tp, det, true = (sum(x[k] for x in r) for k in ("cut_tp", "cut_det", "cut_true"))
        print(f"{method:6} {len(r):6d} {statistics.median(x['f'] for x in r):8.3f} {statistics.mean(x['f'] for x in r):6.3f} "
              f"{sum(x['tempo_ok'] for x in r) / len(r):8.0%} {sum(x['octave'] for x in r):6d} "
              f"{tp / det if det else 1.0:6.3f} {tp / true if true else 1.0:6.3f} "
              f"{sum(x['meter_ok'] for x in r) / len(r):6.0%} {statistics.median(x['down_f'] for x in r):10.3f} "
              f"{timings[method] / len(r):7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
