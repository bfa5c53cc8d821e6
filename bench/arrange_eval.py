"""Evaluate the arranger (issue 9): chord estimation, bass vs chords, drums on cuts, rhythm on vs off.

    .venv/bin/python bench/arrange_eval.py [--chorales 20] [--pieces 6] [--seed 0]

Prints, measured side by side in one run on this machine:

1. chord accuracy on constructed diatonic progressions (24 keys; block chords and a single melodic
   line with neighbour tones), full estimator vs no diatonic prior vs no Viterbi smoothing;
2. chord accuracy per beat on Bach chorales against the Riemenschneider roman-numeral analyses
   shipped in music21's corpus (expert labels: Tymoczko et al.), all four voices and soprano only,
   plus Krumhansl–Schmuckler key accuracy against the analyses' opening key;
3. per style on drifting synthetic beat grids with scene cuts off the grid and still bars: bass notes in
   the bar's chord on strong beats, crash within 50 ms of each cut, and rhythm agreement (beat F, BHS,
   Beat Align from stages/evaluate/beat_metrics.py) of the arranged piece vs the melody alone vs a fixed
   120 BPM quarter-note pulse (the Video2Music-style baseline);
4. the same cut check on a video rendered frame by frame (a textured object bouncing on a beat, hard cuts
   between scenes) run through the real extract-rhythm code (stages/rhythm/extract.py) and, when a tokenizer
   is installed, encode-tokens' controls_from_rhythm.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.stages.arrange.test_arranger import grid_controls, melody_on_grid  # noqa: E402  (constructed inputs, shared with tests)
from v2m.stages.arrange.arranger import arrange_detailed
from v2m.stages.arrange.harmony import QUALITIES, Key, beat_bounds, estimate_chords, find_key, segment_bounds
from v2m.stages.arrange.styles import style_names

VARIANTS = {"full": {}, "no prior": {"prior_weight": 0.0}, "no smoothing": {"change_penalty": 0.0, "off_downbeat_penalty": 0.0}}
def table(title: str, header: list[str], rows: list[list]) -> None:
    print(f"\n## {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")


# functional harmony: tonic (T), subdominant (S) and dominant (D) chords of each mode, as (root, quality)
FUNCTIONS = {
    "major": {"T": [(0, "maj"), (9, "min"), (4, "min")], "S": [(5, "maj"), (2, "min")], "D": [(7, "maj"), (11, "dim")]},
    "minor": {"T": [(0, "min"), (8, "maj"), (3, "maj")], "S": [(5, "min"), (2, "dim")], "D": [(7, "maj"), (11, "dim")]},
}
# what the arranger plays for each estimated chord: a bar-long vii° is played as V7 (the bass on the dominant)
PLAYED = {(11, "dim"): {7, 11, 2, 5}
}
NEXT = {"T": "TSD", "S": "SD", "D": "DT"}  # the usual T → S → D → T cycle, with repeats


def random_progression(rng, mode: str, bars: int = 8) -> list[tuple[int, str]]:
    """A progression from a T→S→D→T Markov chain that starts on the tonic and ends V–I."""
    chords = FUNCTIONS[mode]
    functions = ["T"]
    while len(functions) < bars - 2:
        functions.append(str(rng.choice(list(NEXT[functions[-1]]))))
    chosen = [chords[f][0] if i == 0 else chords[f][int(rng.integers(len(chords[f])))] for i, f in enumerate(functions)]
    return chosen + [chords["D"][0], chords["T"][0]]


def neighbour(pitch: int, tonic: int, mode: str) -> int:
    """The next scale degree above `pitch` in the key (harmonic minor): a diatonic upper neighbour."""
    scale = Key(tonic % 12, mode).scale()
    step = 1
    while (pitch + step) % 12 not in scale:
        step += 1
    return pitch + step


def constructed_notes(progression, tonic: int, block: bool, mode: str = "major", beat: float = 0.5) -> np.ndarray:
    """Block chords (with the root an octave below), or a line: root, third, fifth, upper neighbour of the root."""
    rows = []
    for bar, (root, quality) in enumerate(progression):
        tones = [60 + (tonic + root) % 12 + iv for iv in QUALITIES[quality]]
        start = bar * 4 * beat
        if block:
            rows += [(start, start + 4 * beat, p, 80) for p in [tones[0] - 12] + tones]
        else:
            for k, p in enumerate([tones[0], tones[1], tones[2], neighbour(tones[0] + 12, tonic, mode)]):
                rows.append((start + k * beat, start + (k + 0.9) * beat, p, 80))
    return np.array(rows, dtype=float)


def constructed_accuracy(seed: int) -> list[list]:
    rng = np.random.default_rng(seed)
    cases = [(mode, tonic, random_progression(rng, mode)) for mode in ("major", "minor") for tonic in range(12) for _ in range(2)]
    rows = []
    for block in (True, False):
        for name, options in VARIANTS.items():
            correct = total = keys = 0
            for mode, tonic, progression in cases:
                notes = constructed_notes(progression, tonic, block, mode)
                downbeats = [2.0 * i for i in range(len(progression))]
                bounds = segment_bounds(downbeats, [0.5 * i for i in range(4 * len(progression))], 2.0 * len(progression))
                chords = estimate_chords(notes, bounds, downbeats=downbeats, **options)
                truth = [((tonic + r) % 12, q) for r, q in progression]
                correct += sum((c.root, c.quality) == t for c, t in zip(chords, truth))
                total += len(truth)
                keys += find_key(notes) == Key(tonic, mode)
            rows.append(["block chords" if block else "melody line", name, len(cases), total, correct / total, keys / len(cases)])
    return rows


# ---------------------------------------------------------------- Bach chorales

def chorale_cases(count: int):
    """(name, notes SATB, notes soprano, per-beat truth [(root, quality)], beat times s, opening key, music21 score).

    Quarter notes are beats, at 120 BPM (0.5 s)."""
    from music21 import converter, corpus, roman

    folder = Path(corpus.__file__).resolve().parent / "bach" / "choraleAnalyses"
    for path in sorted(folder.glob("riemenschneider*.rntxt")):
        if count <= 0:
            return
        header = path.read_text(errors="replace")
        bwv = next((line.split(":", 1)[1].strip() for line in header.splitlines() if line.startswith("BWV:")), None)
        if not bwv:
            continue
        try:
            analysis = converter.parse(str(path), format="romantext")
            score = corpus.parse(f"bach/bwv{bwv}")
        except Exception:  # noqa: BLE001 - a chorale music21 cannot pair is skipped, and counted below
            continue
        numerals = list(analysis.flatten().getElementsByClass(roman.RomanNumeral))
        quality = {"major": "maj", "minor": "min", "diminished": "dim"}
        by_measure: dict[int, list] = {}
        for numeral in numerals:
            by_measure.setdefault(numeral.measureNumber, []).append((float(numeral.beat), numeral))
        # align by measure number and beat (the analyses and the scores disagree on pickup lengths, so
        # flat offsets would drift by a beat); a chord holds until the next numeral
        truth, beats, current = [], [], None
        for measure in score.parts[0].getElementsByClass("Measure"):
            pad = float(measure.paddingLeft or 0.0)
            for k in range(int(round(float(measure.duration.quarterLength)))):
                position = 1.0 + pad + k
                here = [r for b, r in by_measure.get(measure.number, []) if b <= position + 1e-6]
                current = here[-1] if here else current
                truth.append((current.root().pitchClass, quality.get(current.quality)) if current is not None else None)
                beats.append(float(measure.offset) + k)
        beats = np.array(beats)
        rows_all, rows_top = [], []
        for index, part in enumerate(score.parts):
            for n in part.flatten().notes:
                for p in n.pitches:
                    row = (float(n.offset) * 0.5, float(n.offset + n.quarterLength) * 0.5, p.midi, 80)
                    rows_all.append(row)
                    if index == 0:
                        rows_top.append(row)
        key = numerals[0].key if numerals else None
        opening = Key(key.tonic.pitchClass, key.mode) if key is not None else None
        count -= 1
        yield path.stem, np.array(rows_all), np.array(rows_top), truth, beats * 0.5, opening, score


def chorale_accuracy(count: int) -> tuple[list[list], int, int, list]:
    """Accuracy rows, keys found, chorales scored, and the chorales as symusic Scores (for calibration)."""
    import symusic
    from music21.midi import translate

    stats: dict[tuple[str, str], list[int]] = {}
    key_hits = pieces = 0
    scores = []
    for name, satb, soprano, truth, beat_times, opening, score in chorale_cases(count):
        pieces += 1
        try:
            scores.append(symusic.Score.from_midi(translate.streamToMidiFile(score).writestr()))
        except Exception:  # noqa: BLE001 - music21 cannot expand some repeat marks; that chorale is not used for calibration
            pass
        end = float(beat_times[-1]) + 0.5
        key_hits += find_key(satb) == opening
        for voices, notes in (("SATB", satb), ("soprano", soprano)):
            for variant, options in VARIANTS.items():
                chords = estimate_chords(notes, beat_bounds(list(beat_times), end), downbeats=None, **options)
                cell = stats.setdefault((voices, variant), [0, 0, 0])
                for chord, label in zip(chords, truth):
                    if label is None or label[1] is None:
                        continue  # augmented / unlabelled beats are not scored
                    cell[0] += 1
                    cell[1] += chord.root == label[0]
                    cell[2] += (chord.root, chord.quality) == label
    rows = [[voices, variant, pieces, n, root / n, exact / n] for (voices, variant), (n, root, exact) in stats.items()]
    return rows, key_hits, pieces, scores


# ---------------------------------------------------------------- arranger on synthetic grids

# one-beat rhythm cells (onset, length) in beats, with how often a line uses them: quarter, two eighths,
# dotted eighth + sixteenth, an off-beat eighth, a rest, a half note (covers the next beat too)
CELLS = [([(0.0, 1.0)], 0.3), ([(0.0, 0.5), (0.5, 0.5)], 0.25), ([(0.0, 0.75), (0.75, 0.25)], 0.1),
         ([(0.5, 0.5)], 0.1), ([], 0.1), ([(0.0, 2.0)], 0.15)]


def rhythmic_melody(controls: dict, progression, rng):
    """A melody line on the controls' grid with varied rhythm (CELLS) and rests, the stand-in for a
    generated line: chord tones on beats, a diatonic neighbour on off-beats. Second-based Score."""
    import symusic

    beats = controls["beat_times"] + [controls["duration"]]
    meter = controls["meter"]
    track = symusic.Track("generated", 0, False, ttype="second")
    weights = np.array([w for _, w in CELLS])
    skip = False
    for k in range(len(beats) - 1):
        if skip:
            skip = False
            continue
        root, quality = progression[(k // meter) % len(progression)]
        tones = [60 + root + iv for iv in QUALITIES[quality]]
        cell = CELLS[int(rng.choice(len(CELLS), p=weights / weights.sum()))][0]
        for onset, length in cell:
            position = k + onset
            stop = min(k + onset + length, len(beats) - 1)
            time = float(np.interp(position, np.arange(len(beats)), beats))
            end = float(np.interp(stop, np.arange(len(beats)), beats))
            pitch = int(rng.choice(tones)) if onset == 0.0 else neighbour(tones[0], 0, "major")
            track.notes.append(symusic.Note(time, max(end - time, 0.05) * 0.95, pitch, 80, ttype="second"))
            skip = length > 1.0 and k % meter != meter - 1
    score = symusic.Score(480, ttype="second")
    # the grid as the tempo map (a quarter note per video beat), as decode_ids makes it
    for k in range(len(beats) - 1):
        score.tempos.append(symusic.Tempo(beats[k], qpm=60.0 / (beats[k + 1] - beats[k]), ttype="second"))
    score.tracks.append(track)
    return score.to("tick")


def make_cases(pieces: int, seed: int) -> list[tuple[dict, object, list]]:
    """(controls, melody, progression) on drifting grids of 83..143 BPM with cuts off the grid and still bars."""
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(pieces):
        period = float(rng.uniform(0.42, 0.72))
        n_bars = 12
        length = n_bars * 4 * period
        cuts = sorted(float(c) for c in rng.uniform(1.5, length - 1.5, 3))
        still = tuple(int(i) for i in rng.choice(np.arange(2, n_bars - 1), 2, replace=False))
        controls = grid_controls(n_bars=n_bars, period=period, cuts=[round(c, 3) for c in cuts], still=still, seed=seed + k)
        progression = random_progression(rng, "major", 4)
        cases.append((controls, rhythmic_melody(controls, progression, rng), progression))
    return cases


def arranged_metrics(cases: list, seed: int) -> list[list]:
    from v2m.stages.evaluate.beat_metrics import rhythm_metrics

    rows = []
    for name in style_names():
        strong_in = strong_total = truth_in = cut_hits = cut_total = 0
        offsets, on_rows, off_rows, base_rows = [], [], [], []
        for controls, score, progression in cases:
            result = arrange_detailed(score, controls, name, seed=seed)
            arranged = result.score.to("second")
            bass = arranged.tracks[[t.name for t in arranged.tracks].index("bass")].notes
            for bar_index, bar in enumerate(result.bars):
                root, quality = progression[bar_index % len(progression)]
                true_pcs = PLAYED.get((root, quality)) or {(root + iv) % 12 for iv in QUALITIES[quality]}
                for j, strength in enumerate(bar.strength):
                    if strength != 2:
                        continue
                    beat = bar.beats[j]
                    sounding = [n for n in bass if n.time - 1e-3 <= beat < n.time + n.duration]
                    chord = next(c for c in result.chords if c.start - 1e-6 <= beat < c.end)
                    strong_total += 1
                    if sounding:
                        strong_in += sounding[-1].pitch % 12 in chord.pitch_classes
                        truth_in += sounding[-1].pitch % 12 in true_pcs
            drums = [n for t in arranged.tracks if t.is_drum for n in t.notes]
            for cut in controls["rhythm"]["cuts"]:
                cut_total += 1
                near = [abs(n.time - cut) for n in drums if n.pitch == 49 and abs(n.time - cut) <= 0.05]
                cut_hits += bool(near)
                offsets += near[:1]
            video_beats, duration = controls["beat_times"], controls["duration"]
            on = sorted(n.time for t in arranged.tracks for n in t.notes)
            off = sorted(n.time for n in score.to("second").tracks[0].notes)
            baseline = list(np.arange(0.0, duration, 0.5))  # fixed 120 BPM quarter-note pulse
            for onsets, bucket in ((on, on_rows), (off, off_rows), (baseline, base_rows)):
                bucket.append(rhythm_metrics(video_beats, onsets, duration)[0])
        mean = lambda rows, key: float(np.mean([r[key] for r in rows]))  # noqa: E731
        rows.append([name, strong_in / strong_total, truth_in / strong_total, cut_hits / cut_total,
                     1000 * float(np.mean(offsets)) if offsets else float("nan"),
                     *[mean(bucket, key) for key in RHYTHM_KEYS for bucket in (on_rows, off_rows, base_rows)]])
    return rows


RHYTHM_KEYS = ("onset_f1", "onset_precision", "onset_recall", "bhs", "beat_align", "beat_align_video")


def statistics_rows(cases: list, chorales: list, seed: int) -> list[list]:
    """Music statistics (stages/evaluate/music_metrics.py) of the melody alone and arranged, against the range
    of the chorales (the corpus the model learns from)."""
    from v2m.stages.evaluate.music_metrics import music_statistics

    keys = ("pitch_class_entropy", "scale_consistency", "groove_consistency", "empty_bar_rate", "polyphony")
    corpus = [music_statistics(score) for score in chorales]
    versions = {"melody alone (off)": [music_statistics(melody) for _, melody, _ in cases]}
    for name in style_names():
        versions[f"arranged: {name}"] = [music_statistics(arrange_detailed(melody, controls, name, seed=seed).score)
                                         for controls, melody, _ in cases]
    rows = [["chorales (corpus) range"] + [f"{min(c[k] for c in corpus):.3f}..{max(c[k] for c in corpus):.3f}" for k in keys]]
    for label, stats in versions.items():
        rows.append([label] + [float(np.mean([st[k] for st in stats])) for k in keys])
    return rows


# ---------------------------------------------------------------- what a listener hears

def fixed_tempo_baseline(controls: dict, progression):
    """The Video2Music-style output: the progression's chords arpeggiated in eighths at a fixed 120 BPM."""
    import symusic

    track = symusic.Track("baseline", 0, False, ttype="second")
    step, t, k = 0.25, 0.0, 0
    while t < controls["duration"]:
        root, quality = progression[int(t // 2.0) % len(progression)]
        tones = [48 + root + iv for iv in QUALITIES[quality]] + [60 + root]
        track.notes.append(symusic.Note(t, step * 0.95, tones[k % 4], 80, ttype="second"))
        t, k = t + step, k + 1
    score = symusic.Score(480, ttype="second")
    score.tracks.append(track)
    return score


def render(score, folder: Path, name: str) -> tuple[np.ndarray, int]:
    import subprocess

    import soundfile

    from v2m.stages.decode.render import flatten_tempo

    midi, wav = folder / f"{name}.mid", folder / f"{name}.wav"
    # as decode renders: the tempo map baked into note times (FluidSynth drifts at every tempo change)
    flatten_tempo(score).dump_midi(str(midi))
    subprocess.run(["fluidsynth", "-ni", "-F", str(wav), "-r", "22050", "/usr/share/sounds/sf2/FluidR3_GM.sf2", str(midi)],
                   check=True, capture_output=True, timeout=120)
    samples, rate = soundfile.read(str(wav))
    return samples.mean(axis=1) if samples.ndim > 1 else samples, rate  # soundfile gives (frames, channels)


def audio_rows(cases: list, seed: int) -> list[list]:
    import tempfile

    from v2m.stages.evaluate.beat_metrics import audio_beats, audio_onsets, beat_f_measure, rhythm_metrics

    results: dict[str, list[list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for index, (controls, melody, progression) in enumerate(cases):
            versions = {"melody alone (off)": melody, "fixed 120 BPM arpeggio": fixed_tempo_baseline(controls, progression)}
            versions |= {f"arranged: {name}": arrange_detailed(melody, controls, name, seed=seed).score for name in style_names()}
            for label, score in versions.items():
                samples, rate = render(score, folder, f"{index}")
                bpm, beats = audio_beats(samples, rate)
                video = np.array(controls["beat_times"])
                video_bpm = 60.0 / float(np.median(np.diff(video)))
                metrics = rhythm_metrics(video, audio_onsets(samples, rate), controls["duration"])[0]
                same = abs(bpm / video_bpm - 1.0) <= 0.04
                results.setdefault(label, []).append([beat_f_measure(video, beats).f1, float(same), metrics["onset_f1"], metrics["bhs"]])
    return [[label] + [float(v) for v in np.mean(values, axis=0)] for label, values in results.items()]


def mix_rows(cases: list, seed: int) -> list[list]:
    """Per style: the FluidSynth render's peak (1.0 = full scale) and each track's RMS level (dBFS) rendered
    alone, on the loudest bars possible (every bar at the top density and velocity)."""
    import copy
    import tempfile

    controls, melody, _ = cases[0]
    loud = copy.deepcopy(controls)
    for bar in loud["bars"]:
        bar["density"], bar["velocity"] = 3, 127
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in style_names():
            score = arrange_detailed(melody, loud, name, seed=seed).score
            samples, _ = render(score, folder, name)
            row = [name, float(np.abs(samples).max())]
            for role in ("melody", "harmony", "bass", "drums"):
                alone = score.copy()
                alone.tracks = [t for t in score.tracks if t.name == role]
                part, _ = render(alone, folder, f"{name}-{role}")
                row.append(round(20 * float(np.log10(np.sqrt(np.mean(part ** 2)) + 1e-12)), 1))
            rows.append(row)
    return rows


# ---------------------------------------------------------------- rendered video through extract-rhythm

def bench_vocab(chorales: list):
    """The installed tokenizer, or one calibrated here on the chorales (what `encode-tokens --calibrate`
    does, on a tiny corpus) when presets/tokenizer.json is not there yet."""
    from v2m.errors import V2MError
    from v2m.stages.tokens.controls import TEMPO_BOUNDS_BPM, analyse_score, calibrate
    from v2m.stages.tokens.vocab import load_tokenizer, new_vocab

    try:
        return load_tokenizer(), "installed tokenizer"
    except V2MError:
        draft = new_vocab({"n_density": 7, "tempo_bounds_bpm": list(TEMPO_BOUNDS_BPM)})
        analyses = [analyse_score(score, draft) for score in chorales]
        return new_vocab(calibrate([a for a in analyses if a.bar_beats])), f"tokenizer calibrated on {len(chorales)} chorales"


def video_cut_rows(seed: int, chorales: list) -> tuple[list[list], str]:
    import tempfile

    from v2m.samples import SampleSpec, write_video
    from v2m.stages.rhythm.extract import RhythmConfig, rhythm_from_frames
    from v2m.stages.rhythm.stream import analysis_size, probe, stream_frames
    from v2m.stages.tokens.video_controls import controls_from_rhythm

    vocab, note = bench_vocab(chorales)
    specs = [SampleSpec(bpm=bpm, duration=24.0, width=320, height=180, seed=seed + i, motion=motion, cuts=4, audio=False)
             for i, (bpm, motion) in enumerate([(96.0, "bounce"), (124.0, "mixed"), (78.0, "flash")])]
    per_style: dict[str, list[int]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for i, spec in enumerate(specs):
            path = Path(folder) / f"cuts{i}.mp4"
            truth = write_video(path, spec)
            config = RhythmConfig()
            info = probe(path)
            rate = min(info.fps or config.max_rate, config.max_rate)
            rhythm = rhythm_from_frames(stream_frames(info, analysis_size(info, config.analysis_width), rate), rate, info.fps, config)
            controls = controls_from_rhythm(rhythm, vocab)
            melody = melody_on_grid(controls)
            for name in style_names():
                drums = [n for t in arrange_detailed(melody, controls, name, seed=seed).score.to("second").tracks
                         if t.is_drum for n in t.notes if n.pitch == 49]
                cell = per_style.setdefault(name, [0, 0, 0, 0])
                cell[0] += len(truth["cuts"])
                cell[1] += sum(any(abs(c - d) <= 0.1 for d in rhythm["cuts"]) for c in truth["cuts"])
                cell[2] += sum(any(abs(n.time - c) <= 0.05 for n in drums) for c in truth["cuts"])
                cell[3] += sum(any(abs(n.time - c) <= 0.05 for n in drums) for c in rhythm["cuts"]) / max(len(rhythm["cuts"]), 1) \
                    * len(truth["cuts"])
    rows = [[name, t, f"{d}/{t}", c / t, h / t] for name, (t, d, c, h) in per_style.items()]
    return rows, f"{len(specs)} videos 320x180 at 96/124/78 BPM, 4 cuts each; {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chorales", type=int, default=20, help="Bach chorales to score (music21 corpus)")
    parser.add_argument("--pieces", type=int, default=6, help="synthetic pieces per style")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-video", action="store_true", help="skip the rendered-frames cut check")
    args = parser.parse_args()
    print(f"# arrange_eval — {platform.platform()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    started = time.time()
    table("Chords on constructed progressions (one chord per bar, 48 progressions of 8 bars)",
          ["input", "estimator", "progressions", "bars", "chord accuracy", "key accuracy"], constructed_accuracy(args.seed))
    rows, key_hits, pieces, chorales = chorale_accuracy(args.chorales)
    table(f"Bach chorales vs Riemenschneider analyses (per beat; key found = {key_hits}/{pieces} opening keys)",
          ["voices", "estimator", "chorales", "beats", "root accuracy", "root+quality accuracy"], rows)
    cases = make_cases(args.pieces, args.seed)
    arranged = arranged_metrics(cases, args.seed)
    table(f"Arranger per style ({args.pieces} drifting grids of 12 bars, 3 cuts off the grid, 2 still bars each)",
          ["style", "bass∈chord (strong beats)", "bass∈true chord", "crash ≤50 ms of cut", "mean |crash−cut| ms"],
          [row[:5] for row in arranged])
    labels = {"onset_f1": "onset F", "onset_precision": "precision", "onset_recall": "recall", "bhs": "BHS",
              "beat_align": "Beat Align (music→video)", "beat_align_video": "Beat Align (video→music)"}
    table("Rhythm agreement with the video beats: arranged (on) vs melody alone (off) vs fixed 120 BPM pulse",
          ["style"] + [f"{labels[k]} {which}" for k in RHYTHM_KEYS for which in ("on", "off", "120")],
          [[row[0]] + row[5:] for row in arranged])
    table("Music statistics (MusPy definitions): melody alone vs arranged vs the chorales' range",
          ["piece", "pitch-class entropy", "scale consistency", "groove consistency", "empty-bar rate", "polyphony"],
          statistics_rows(cases, chorales, args.seed))
    table("Heard beats: librosa's beat tracker on the FluidSynth render vs the video beats (beat F, ±70 ms)",
          ["render", "tracked beat F", "tempo same as video", "onset beat F", "onset BHS"], audio_rows(cases, args.seed))
    table("Mix: render peak at full motion (must stay < 1.0) and each track's level alone (RMS dBFS)",
          ["style", "peak", "melody dB", "harmony dB", "bass dB", "drums dB"], mix_rows(cases, args.seed))
    if not args.skip_video:
        rows, note = video_cut_rows(args.seed, chorales)
        table(f"Rendered video with hard cuts, through extract-rhythm ({note})",
              ["style", "true cuts", "cuts detected", "crash ≤50 ms of true cut", "crash ≤50 ms of detected cut"], rows)
    print(f"\n(wall time {time.time() - started:.1f} s)")


if __name__ == "__main__":
    main()
