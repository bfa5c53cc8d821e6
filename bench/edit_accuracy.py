"""extract-rhythm on edited footage with ground truth (v2m.montage): montages, cuts without a pulse, slow small
bounces, still frames — the cases a steady synthetic pulse does not cover.

Sets (each clip drawn with its truth, encoded by ffmpeg, then read exactly as `v2m extract-rhythm` reads it):

- montage: 2–4 scenes of 5–9 s, each at its own tempo (60–180 BPM, neighbours ≥ 12 % apart), joined by hard cuts
  (and, in every fourth, one tempo change inside a shot: no cut) → per-scene beat F-measure (±70 ms);
- cuts: 3–6 shots of camera moves with a few impacts and no pulse → cuts on a beat (±35 ms), on a downbeat,
  and impacts on a beat (±70 ms);
- bounce: one ball bouncing at 60–80 BPM on 160x90 or 192x108 frames → tempo within 4 %;
- still: a held frame with pixel noise and x264's flicker (crf 20–36, keyframes every 10–25 frames or the
  default) → tempo confidence.

Targets (issue 16): per-scene beat F median ≥ 0.9; cuts on a beat ≥ 95 % and on a downbeat ≥ 70 %; slow
bounce tempo within 4 % on ≥ 90 %; stills confidence < 0.2.

    .venv/bin/python bench/edit_accuracy.py                  # 20 montages, 20 cut clips, 10 bounces, 10 stills
    .venv/bin/python bench/edit_accuracy.py --count 4 --method diff
    .venv/bin/python bench/edit_accuracy.py --base 9271277    # and the same clips read by that commit, side by side
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
    parser.add_argument("--base", help="also read every clip with this commit's `v2m extract-rhythm` (side by side)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    rows: dict[str, list] = {"montage": [], "cuts": [], "bounce": [], "still": []}
    with tempfile.TemporaryDirectory(prefix="v2m-edit-") as scratch:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        readers = {"now": lambda path: read(path, args.method)}
        if args.base:
            readers["base"] = base_reader(args.base, tmp, args.method)
        for i in range(args.count):
            path = tmp / f"montage{i}.mp4"
            scenes = montage_scenes(rng)
            if i % 4 == 3:  # one tempo change inside a shot: the next scene goes on with the same picture
                scenes[1] = Scene(scenes[1].seconds + 3, "pulse", bpm=scenes[1].bpm, motion=scenes[0].motion, cut=False)
            truth = write_montage(path, scenes, SampleSpec(width=320, height=180, seed=100 + i, noise=4.0))
            got = {k: r(path) for k, r in readers.items()}
            keep(path, truth, got["now"])
            rows["montage"].append((f"montage{i}", [s["bpm"] for s in truth["scenes"]],
                                    {k: (per_scene_f(g, truth), g["tempo"]) for k, g in got.items()}))
        for i in range(args.count):
            path = tmp / f"cuts{i}.mp4"
            truth = write_montage(path, cut_scenes(rng), SampleSpec(width=320, height=180, seed=300 + i, noise=4.0))
            got = {k: r(path) for k, r in readers.items()}
            keep(path, truth, got["now"])
            rows["cuts"].append((f"cuts{i}", {k: (on_grid(truth["cuts"], g["beats"], 0.035),
                                                  on_grid(truth["cuts"], g["downbeats"], 0.035),
                                                  on_grid(truth["hits"], g["beats"], 0.07), g["tempo"])
                                              for k, g in got.items()}))
        for i in range(max(1, args.count // 2)):
            path = tmp / f"bounce{i}.mp4"
            bpm = float(np.round(rng.uniform(60, 80), 1))
            size = [(160, 90), (192, 108)][i % 2]
            write_montage(path, [Scene(float(rng.uniform(12, 18)), "pulse", bpm=bpm, motion="bounce")],
                          SampleSpec(width=size[0], height=size[1], seed=500 + i, noise=[2.0, 6.0][i % 2]))
            rows["bounce"].append((f"bounce{i}", bpm, {k: r(path)["tempo"] for k, r in readers.items()}))
        for i in range(max(1, args.count // 2)):
            path = tmp / f"still{i}.mp4"
            write_montage(path, [Scene(float(rng.uniform(6, 12)), "still")],
                          SampleSpec(width=320, height=180, seed=700 + i, noise=[0.0, 3.0, 8.0, 15.0][i % 4],
                                     crf=[20, 30, 36][i % 3], gop=[None, 19, 12, 25, 10][i % 5]))
            rows["still"].append((f"still{i}", {k: r(path)["tempo"] for k, r in readers.items()}))
    report(rows, args, list(readers))
    return 0


def base_reader(rev: str, work: Path, method: str):
    """Read a clip with commit `rev`'s extract-rhythm CLI (its tree laid out by bench/same_bytes.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from same_bytes import run_v2m, tree_at

    layout = tree_at(rev, work / "trees")

    def read_base(path: Path) -> dict:
        data = json.loads(run_v2m(layout, ["extract-rhythm", str(path), "--method", method], cwd=path.parent).stdout)
        return data["data"]
    return read_base


def report(rows: dict, args, runs: list[str]) -> None:
    print(f"machine: {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; method {args.method}, seed {args.seed}"
          + (f"; before = commit {args.base}, after = this tree" if args.base else "") + "\n")
    label = {"now": "after" if args.base else "", "base": "before"}
    cols = [k for k in ("base", "now") if k in runs]

    def head(name: str) -> str:
        return " | ".join(f"{name} {label[k]}".strip() for k in cols)

    print(f"| montage | scene tempi (BPM) | {head('per-scene beat F')} | {head('confidence')} |")
    print("|---|---|" + "---|" * len(cols) + "---:|" * len(cols))
    scene_f = {k: [] for k in cols}
    for name, tempi, got in rows["montage"]:
        for k in cols:
            scene_f[k] += got[k][0]
        print(f"| {name} | {', '.join(f'{b:g}' for b in tempi)} | "
              + " | ".join(", ".join(f"{f:.2f}" for f in got[k][0]) for k in cols) + " | "
              + " | ".join(f"{got[k][1]['confidence']:.2f}" for k in cols) + " |")
    print(f"\n| cut clip | {head('cuts on a beat')} | {head('on a downbeat')} | {head('impacts on a beat')} | "
          f"{head('tempo (BPM), source, confidence')} |\n|---|" + "---:|" * (3 * len(cols)) + "---|" * len(cols))
    cut_stats = {k: ([], [], []) for k in cols}
    for name, got in rows["cuts"]:
        cells = []
        for index in range(3):
            for k in cols:
                hits = got[k][index]
                cut_stats[k][index].extend(hits)
                cells.append(f"{sum(hits)}/{len(hits)}")
        for k in cols:
            t = got[k][3]
            cells.append(f"{t['bpm']:.1f}, {t.get('source', '')}, {t['confidence']:.2f}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n| bounce | true BPM | {head('read BPM')} | {head('confidence')} |\n|---|---:|"
          + "---:|" * (2 * len(cols)))
    within = {k: [] for k in cols}
    for name, bpm, got in rows["bounce"]:
        for k in cols:
            within[k].append(abs(got[k]["bpm"] / bpm - 1) < 0.04)
        print(f"| {name} | {bpm:g} | " + " | ".join(f"{got[k]['bpm']:.1f}" + ("" if within[k][-1] else " ✗")
                                                    for k in cols)
              + " | " + " | ".join(f"{got[k]['confidence']:.2f}" for k in cols) + " |")
    print(f"\n| still | {head('confidence')} | {head('tempo source')} |\n|---|" + "---:|" * len(cols)
          + "---|" * len(cols))
    for name, got in rows["still"]:
        print(f"| {name} | " + " | ".join(f"{got[k]['confidence']:.2f}" for k in cols) + " | "
              + " | ".join(got[k].get("source", "") for k in cols) + " |")
    print(f"\n| measure | {' | '.join(label[k] or 'value' for k in cols)} | target |\n|---|" + "---:|" * len(cols)
          + "---|")

    def line(text: str, values, target: str) -> None:
        print(f"| {text} | " + " | ".join(values) + f" | {target} |")

    line(f"per-scene beat F, median of {len(scene_f[cols[0]])} scenes",
         [f"{statistics.median(scene_f[k]):.3f}" for k in cols], "≥ 0.9")
    line("cuts on a beat (±35 ms)", [f"{np.mean(cut_stats[k][0]):.3f}" for k in cols], "≥ 0.95")
    line("cuts on a downbeat (±35 ms)", [f"{np.mean(cut_stats[k][1]):.3f}" for k in cols], "≥ 0.70")
    line("impacts on a beat (±70 ms)", [f"{np.mean(cut_stats[k][2]):.3f}" for k in cols], "(reported)")
    line("slow bounce tempo within 4 %", [f"{np.mean(within[k]):.3f}" for k in cols], "≥ 0.90")
    line("stills: highest confidence", [f"{max(g[k]['confidence'] for _, g in rows['still']):.3f}" for k in cols],
         "< 0.2")


if __name__ == "__main__":
    sys.exit(main())
