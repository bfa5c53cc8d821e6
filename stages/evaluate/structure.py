"""Musical structure of a melody: bars that return (exactly, transposed, varied), motifs that recur, how dense the
line is, and whether it breathes before a phrase starts (issue 17).

Everything is measured on the **melody** of a score, on the grid the other music statistics use
(`STEPS_PER_BEAT` = 12 steps per quarter note, so sixteenths and triplets land exactly):

- *which track*: a track named "melody" (the arranger's, in `run`'s NAME.mid), else the only pitched track, else
  the melody-like one of the pitched tracks: among those with at least half the notes of the busiest, the one
  with the highest mean pitch (a soprano, a lead);
- *the line*: its skyline — at each onset the highest pitch (a generated line may carry a second voice); rests
  ("breaths") are read from every note of the track, so a held lower note is not a rest;
- *bars*: the music's bars from its time signatures (each change starts a bar, as in MIDI); for a v2m.tokens piece
  the decoded score's time signatures are the video's bars, bar i on the video's downbeat i. A bar's content is
  the tuple of (onset − bar start, pitch) of the line's notes that start in it. Bars without an onset are
  *empty* and excluded from every fraction.

Definitions (per non-empty bar, each bar counted once, in this order of precedence):

- `bar_repeat_exact`: the bar's length and content equal those of an earlier non-empty bar;
- `bar_repeat_transposed`: not exact, at least 2 notes, and equal to an earlier bar after adding one constant
  k ≠ 0 to every pitch (same onsets, same intervals);
- `bar_varied`: neither, at least 3 notes, and an earlier bar of the same length with as many notes has either
  (a) the same onsets and the same contour (the sign, up/down/same, of each interval: a diatonic sequence or a
  re-harmonised restatement), or (b) the same intervals with onsets that differ for exactly one note
  (a rhythmic variation of one note);
- `bar_repeated_or_varied`: the sum of the three.

Each is a fraction of the non-empty bars (null with fewer than 2).

- `motif_recurrence`: the line as 4-note motifs — each run of 4 consecutive notes whose span is at most 2 bars,
  written as its 3 intervals (semitones) and 3 inter-onset intervals (steps), so a transposed motif is the same
  motif — and the fraction of them that occur again at a position that does not overlap (≥ 4 notes away).
  Null with fewer than 8 notes.
- `melody_notes_per_beat`: the line's notes per quarter note over the bars from its first to its last
  non-empty bar (the unit of `notes_per_beat`, for the melody alone).
- `phrase_start_rest` / `other_bar_rest`: of the bars that start a phrase (bar 0 left out) / of the other bars
  after the first note, the fraction whose previous bar ends in a breath: no note of the melody's track sounds
  in the last half beat (6 steps) before the bar line. Phrase starts come from the `phrase` flags of the
  controls (the video's cuts, `v2m.controls`) when known; otherwise from the line itself with the encoder's rule
  (tokens/controls.py `phrase_starts`: a bar whose first onset ends an inter-onset gap of ≥ 2 × the median IOI
  and ≥ 1 beat) — then a long held note also counts, so the label `phrase_source` says which.
- `melody_bars`: the count of non-empty bars the fractions are over.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from v2m.config import presets_dir
from v2m.errors import V2MError
from v2m.stages.tokens.beat_grid import ticks_to_seconds
from v2m.stages.tokens.controls import phrase_starts

STEPS_PER_BEAT = 12  # steps per quarter note, as stages/evaluate/music_metrics.py
MOTIF_NOTES = 4
MOTIF_MAX_BARS = 2
BREATH_STEPS = STEPS_PER_BEAT // 2  # half a quarter note of silence before the bar line is a breath
STRUCTURE_METRICS = ("bar_repeat_exact", "bar_repeat_transposed", "bar_varied", "bar_repeated_or_varied",
                     "motif_recurrence", "melody_notes_per_beat", "phrase_start_rest", "other_bar_rest", "melody_bars")
RANGE_FILE = "structure_range.json"  # in presets/: written by bench/structure_range.py, with its provenance
PHRASES_FROM_CONTROLS = "controls (the video's cuts)"
PHRASES_FROM_MUSIC = "music (the encoder's rule: a bar whose first onset ends a long gap)"


@dataclass(frozen=True)
class Melody:
    """A melody on the grid, in steps. `time`, `duration`, `pitch`: the skyline's notes (ascending time);
    `track_start`, `track_end`: every note of the melody's track (for rests); `bar_starts`: bar lines, the line after
    the last bar included; `bar_seconds`: the same bar lines in seconds under the score's tempo map."""

    time: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    track_start: np.ndarray  # every note of the track: start and end (steps), for rests
    track_end: np.ndarray
    bar_starts: np.ndarray
    bar_seconds: np.ndarray


def melody_track(score):
    """The melody track of a symusic.Score (rule in the module docstring); None when no track has pitched notes."""
    pitched = [t for t in score.tracks if not t.is_drum and len(t.notes)]
    named = [t for t in pitched if t.name.strip().lower() == "melody"]
    if named:
        return named[0]
    if len(pitched) <= 1:
        return pitched[0] if pitched else None
    most = max(len(t.notes) for t in pitched)
    busy = [t for t in pitched if len(t.notes) * 2 >= most]
    return max(busy, key=lambda t: float(t.notes.numpy()["pitch"].mean()))


def bar_lines(time_signatures: list[tuple[int, int, int]], end: int, steps_per_beat: int = STEPS_PER_BEAT) -> np.ndarray:
    """Bar lines (steps) covering [0, `end`) from (step, numerator, denominator) time signatures, the line closing
    the last bar included; each time signature change starts a bar (as in MIDI); 4/4 before the first one."""
    changes = sorted({int(t): (int(n), int(d)) for t, n, d in time_signatures}.items())
    if not changes or changes[0][0] > 0:
        changes.insert(0, (0, (4, 4)))
    starts, position = [], 0
    for i, (at, (numerator, denominator)) in enumerate(changes):
        if at >= end and starts:
            position = min(position, at)  # a change after the music closes its last bar
            break
        length = max(1, round(numerator * steps_per_beat * 4 / max(denominator, 1)))
        stop = min(changes[i + 1][0], end) if i + 1 < len(changes) else end
        position = at
        while position < stop or not starts:
            starts.append(position)
            position += length
    starts.append(position)
    return np.asarray(starts, dtype=np.int64)


def melody_of(score, steps_per_beat: int = STEPS_PER_BEAT) -> Melody | None:
    """A symusic.Score (any time unit) → its Melody on the grid; None when it has no pitched notes."""
    from symusic import TimeUnit

    ticks = score if score.ttype == TimeUnit.tick else score.to("tick")
    grid = ticks.resample(steps_per_beat, min_dur=1)
    track = melody_track(grid)
    if track is None:
        return None
    notes = track.notes.numpy()
    start = notes["time"].astype(np.int64)
    end = start + notes["duration"].astype(np.int64)
    order = np.lexsort((-notes["pitch"], start))  # by onset, highest pitch first
    start_sorted, pitch_sorted = start[order], notes["pitch"].astype(np.int64)[order]
    first = np.concatenate([[True], start_sorted[1:] != start_sorted[:-1]])
    time, pitch = start_sorted[first], pitch_sorted[first]
    top_end = end[order][first]
    next_onset = np.append(time[1:], np.iinfo(np.int64).max)
    duration = np.maximum(np.minimum(top_end, next_onset) - time, 1)  # monophonic: a note ends at the next onset
    signatures = [(t.time, t.numerator, t.denominator) for t in grid.time_signatures]
    bars = bar_lines(signatures, int(end.max()), steps_per_beat)
    seconds = np.asarray(ticks_to_seconds([int(b) for b in bars], grid), dtype=np.float64)
    return Melody(time=time, duration=duration, pitch=pitch, track_start=start, track_end=end, bar_starts=bars,
                  bar_seconds=seconds)


# ---------------------------------------------------------------- bars that return

def bar_contents(melody: Melody) -> list[tuple[int, tuple[int, ...], tuple[int, ...]]]:
    """Per bar: (bar length in steps, onsets relative to the bar start, pitches) of the line's notes starting in it."""
    out = []
    bar = np.searchsorted(melody.bar_starts, melody.time, side="right") - 1
    for i in range(len(melody.bar_starts) - 1):
        lo, hi = melody.bar_starts[i], melody.bar_starts[i + 1]
        mask = bar == i
        out.append((int(hi - lo), tuple(int(t - lo) for t in melody.time[mask]), tuple(int(p) for p in melody.pitch[mask])))
    return out


def _contour(pitches: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(np.sign(b - a)) for a, b in zip(pitches, pitches[1:]))


def _intervals(pitches: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(b - a for a, b in zip(pitches, pitches[1:]))


def classify_bars(contents: list[tuple[int, tuple[int, ...], tuple[int, ...]]]) -> list[str]:
    """Each bar's relation to the bars before it: "empty", "new", "exact", "transposed" or "varied" (definitions in
    the module docstring; the first that applies)."""
    labels: list[str] = []
    exact: set = set()
    transposed: set = set()
    earlier: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = []
    for length, onsets, pitches in contents:
        if not onsets:
            labels.append("empty")
            continue
        key = (length, onsets, pitches)
        shape = (length, onsets, _intervals(pitches))
        if key in exact:
            label = "exact"
        elif len(onsets) >= 2 and shape in transposed:
            label = "transposed"
        elif len(onsets) >= 3 and any(_varied(length, onsets, pitches, other) for other in earlier):
            label = "varied"
        else:
            label = "new"
        labels.append(label)
        exact.add(key)
        transposed.add(shape)
        earlier.append((length, onsets, pitches))
    return labels


def _varied(length: int, onsets: tuple, pitches: tuple, other: tuple) -> bool:
    other_length, other_onsets, other_pitches = other
    if other_length != length or len(other_onsets) != len(onsets):
        return False
    if other_onsets == onsets:
        return _contour(other_pitches) == _contour(pitches)
    moved = sum(a != b for a, b in zip(onsets, other_onsets))
    return moved == 1 and _intervals(other_pitches) == _intervals(pitches)


def bar_repetition(melody: Melody) -> dict:
    """bar_repeat_exact, bar_repeat_transposed, bar_varied, bar_repeated_or_varied (fractions of non-empty bars;
    nan with fewer than 2) and melody_bars."""
    labels = classify_bars(bar_contents(melody))
    bars = sum(label != "empty" for label in labels)
    if bars < 2:
        return {"bar_repeat_exact": math.nan, "bar_repeat_transposed": math.nan, "bar_varied": math.nan,
                "bar_repeated_or_varied": math.nan, "melody_bars": float(bars)}
    share = {kind: labels.count(kind) / bars for kind in ("exact", "transposed", "varied")}
    return {"bar_repeat_exact": share["exact"], "bar_repeat_transposed": share["transposed"],
            "bar_varied": share["varied"], "bar_repeated_or_varied": sum(share.values()), "melody_bars": float(bars)}


# ---------------------------------------------------------------- motifs

def motif_recurrence(melody: Melody, notes: int = MOTIF_NOTES, max_bars: int = MOTIF_MAX_BARS) -> float:
    """Fraction of the line's `notes`-note motifs (spanning ≤ `max_bars` bars; intervals + inter-onset intervals)
    that occur again at least `notes` notes away; nan with fewer than 2 × `notes` notes."""
    if melody.time.size < 2 * notes:
        return math.nan
    bar = np.searchsorted(melody.bar_starts, melody.time, side="right") - 1
    intervals, gaps = np.diff(melody.pitch), np.diff(melody.time)
    positions: dict[tuple, list[int]] = {}
    for i in range(melody.time.size - notes + 1):
        if bar[i + notes - 1] - bar[i] >= max_bars:
            continue
        key = (tuple(intervals[i:i + notes - 1].tolist()), tuple(gaps[i:i + notes - 1].tolist()))
        positions.setdefault(key, []).append(i)
    total = sum(len(p) for p in positions.values())
    if not total:
        return math.nan
    recurring = 0
    for starts in positions.values():
        for i in starts:
            recurring += any(abs(i - j) >= notes for j in starts)
    return recurring / total


# ---------------------------------------------------------------- density and breaths

def melody_notes_per_beat(melody: Melody, steps_per_beat: int = STEPS_PER_BEAT) -> float:
    """The line's notes per quarter note over the bars from its first to its last non-empty bar."""
    if melody.time.size == 0:
        return math.nan
    bar = np.searchsorted(melody.bar_starts, melody.time, side="right") - 1
    span = melody.bar_starts[bar[-1] + 1] - melody.bar_starts[bar[0]]
    return float(melody.time.size / (span / steps_per_beat)) if span > 0 else math.nan


def breath_before(melody: Melody, breath_steps: int = BREATH_STEPS) -> np.ndarray:
    """Per bar line i (bars 0..n-1): no note of the melody's track sounds in [start_i − breath_steps, start_i)."""
    starts = melody.bar_starts[:-1]
    out = np.zeros(len(starts), dtype=bool)
    for i, line in enumerate(starts):
        lo = line - breath_steps
        out[i] = not bool(np.any((melody.track_start < line) & (melody.track_end > lo)))
    return out


def music_phrases(melody: Melody, steps_per_beat: int = STEPS_PER_BEAT) -> list[bool]:
    """Phrase starts read off the line with the encoder's rule (tokens/controls.py `phrase_starts`)."""
    return phrase_starts(melody.time.astype(np.float64), melody.bar_starts[:-1].astype(np.float64), float(steps_per_beat))


def controls_phrases(melody: Melody, control_bars: list[dict]) -> list[bool]:
    """The controls' `phrase` flags on the music's bars: each control bar (its `start`, s) lands on the music's bar
    starting at the same time (within a quarter of that bar), as control accuracy pairs them; by index without times."""
    flags = [False] * (len(melody.bar_starts) - 1)
    starts, lengths = melody.bar_seconds[:-1], np.diff(melody.bar_seconds)
    for i, bar in enumerate(control_bars):
        if not bar.get("phrase"):
            continue
        if "start" not in bar:
            k = i
        else:
            k = int(np.argmin(np.abs(starts - float(bar["start"])))) if len(starts) else -1
            if k < 0 or abs(starts[k] - float(bar["start"])) > 0.25 * lengths[k] + 1e-3:
                continue
        if 0 <= k < len(flags):
            flags[k] = True
    return flags


def phrase_rests(melody: Melody, phrase: list[bool]) -> dict:
    """phrase_start_rest / other_bar_rest: shares of phrase-start bars / other bars (bar 0 and bars before the
    line's first note left out) whose previous bar ends in a breath; nan where there is no such bar."""
    breath = breath_before(melody)
    if melody.time.size == 0:
        return {"phrase_start_rest": math.nan, "other_bar_rest": math.nan}
    first_bar = int(np.searchsorted(melody.bar_starts, melody.time[0], side="right") - 1)
    flags = np.zeros(len(breath), dtype=bool)
    flags[: min(len(phrase), len(flags))] = phrase[: len(flags)]
    considered = np.arange(len(breath)) > max(first_bar, 0)
    at_phrase, elsewhere = considered & flags, considered & ~flags
    return {"phrase_start_rest": float(breath[at_phrase].mean()) if at_phrase.any() else math.nan,
            "other_bar_rest": float(breath[elsewhere].mean()) if elsewhere.any() else math.nan}


# ---------------------------------------------------------------- all of it

def structure_metrics(score, control_bars: list[dict] | None = None,
                      steps_per_beat: int = STEPS_PER_BEAT) -> tuple[dict, dict]:
    """Structure metrics of a symusic.Score's melody → ({name: float, nan where undefined}, labels).

    `control_bars`: the `bars` of the controls the music was made from (their `phrase` flags and `start` times);
    without them phrase starts are read off the music. Labels: `phrase_source`.
    """
    melody = melody_of(score, steps_per_beat)
    if melody is None:
        return {name: math.nan for name in STRUCTURE_METRICS}, {}
    metrics = bar_repetition(melody)
    metrics["motif_recurrence"] = motif_recurrence(melody)
    metrics["melody_notes_per_beat"] = melody_notes_per_beat(melody, steps_per_beat)
    if control_bars:
        phrase, source = controls_phrases(melody, control_bars), PHRASES_FROM_CONTROLS
    else:
        phrase, source = music_phrases(melody, steps_per_beat), PHRASES_FROM_MUSIC
    metrics.update(phrase_rests(melody, phrase))
    return metrics, {"phrase_source": source}


def excerpt(score, seconds: float):
    """The bars of a symusic.Score that start before `seconds` (a 20-s excerpt, cut at a bar line), in ticks."""
    from symusic import TimeUnit

    ticks = score if score.ttype == TimeUnit.tick else score.to("tick")
    melody = melody_of(ticks, ticks.ticks_per_quarter)  # bar lines in the score's own ticks
    if melody is None:
        return ticks
    inside = melody.bar_seconds < seconds
    cut = int(melody.bar_starts[min(int(inside.sum()), len(melody.bar_starts) - 1)])
    return ticks.clip(0, cut, clip_end=True)


# ---------------------------------------------------------------- the corpus range

def corpus_range(metrics: dict, path=None) -> dict:
    """{name: {"p10", "median", "p90"}} of the corpus' 20-s excerpts (presets/structure_range.json, made by
    bench/structure_range.py on the training corpus' test split) for each metric of `metrics` that has a range."""
    path = path or presets_dir() / RANGE_FILE
    try:
        data = json.loads(open(path, encoding="utf-8").read())
        ranges = data["ranges"]["excerpt"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise V2MError(f"{path}: not a readable corpus range ({type(e).__name__})",
                       "reinstall v2m, or remake it: python bench/structure_range.py --write")
    return {name: {k: ranges[name][k] for k in ("p10", "median", "p90")} for name in sorted(metrics) if name in ranges}
