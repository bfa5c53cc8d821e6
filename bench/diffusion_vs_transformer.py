"""The diffusion backend beside the transformer (issue 20), in one run on one machine.

1. **Side by side on clips**: makes `--clips` synthetic clips (bench/structure_clips.py's set: single tempi 72–150
   BPM and montages of tempi, edits and stills), runs `v2m run` on the folder once per backend (same seed, same
   style), and reads each clip's report (stages/evaluate): the beats heard in the rendered mix against the
   video's (beat F), the melody's onsets against the video's beats (onset F), control accuracy (density and beat
   strength measured on the music vs requested), music statistics of the arranged piece (pitch-class entropy,
   scale and groove consistency, polyphony; the corpus range beside them: the same statistics of 16-bar
   excerpts of the diffusion roll set's multi-part pieces), the melody's repeated bars (beside presets/structure_range.json's
   corpus range of 20 s excerpts); and a multi-track check
   on each NAME.mid: the share of bass notes below the melody sounding at their onset, the share of
   accompaniment (harmony) notes between bass and melody, and the accompaniment's mean voices.
2. **Wall time**: `generate` for a 30 s clip on CPU, both backends (median of `--repeats`), and the diffusion
   backend for a 4 min 45 s piece (DiffRhythm's anchor length).
3. **Curves** (diffusion, on the first `--curve-clips` clips' controls): DDIM steps 10/20/50 vs the melody's and all
   parts' onset F against the video's beats, control accuracy and time; guidance 1/1.5/2/3/5 vs the same.

    .venv/bin/python bench/diffusion_vs_transformer.py [--clips 20] [--work /tmp/v2m-diffusion]
        [--diffusion presets/diffusion.safetensors] [--transformer presets/default.safetensors] [--skip-run]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from structure_clips import make_clips  # noqa: E402

V2M = [sys.executable, "-m", "v2m.cli.main"]
STATS = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "polyphony", "empty_bar_rate")
REPORTED = ("beat_f1", "onset_f1", "melody_onset_f1", "density_accuracy", "density_within1", "strength_accuracy",
            *STATS, "bar_repeated_or_varied", "bass_below", "acc_between", "acc_voices")


def multitrack(midi: Path) -> dict:
    """Bass below the melody, accompaniment between bass and melody, accompaniment voices (see the docstring)."""
    import symusic

    score = symusic.Score(str(midi)).to("second")
    tracks = {t.name: t.notes.numpy() for t in score.tracks if not t.is_drum}

    def sounding(notes, t):
        on = (notes["time"] <= t + 1e-6) & (notes["time"] + notes["duration"] > t + 1e-6)
        return notes["pitch"][on]

    out = {}
    melody, bass, acc = tracks.get("melody"), tracks.get("bass"), tracks.get("harmony")
    if melody is not None and bass is not None and len(bass["time"]):
        below = [int(p < m.min()) for t, p in zip(bass["time"], bass["pitch"]) if len(m := sounding(melody, t))]
        out["bass_below"] = float(np.mean(below)) if below else np.nan
    if acc is not None and len(acc["time"]) and melody is not None and bass is not None:
        between, voices = [], []
        for t in np.unique(acc["time"]):
            top, low = sounding(melody, t), sounding(bass, t)
            here = sounding(acc, t)
            voices.append(len(here))
            if len(top) and len(low):
                between += [int(low.max() <= p <= top.max()) for p in acc["pitch"][acc["time"] == t]]
        out["acc_between"] = float(np.mean(between)) if between else np.nan
        out["acc_voices"] = float(np.mean(voices)) if voices else np.nan
    return out


def written_controls(tokens: dict, controls: dict) -> dict:
    """Control accuracy of what the model wrote (the line, or every part; no arrangement): per-bar density and beat
    strength measured with the encoder's code against the controls the video asked for."""
    from v2m.stages.decode.render import music_score
    from v2m.stages.evaluate.report import control_accuracy, measured_controls
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer()
    score, _ = music_score({**tokens, "arrange": None}, vocab)
    accuracy = control_accuracy(controls["bars"], measured_controls(score, None))
    return {k: accuracy.get(k) for k in ("density_accuracy", "density_within1", "strength_accuracy")}


def clip_row(out: Path, name: str) -> dict:
    from v2m.stages.evaluate.inputs import music_from_tokens
    from v2m.stages.evaluate.structure import structure_metrics

    report = json.loads((out / f"{name}.report.json").read_text())["data"]
    metrics = report["metrics"]
    row = {k: metrics.get(k) for k in ("beat_f1", "onset_f1", *STATS)}
    row["melody_onset_f1"] = (report.get("melody") or {}).get("metrics", {}).get("onset_f1")
    tokens = json.loads((out / f"{name}.tokens.json").read_text())["data"]
    controls = json.loads((out / f"{name}.controls.json").read_text())["data"]
    row.update(written_controls(tokens, controls))
    structure, _ = structure_metrics(music_from_tokens(tokens).score, controls["bars"])
    row["bar_repeated_or_varied"] = structure.get("bar_repeated_or_varied")
    row.update(multitrack(out / f"{name}.mid"))
    return row


def corpus_range(rolls: Path, pieces: int = 200, bars: int = 16) -> dict:
    """p10/median/p90 of the music statistics of `bars`-bar excerpts of the roll set's pieces (evenly spaced)."""
    import symusic
    from safetensors.numpy import load_file

    from v2m.stages.evaluate.music_metrics import music_statistics

    a = load_file(str(rolls))
    values: dict[str, list] = {k: [] for k in STATS}
    total = len(a["piece_steps"])
    for i in np.linspace(0, total - 1, min(pieces, total)).astype(int):
        notes = a["notes"][a["note_offsets"][i]:a["note_offsets"][i + 1]].astype(int)
        bar_step = a["bar_step"][a["bar_offsets"][i]:a["bar_offsets"][i + 1]]
        end = int(bar_step[bars]) if len(bar_step) > bars else int(a["piece_steps"][i])
        score = symusic.Score(4)
        score.tempos.append(symusic.Tempo(0, 100.0))
        score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
        for role in range(3):
            track = symusic.Track(("melody", "bass", "harmony")[role], 0, False)
            for s, d, p, r in notes[(notes[:, 3] == role) & (notes[:, 0] < end)]:
                track.notes.append(symusic.Note(int(s), int(d), int(p), 80))
            score.tracks.append(track)
        stats = music_statistics(score)
        for k in STATS:
            if stats.get(k) is not None and np.isfinite(stats[k]):
                values[k].append(stats[k])
    return {k: np.percentile(v, [10, 50, 90]).tolist() for k, v in values.items() if v}


def onset_f(controls: dict, data: dict, vocab, melody_only: bool) -> float:
    """Onset F-measure of the generated notes (melody, or every part) against the video's beats."""
    from v2m.stages.decode.render import music_score
    from v2m.stages.evaluate.beat_metrics import beat_f_measure, merge_onsets

    score, melody = music_score({**data, "arrange": None}, vocab)
    seconds = (melody if melody_only else score).to("second")
    onsets = np.unique(np.concatenate([t.notes.numpy()["time"] for t in seconds.tracks] or [np.zeros(0)]))
    return float(beat_f_measure(controls["beat_times"], merge_onsets(onsets)).f1) if len(onsets) else 0.0


CURVE_COLUMNS = ("melody onset F", "all parts onset F", "density within 1", "strength acc.", "in scale", "pc entropy",
                 "repeated/varied bars", "motif recurrence", "phrase-start rest", "generate s")


def curves(model_path: str, controls_files: list[Path], args) -> None:
    """Steps, guidance and the structure plan on/off, generated in process on the clips' controls."""
    from v2m.stages.decode.render import music_score
    from v2m.stages.evaluate.inputs import music_from_tokens
    from v2m.stages.evaluate.music_metrics import music_statistics
    from v2m.stages.evaluate.report import control_accuracy, measured_controls
    from v2m.stages.evaluate.structure import structure_metrics
    from v2m.stages.generate.diffusion import DiffusionSettings, generate_diffusion
    from v2m.stages.session import open_model

    session = open_model(model_path, device="cpu")
    model, vocab = session.loaded.model, session.vocab
    all_controls = [json.loads(p.read_text())["data"] for p in controls_files]

    def measure(steps: int, guidance: float, structure: bool = True) -> list[float]:
        rows = []
        for k, controls in enumerate(all_controls):
            started = time.perf_counter()
            data = generate_diffusion(model, vocab, json.loads(json.dumps(controls)),
                                      DiffusionSettings(steps, guidance, structure=structure), seed=args.seed + k)
            seconds = time.perf_counter() - started
            score, _ = music_score({**data, "arrange": None}, vocab)
            accuracy = control_accuracy(controls["bars"], measured_controls(score, vocab.to_json()))
            stats = music_statistics(score)
            shape, _ = structure_metrics(music_from_tokens(data).score, controls["bars"])
            rows.append([onset_f(controls, data, vocab, True), onset_f(controls, data, vocab, False),
                         accuracy.get("density_within1", np.nan), accuracy.get("strength_accuracy", np.nan),
                         stats["scale_consistency"], stats["pitch_class_entropy"], shape["bar_repeated_or_varied"],
                         shape["motif_recurrence"], shape["phrase_start_rest"], seconds])
        return np.nanmedian(np.array(rows, float), axis=0).tolist()

    def table(title: str, label: str, settings: list[tuple[str, tuple]], clips: int) -> None:
        nonlocal all_controls
        every, all_controls = all_controls, all_controls[:clips]
        print(f"\n## {title} (median over {len(all_controls)} clips' controls, in process, CPU)")
        print(f"\n| {label} | " + " | ".join(CURVE_COLUMNS) + " |")
        print("|---:" * (len(CURVE_COLUMNS) + 1) + "|")
        for name, setting in settings:
            m = measure(*setting)
            print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in m[:-1]) + f" | {m[-1]:.2f} |", flush=True)
        all_controls = every

    table(f"Structure plan off vs on ({args.steps} steps, guidance {args.guidance})", "plan followed",
          [("no", (args.steps, args.guidance, False)), ("yes", (args.steps, args.guidance, True))], len(all_controls))
    sweep = args.sweep_clips or len(all_controls)
    table(f"Steps vs quality (guidance {args.guidance})", "DDIM steps",
          [(str(steps), (steps, args.guidance)) for steps in (10, 20, 50)], sweep)
    table(f"Guidance vs rhythm agreement ({args.steps} steps)", "guidance",
          [(f"{g:g}", (args.steps, g)) for g in (1.0, 2.0, 3.0, 5.0)], sweep)


def timings(args, controls_30s: Path) -> None:
    """generate on a 30 s clip's controls, both backends (CPU, subprocess wall incl. start-up and model load), and
    the diffusion backend for 4 min 45 s of music (--bars at the clip's tempo)."""
    controls = json.loads(controls_30s.read_text())["data"]
    beat = float(np.median(np.diff(controls["beat_times"])))
    bars = int(round(285.0 / (beat * int(controls["meter"]))))
    work = args.work / "timing"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, model, extra in (("transformer, 30 s", args.transformer, []),
                                (f"diffusion {args.steps} steps, 30 s", args.diffusion, ["--steps", str(args.steps)]),
                                (f"diffusion {args.steps} steps, 4 min 45 s ({bars} bars)", args.diffusion,
                                 ["--steps", str(args.steps), "--bars", str(bars)]),
                                (f"transformer, 4 min 45 s ({bars} bars)", args.transformer, ["--bars", str(bars)])):
        times = []
        for r in range(args.repeats if "30 s" in label else 1):
            started = time.perf_counter()
            subprocess.run([*V2M, "generate", str(controls_30s), "--model", model, "--device", "cpu", "--seed", "0",
                            "-o", str(work / "t.json"), "--force", *extra], check=True, capture_output=True)
            times.append(time.perf_counter() - started)
        rows.append((label, statistics.median(times), len(times)))
    print(f"\n## generate wall time on CPU (`v2m generate`, process start and model load included; {controls_30s.name}, "
          f"{controls.get('duration')} s, {beat * 60 and 60 / beat:.0f} BPM)")
    print("\n| what | median s | runs |")
    print("|---|---:|---:|")
    for label, seconds, n in rows:
        print(f"| {label} | {seconds:.1f} | {n} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=20)
    parser.add_argument("--curve-clips", type=int, default=6, help="clips of the structure on/off table")
    parser.add_argument("--sweep-clips", type=int, default=0, help="clips of the steps and guidance tables "
                        "(default: --curve-clips)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/v2m-diffusion"))
    parser.add_argument("--diffusion", default=str(ROOT / "presets" / "diffusion.safetensors"))
    parser.add_argument("--transformer", default=str(ROOT / "presets" / "default.safetensors"))
    parser.add_argument("--rolls", type=Path, default=ROOT / ".carry" / "rolls.safetensors")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=3.0, help="the diffusion backend's (generate's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-run", action="store_true", help="score the outputs already in WORK/out-*")
    parser.add_argument("--timing-controls", type=Path, default=None,
                        help="the controls artifact timed (default: the longest clip's)")
    parser.add_argument("--first", type=int, default=0, help="score only the first N clips")
    parser.add_argument("--reuse", action="store_true", help="keep a backend's outputs when every clip has a report")
    parser.add_argument("--only", choices=("table", "curves", "timing"), default=None)
    args = parser.parse_args()
    clips = args.work / "clips"
    names = make_clips(clips, args.clips)
    if args.first:  # score only the first clips (their outputs must be in WORK/out-*; with --reuse)
        names = names[:args.first]
    print(f"# diffusion_vs_transformer — {platform.platform()}, {platform.machine()}, {os.cpu_count()} CPUs, python "
          f"{platform.python_version()}; {len(names)} clips, seed {args.seed}; diffusion {Path(args.diffusion).name} "
          f"(steps {args.steps}, guidance {args.guidance}), transformer {Path(args.transformer).name}")
    backends = {"transformer": (args.transformer, []),
                "diffusion": (args.diffusion, ["--steps", str(args.steps), "--guidance", str(args.guidance)])}
    if args.only in (None, "table"):
        results, walls = {}, {}
        for backend, (model, extra) in backends.items():
            out = args.work / f"out-{backend}"
            started = time.perf_counter()
            done = all((out / f"{n}.report.json").is_file() for n in names)
            if not args.skip_run and not (args.reuse and done):
                subprocess.run([*V2M, "run", str(clips), "-o", str(out), "--seed", str(args.seed), "--model", model,
                                "--device", "cpu", "--force", *extra], check=True, capture_output=True)
            walls[backend] = time.perf_counter() - started
            results[backend] = [clip_row(out, name) for name in names]
        corpus = corpus_range(args.rolls) if args.rolls.is_file() else {}
        shape = json.loads((ROOT / "presets" / "structure_range.json").read_text())["ranges"]["excerpt"]
        corpus["bar_repeated_or_varied"] = [shape["bar_repeated_or_varied"][k] for k in ("p10", "median", "p90")]
        print(f"\n`v2m run` on the {len(names)} clips: " + ", ".join(f"{b} {w:.0f} s" for b, w in walls.items()))
        print("\n| metric (median over clips [p10–p90]) | transformer | diffusion | corpus p10 / median / p90 |")
        print("|---|---:|---:|---:|")
        for key in REPORTED:
            cells = []
            for backend in backends:
                v = np.array([r.get(key) for r in results[backend]], dtype=float)
                v = v[np.isfinite(v)]
                cells.append(f"{np.median(v):.3f} [{np.percentile(v, 10):.3f}–{np.percentile(v, 90):.3f}]"
                             if v.size else "—")
            c = corpus.get(key)
            print(f"| {key} | {cells[0]} | {cells[1]} | " + (" / ".join(f"{x:.3f}" for x in c) if c else "—") + " |")
    if args.only in (None, "curves"):
        out = args.work / "out-transformer"  # the clips' controls (the same for both backends)
        curves(args.diffusion, [out / f"{n}.controls.json" for n in names[:args.curve_clips]], args)
    if args.only in (None, "timing") and args.timing_controls:
        timings(args, args.timing_controls)
    elif args.only in (None, "timing"):
        longest = max(names, key=lambda n: json.loads((args.work / "out-transformer" / f"{n}.controls.json")
                                                      .read_text())["data"].get("duration", 0))
        timings(args, args.work / "out-transformer" / f"{longest}.controls.json")


if __name__ == "__main__":
    main()
