"""extract-rhythm on edited footage with ground truth (v2m.montage): montages, cuts without a pulse, slow small
bounces, still frames — the cases a steady synthetic pulse does not cover.

Sets (each clip drawn with its truth, encoded by ffmpeg, then read exactly as `v2m extract-rhythm` reads it):

- montage: 2–4 scenes of 5–9 s, each at its own tempo (60–180 BPM, neighbours ≥ 12 % apart), joined by hard cuts
  (and, in every fourth, one tempo change inside a shot: no cut) → per-scene beat F-measure (±70 ms);
- cuts: 3–6 shots of camera moves with a few impacts and no pulse → cuts on a beat (±35 ms), on a downbeat,
  and impacts on a beat (±70 ms);
- bounce: one ball bouncing at 60–80 BPM on 160x90 or 192x108 frames → tempo within 4 %;
- still: a held frame with pixel noise → tempo confidence.

Targets (issue 16): per-scene beat F median ≥ 0.9; cuts on a beat ≥ 95 % and on a downbeat ≥ 70 %; slow
bounce tempo within 4 % on ≥ 90 %; stills confidence < 0.2.

    .venv/bin/python bench/edit_accuracy.py                  # 20 montages, 20 cut clips, 10 bounces, 10 stills
    .venv/bin/python bench/edit_accuracy.py --count 4 --method diff
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from v2m.montage import Scene, write_montage
from v2m.samples import MOTIONS, SampleSpec
from v2m.stages.evaluate.beat_metrics import beat_f_measure
from v2m.stages.rhythm.extract import RhythmConfig, extract_rhythm


def montage_scenes(rng: np.random.Generator) -> list[Scene]:
    n = int(rng.integers(2, 5))
    tempi: list[float] = []
    while len(tempi) < n:
        bpm = float(np.round(rng.uniform(60, 180), 1))
        if not tempi or abs(bpm / tempi[-1] - 1) >= 0.12:
            tempi.append(bpm)
    return [Scene(float(np.round(rng.uniform(5, 9), 2)), "pulse", bpm=b, motion=MOTIONS[int(rng.integers(0, 4))])
            for b in tempi]


def cut_scenes(rng: np.random.Generator) -> list[Scene]:
    return [Scene(float(np.round(rng.uniform(2.5, 6), 2)), "edit") for _ in range(int(rng.integers(3, 7)))]


def read(path: Path, method: str) -> dict:
    return extract_rhythm(str(path), RhythmConfig(method=method))["data"]


def keep(path: Path, truth: dict, rhythm: dict) -> None:
    path.with_suffix(".truth.json").write_text(json.dumps(truth))
    path.with_suffix(".rhythm.json").write_text(json.dumps(rhythm))


def per_scene_f(rhythm: dict, truth: dict) -> list[float]:
    beats = np.asarray(rhythm["beats"])
    out = []
    for scene in truth["scenes"]:
        inside = (beats >= scene["start"]) & (beats < scene["end"])
        out.append(beat_f_measure(np.asarray(scene["beats"]), beats[inside]).f1)
    return out


def on_grid(times, grid, window: float) -> list[bool]:
    grid = np.asarray(grid)
    return [bool(len(grid) and np.min(np.abs(grid - t)) <= window) for t in times]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="montages and cut clips (bounces and stills: half)")
    parser.add_argument("--method", default="flow", choices=["flow", "diff"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the clips, their truth and their rhythm in this folder")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows = {"montage": [], "cuts": [], "bounce": [], "still": []}
    with tempfile.TemporaryDirectory(prefix="v2m-edit-") as scratch:
        tmp = args.keep or scratch
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for i in range(args.count):
            path = Path(tmp) / f"montage{i}.mp4"
            scenes = montage_scenes(rng)
            if i % 4 == 3:  # one tempo change inside a shot: the next scene goes on with the same picture
                scenes[1] = Scene(scenes[1].seconds + 3, "pulse", bpm=scenes[1].bpm, motion=scenes[0].motion, cut=False)
            truth = write_montage(path, scenes, SampleSpec(width=320, height=180, seed=100 + i, noise=4.0))
            rhythm = read(path, args.method)
            keep(path, truth, rhythm)
            rows["montage"].append((f"montage{i}", [s["bpm"] for s in truth["scenes"]], per_scene_f(rhythm, truth),
                                    rhythm["tempo"]["confidence"]))
        for i in range(args.count):
            path = Path(tmp) / f"cuts{i}.mp4"
            truth = write_montage(path, cut_scenes(rng), SampleSpec(width=320, height=180, seed=300 + i, noise=4.0))
            rhythm = read(path, args.method)
            keep(path, truth, rhythm)
            rows["cuts"].append((f"cuts{i}", on_grid(truth["cuts"], rhythm["beats"], 0.035),
                                 on_grid(truth["cuts"], rhythm["downbeats"], 0.035),
                                 on_grid(truth["hits"], rhythm["beats"], 0.07), rhythm["tempo"]))
        for i in range(max(1, args.count // 2)):
            path = Path(tmp) / f"bounce{i}.mp4"
            bpm = float(np.round(rng.uniform(60, 80), 1))
            size = [(160, 90), (192, 108)][i % 2]
            truth = write_montage(path, [Scene(float(rng.uniform(12, 18)), "pulse", bpm=bpm, motion="bounce")],
                                  SampleSpec(width=size[0], height=size[1], seed=500 + i, noise=[2.0, 6.0][i % 2]))
            rhythm = read(path, args.method)
            rows["bounce"].append((f"bounce{i}", bpm, rhythm["tempo"]["bpm"], rhythm["tempo"]["confidence"]))
        for i in range(max(1, args.count // 2)):
            path = Path(tmp) / f"still{i}.mp4"
            write_montage(path, [Scene(float(rng.uniform(6, 12)), "still")],
                          SampleSpec(width=320, height=180, seed=700 + i, noise=[0.0, 3.0, 8.0, 15.0][i % 4],
                                     crf=[20, 30, 36][i % 3]))
            rhythm = read(path, args.method)
            rows["still"].append((f"still{i}", rhythm["tempo"]["confidence"], rhythm["tempo"]["source"]))

    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; method {args.method}, seed {args.seed}\n")
    print("| montage | scene tempi (BPM) | per-scene beat F | confidence |\n|---|---|---|---:|")
    scene_f = []
    for name, tempi, fs, confidence in rows["montage"]:
        scene_f += fs
        print(f"| {name} | {', '.join(f'{b:g}' for b in tempi)} | {', '.join(f'{f:.2f}' for f in fs)} | {confidence:.2f} |")
    print("\n| cut clip | cuts on a beat | on a downbeat | impacts on a beat | tempo (BPM), source, confidence |\n"
          "|---|---:|---:|---:|---|")
    beats_ok, downs_ok, hits_ok = [], [], []
    for name, on_beat, on_down, hits, tempo in rows["cuts"]:
        beats_ok += on_beat
        downs_ok += on_down
        hits_ok += hits
        print(f"| {name} | {sum(on_beat)}/{len(on_beat)} | {sum(on_down)}/{len(on_down)} | {sum(hits)}/{len(hits)} | "
              f"{tempo['bpm']:.1f}, {tempo['source']}, {tempo['confidence']:.2f} |")
    print("\n| bounce | true BPM | read BPM | within 4 % | confidence |\n|---|---:|---:|---|---:|")
    within = []
    for name, truth_bpm, read_bpm, confidence in rows["bounce"]:
        within.append(abs(read_bpm / truth_bpm - 1) < 0.04)
        print(f"| {name} | {truth_bpm:g} | {read_bpm:.1f} | {'yes' if within[-1] else 'NO'} | {confidence:.2f} |")
    print("\n| still | confidence | tempo source |\n|---|---:|---|")
    for name, confidence, source in rows["still"]:
        print(f"| {name} | {confidence:.2f} | {source} |")
    stills = [c for _, c, _ in rows["still"]]
    print("\n| measure | value | target |\n|---|---:|---|")
    print(f"| per-scene beat F, median of {len(scene_f)} scenes | {statistics.median(scene_f):.3f} | ≥ 0.9 |")
    print(f"| cuts on a beat (±35 ms) | {np.mean(beats_ok):.3f} | ≥ 0.95 |")
    print(f"| cuts on a downbeat (±35 ms) | {np.mean(downs_ok):.3f} | ≥ 0.70 |")
    print(f"| impacts on a beat (±70 ms) | {np.mean(hits_ok):.3f} | (reported) |")
    print(f"| slow bounce tempo within 4 % | {np.mean(within):.3f} | ≥ 0.90 |")
    print(f"| stills: highest confidence | {max(stills):.3f} | < 0.2 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
