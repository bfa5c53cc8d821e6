"""Rhythm agreement of `v2m run`'s music with the video, against two baselines, on synthetic ground-truth videos.

Same videos, same model, same seed, same run:

- ours: the video's rhythm → controls (density, accents, phrases, velocity, mode, register) → generate with
  the video's beat grid as the tempo map (what `v2m run` does); "best-of-N" is `v2m run --candidates N`: N
  decoded as one batch, the one whose onsets best match the *extracted* beats kept (`generate --rerank`);
- fixed120: the same model at a fixed 120 BPM grid from 0 s with neutral controls (median density, every beat
  weak, one phrase, velocity 80): no video information at all, as Video2Music's fixed-tempo output;
- random: our controls, but on a random beat grid (intervals drawn around the video's period, ±50 %).

Music is scored against the videos' ground-truth beats (core/samples.py), for the generated line alone
("melody") and after the arranger ("full"). Music statistics of the generated lines are compared with the
corpus's test split (decoded the same way). Prints a table; the ratios ours/baseline are what matter.

    python bench/run_rhythm.py --model presets/default.safetensors --videos 20 [--corpus CORPUS/] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

MOTIONS = ("bounce", "flash", "pan", "mixed")
RHYTHM_KEYS = ("beat_f1", "bhs", "bcs", "beat_align")
MUSIC_KEYS = ("pitch_class_entropy", "scale_consistency", "groove_consistency")


def make_videos(work: Path, count: int, duration: float) -> list[tuple[Path, dict]]:
    """`count` synthetic clips, tempos spread over 70–160 BPM, every motion kind; cached in `work`."""
    import json

    from v2m.samples import SampleSpec, write_video

    out = []
    for i in range(count):
        path = work / f"clip{i:02d}.mp4"
        truth_path = path.with_suffix(".truth.json")
        spec = SampleSpec(bpm=float(70 + (i * 37) % 91), duration=duration, width=320, height=180, fps=30.0, seed=i,
                          motion=MOTIONS[i % len(MOTIONS)], audio=False)
        if not truth_path.exists():
            truth = write_video(path, spec)
            truth_path.write_text(json.dumps(truth))
        out.append((path, json.loads(truth_path.read_text())))
    return out


def fixed_120(controls: dict, duration: float) -> dict:
    """Baseline (a): a 120 BPM grid from 0 s and neutral controls; nothing from the video."""
    meter = 4
    beats = [round(0.5 * i, 3) for i in range(int(duration / 0.5) + meter + 1)]
    n_density = max(b["density"] for b in controls["bars"]) + 1
    bars = [{"start": beats[i], "density": max(1, n_density // 2), "strength": [1] * meter, "phrase": i == 0,
             "velocity": 80} for i in range(0, len(beats) - meter, meter)]
    return dict(controls, meter=meter, tempo_bpm=120.0, tempo_class=3, mode="major", register="mid", beat_times=beats,
                downbeats=[b["start"] for b in bars], bars=bars)


def random_grid(controls: dict, seed: int) -> dict:
    """Baseline (b): the video's controls on a random beat grid (each interval 0.5–1.5 × the video's period)."""
    rng = np.random.default_rng(seed)
    beats = np.asarray(controls["beat_times"])
    period = float(np.median(np.diff(beats)))
    times = [float(beats[0])]
    while len(times) < len(beats):
        times.append(times[-1] + period * float(rng.uniform(0.5, 1.5)))
    meter = int(controls["meter"])
    downbeats = [round(t, 3) for t in times[::meter]][:len(controls["bars"])]
    bars = [dict(b, start=d) for b, d in zip(controls["bars"], downbeats)]
    return dict(controls, beat_times=[round(t, 3) for t in times], downbeats=downbeats, bars=bars)


def score_music(score, truth: dict) -> dict:
    from v2m.stages import metrics_rhythm as mr
    from v2m.stages.evaluate import music_from_score

    music = music_from_score(score)
    onsets = music.onsets[music.onsets <= truth["duration"] + mr.F_WINDOW]
    metrics, _ = mr.rhythm_metrics(truth["beats"], onsets, truth["duration"])
    return {k: metrics[k] for k in RHYTHM_KEYS}


def corpus_statistics(corpus: Path, vocab, limit: int = 200) -> list[dict]:
    """Music statistics of the corpus's test-split pieces (decoded from tokens, like the generated music)."""
    import json

    from safetensors.numpy import load_file

    from v2m.stages.metrics_music import music_statistics
    from v2m.stages.tokens import decode_ids

    index = json.loads((corpus / "index.json").read_text())["data"]
    rows = []
    for shard in index["splits"]["test"]["shards"]:
        tensors = load_file(str(corpus / shard))
        tokens, offsets = tensors["tokens"].astype(np.int64), tensors["offsets"]
        for p in range(len(offsets) - 1):
            if len(rows) >= limit:
                return rows
            try:
                rows.append(music_statistics(decode_ids(tokens[offsets[p]:offsets[p + 1]].tolist(), vocab)))
            except Exception:  # a piece without pitched notes has no statistics; counted by its absence
                continue
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: presets/default.safetensors)")
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder for the test-split statistics")
    parser.add_argument("--videos", type=int, default=20)
    parser.add_argument("--duration", type=float, default=16.0, help="seconds per video")
    parser.add_argument("--work", type=Path, default=Path("bench/.work/run_rhythm"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--style", default="pop")
    parser.add_argument("--candidates", type=int, default=4, help="also: best of N by beat F vs the extracted beats")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)

    import torch

    from v2m.stages.arrange import arrange
    from v2m.stages.controls import controls_from_rhythm
    from v2m.stages.generate import GenerateConfig, generate, open_model
    from v2m.stages.metrics_music import music_statistics
    from v2m.stages.rhythm import extract_rhythm
    from v2m.stages.tokens import decode_ids

    args.work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    videos = make_videos(args.work, args.videos, args.duration)
    loaded, vocab = open_model(args.model)
    config = GenerateConfig(seed=args.seed)
    rerank = GenerateConfig(seed=args.seed, num_samples=args.candidates)
    rows: dict[str, list[dict]] = {}
    stats: list[dict] = []
    for i, (path, truth) in enumerate(videos):
        truth = dict(truth, duration=args.duration)
        rhythm = extract_rhythm(str(path))["data"]
        ours = controls_from_rhythm(rhythm, vocab)
        methods = [("ours", ours, config), (f"ours best-of-{args.candidates}", ours, rerank),
                   ("fixed120", fixed_120(ours, args.duration), config),
                   ("random", random_grid(ours, args.seed + i), config)]
        for method, controls, sampling in methods:
            # best-of-N reranks on the *extracted* beats (all `run` knows); every row is scored on the truth
            tokens = generate(loaded.model, vocab, controls, sampling, rerank=sampling.num_samples > 1)
            melody = decode_ids(tokens["ids"], vocab, beat_times=controls["beat_times"],
                                downbeats=controls["downbeats"], velocities=[b.get("velocity") for b in controls["bars"]])
            full = arrange(melody, controls, args.style, seed=args.seed)
            rows.setdefault(f"{method} melody", []).append(score_music(melody, truth))
            rows.setdefault(f"{method} full", []).append(score_music(full, truth))
            if method == "ours":
                stats.append(music_statistics(melody))
        print(f"[{i + 1}/{len(videos)}] {path.name} {truth['bpm']:.0f} BPM: ours beat F "
              f"{rows['ours melody'][-1]['beat_f1']:.3f} (full {rows['ours full'][-1]['beat_f1']:.3f}), fixed120 "
              f"{rows['fixed120 melody'][-1]['beat_f1']:.3f}, random {rows['random melody'][-1]['beat_f1']:.3f}",
              file=sys.stderr)

    print(f"\nrun rhythm agreement vs ground-truth beats: {len(videos)} synthetic videos × {args.duration:g} s, "
          f"model {Path(args.model or 'presets/default.safetensors').name}, style {args.style}, seed {args.seed}")
    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; wall {time.perf_counter() - started:.0f} s\n")
    print(f"| music | {' | '.join(RHYTHM_KEYS)} | ours' beat F ÷ this |")
    print("|---|" + "---|" * (len(RHYTHM_KEYS) + 1))
    for part in ("melody", "full"):
        ours_f = np.mean([r["beat_f1"] for r in rows[f"ours {part}"]])
        for method in ("ours", f"ours best-of-{args.candidates}", "fixed120", "random"):
            table = rows[f"{method} {part}"]
            means = [np.mean([r[k] for r in table]) for k in RHYTHM_KEYS]
            ratio = ours_f / means[0] if means[0] else float("inf")
            print(f"| {method} {part} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {ratio:.2f} |")
    print("\nmusic statistics of the generated lines (ours) vs the corpus test split: mean [5th–95th percentile]")
    corpus = corpus_statistics(args.corpus, vocab) if args.corpus else []
    print("| statistic | generated | corpus test |")
    print("|---|---|---|")
    for key in MUSIC_KEYS:
        def cell(values):
            values = [v[key] for v in values if key in v and np.isfinite(v[key])]
            if not values:
                return "—"
            return f"{np.mean(values):.3f} [{np.percentile(values, 5):.3f}–{np.percentile(values, 95):.3f}]"
        print(f"| {key} | {cell(stats)} | {cell(corpus)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
