"""The melody's structure on clips (issue 17's "before" and "after" figure): `v2m run` on synthetic clips, and the
structure metrics of each generated line against the corpus range (presets/structure_range.json).

Makes `--clips` clips with `v2m sample` (320×180; single tempi from 72 to 150 BPM and montages of several tempi,
edits and stills, 12–24 s), runs `v2m run` on the folder with the given model (default: the shipped one) and style,
and reads each clip's melody — the generated line, NAME.tokens.json decoded on its beat grid, phrases from
NAME.controls.json (the video's cuts) — with stages/evaluate/structure.py. Prints per clip, then per metric the
clips' median [p10–p90] beside the corpus', how many clips lie inside the corpus' p10–p90, the pooled breaths, and
the machine.

    .venv/bin/python bench/structure_clips.py [--clips 24] [--work /tmp/v2m-structure] [--model M] [--style pop]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
V2M = [sys.executable, "-m", "v2m.cli.main"]
SINGLE = [(72, 16), (84, 20), (90, 14), (96, 18), (100, 20), (104, 12), (112, 20), (120, 16), (128, 24), (132, 18),
          (140, 20), (150, 16), (80, 24), (116, 22)]
MONTAGES = ["84:8,110:8,132:8", "96:6,140:6,100:8", "edit:4,120:8,edit:4", "70:10,120:10", "128:6,still:3,128:9",
            "100:5,100:5,100:5,100:5", "edit:3,edit:4,edit:5,edit:4", "150:8,75:8", "110:12,edit:6", "90:7,126:7,90:7"]
SHOWN = ["bar_repeat_exact", "bar_repeat_transposed", "bar_varied", "bar_repeated_or_varied", "motif_recurrence",
         "melody_notes_per_beat", "phrase_start_rest", "other_bar_rest", "melody_bars"]


def make_clips(folder: Path, count: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    specs = []
    for i in range(count):
        if i % 2 == 0 and i // 2 < len(SINGLE):
            bpm, seconds = SINGLE[i // 2]
            specs.append((f"c{i:02d}_{bpm}bpm", ["--bpm", str(bpm), "--duration", str(seconds),
                                                  "--motion", ("bounce", "flash", "pan", "mixed")[i % 4]]))
        else:
            scenes = MONTAGES[(i // 2) % len(MONTAGES)]
            specs.append((f"c{i:02d}_montage", ["--scenes", scenes]))
    for k, (name, options) in enumerate(specs):
        subprocess.run([*V2M, "sample", str(folder / f"{name}.mp4"), "--width", "320", "--height", "180",
                        "--seed", str(k), "--if-missing", *options], check=True, capture_output=True)
    return [name for name, _ in specs]


def clip_metrics(out: Path, name: str) -> tuple[dict, list[int]]:
    """The structure metrics of the clip's generated line and its breath counts [phrase bars, after a breath, other
    bars, after a breath]."""
    from v2m.stages.evaluate.inputs import music_from_tokens
    from v2m.stages.evaluate.structure import breath_before, controls_phrases, melody_of, structure_metrics

    tokens = json.loads((out / f"{name}.tokens.json").read_text())["data"]
    controls = json.loads((out / f"{name}.controls.json").read_text())["data"]
    score = music_from_tokens(tokens).score
    metrics, _ = structure_metrics(score, controls["bars"])
    report = json.loads((out / f"{name}.report.json").read_text())["data"]
    metrics.update({k: report["melody"]["metrics"].get(k) for k in ("scale_consistency", "onset_f1")})
    metrics["beat_f1_heard"] = report["metrics"].get("beat_f1")
    melody = melody_of(score)
    breath = breath_before(melody)
    phrase = np.array(controls_phrases(melody, controls["bars"]), dtype=bool)
    first_bar = int(np.searchsorted(melody.bar_starts, melody.time[0], side="right") - 1)
    considered = np.arange(len(breath)) > max(first_bar, 0)
    at, other = considered & phrase, considered & ~phrase
    return metrics, [int(at.sum()), int(breath[at].sum()), int(other.sum()), int(breath[other].sum())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--work", type=Path, default=Path("/tmp/v2m-structure"))
    parser.add_argument("--model", default=None, help="model checkpoint (default: the shipped one)")
    parser.add_argument("--style", default=None, help="arrangement style (default: run's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-run", action="store_true", help="score the outputs already in WORK/out")
    args = parser.parse_args()
    from v2m.stages.evaluate.structure import RANGE_FILE
    from v2m.config import presets_dir

    clips, out = args.work / "clips", args.work / "out"
    started = time.perf_counter()
    names = make_clips(clips, args.clips)
    command = [*V2M, "run", str(clips), "-o", str(out), "--seed", str(args.seed), "--force"]
    command += ["--model", args.model] if args.model else []
    command += ["--style", args.style] if args.style else []
    run_started = time.perf_counter()
    if not args.skip_run:
        subprocess.run(command, check=True, capture_output=True)
    run_wall = time.perf_counter() - run_started
    rows, counts = {}, np.zeros(4, dtype=int)
    for name in names:
        rows[name], breaths = clip_metrics(out, name)
        counts += breaths
    corpus = json.loads((presets_dir() / RANGE_FILE).read_text())
    ranges = corpus["ranges"]["excerpt"]
    print(f"# structure_clips — {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; {len(names)} clips, `v2m run` {run_wall:.0f} s, all {time.perf_counter() - started:.0f} s;"
          f" model {args.model or 'presets/default.safetensors'}, style {args.style or 'default'}, seed {args.seed}")
    print(f"# corpus range: {corpus['made_by']}, {corpus['corpus']['pieces']} pieces, first {corpus['excerpt_seconds']:g} s")
    print("\n| clip | bars | exact | transposed | varied | repeated-or-varied | motif rec. | notes/beat | rest@phrase "
          "| rest elsewhere | in key |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    fmt = lambda v: "—" if v is None or not np.isfinite(v) else f"{v:.2f}"  # noqa: E731
    for name, m in rows.items():
        print(f"| {name} | {m['melody_bars']:.0f} | " + " | ".join(fmt(m[k]) for k in SHOWN[:-1]) +
              f" | {fmt(m['scale_consistency'])} |")
    print("\n| metric | clips: median [p10–p90] | clips at 0 | corpus, 20-s excerpts: median [p10–p90] | corpus at 0 "
          "| clips inside corpus p10–p90 | inside p25–p75 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for key in SHOWN + ["scale_consistency", "onset_f1", "beat_f1_heard"]:
        values = np.array([m[key] for m in rows.values() if m.get(key) is not None and np.isfinite(m[key])])
        if not values.size:
            continue
        p10, med, p90 = np.percentile(values, [10, 50, 90])
        r = ranges.get(key)
        inside = f"{int(((values >= r['p10']) & (values <= r['p90'])).sum())}/{values.size}" if r else "—"
        middle = f"{int(((values >= r['p25']) & (values <= r['p75'])).sum())}/{values.size}" if r else "—"
        corpus_cell = f"{r['median']:.3f} [{r['p10']:.3f}–{r['p90']:.3f}] | {r['zero_share']:.2f}" if r else "— | —"
        print(f"| {key} | {med:.3f} [{p10:.3f}–{p90:.3f}] | {np.mean(values == 0):.2f} | {corpus_cell} | {inside} "
              f"| {middle} |")
    pooled = corpus.get("pooled_excerpt", {})
    print(f"\npooled breaths: before {counts[1]} of {counts[0]} phrase-start bars ({counts[1] / max(counts[0], 1):.3f}) and "
          f"{counts[3]} of {counts[2]} other bars ({counts[3] / max(counts[2], 1):.3f}); corpus (phrases read off the music): "
          f"{pooled.get('phrase_start_rest', float('nan')):.3f} and {pooled.get('other_bar_rest', float('nan')):.3f}")


if __name__ == "__main__":
    main()
