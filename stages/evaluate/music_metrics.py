"""Music statistics of a symbolic score (MIDI or decoded tokens).

The definitions are MusPy's (Dong et al., "MusPy: A Toolkit for Symbolic Music Generation",
ISMIR 2020), computed here on numpy arrays so evaluate does not depend on MusPy at run time;
tests/stages/evaluate/test_music_metrics.py checks every one against MusPy on random scores.

- pitch-class entropy (bits, 0..log2 12): Shannon entropy of the pitch-class histogram [Wu & Yang, Jazz Transformer];
- scale consistency (0..1): largest fraction of notes in one major or natural-minor scale [Mogren, C-RNN-GAN];
- groove consistency (0..1): 1 - mean Hamming distance between consecutive bars' onset patterns [Jazz Transformer];
- empty-bar rate (0..1): fraction of bars where no note sounds [MuseGAN];
- polyphony: mean number of pitches sounding at the time steps where at least one does;
- pitch range (semitones), note density (notes per second and per beat).

Like MusPy, pitch-based statistics ignore drum tracks; groove and empty bars count them.
Time is quantised first to `steps_per_beat` steps per quarter note (12: sixteenths and
triplets land exactly on the grid), so groove consistency measures rhythm, not MIDI jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)  # natural minor, as MusPy


@dataclass(frozen=True)
class NoteArrays:
    """All notes of a score on a quantised grid.

    `time`, `duration` in steps (`steps_per_beat` per quarter note); `bar_steps` steps per bar
    (from the first time signature, 4/4 when there is none); `seconds` the score's length in s.
    """

    time: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    is_drum: np.ndarray
    steps_per_beat: int
    bar_steps: int
    seconds: float

    @property
    def pitched(self) -> np.ndarray:
        return ~self.is_drum


def note_arrays(score, steps_per_beat: int = 12) -> NoteArrays:
    """Flatten a symusic.Score (any time unit) into NoteArrays on a grid of `steps_per_beat` per quarter."""
    from symusic import TimeUnit

    ticks = score if score.ttype == TimeUnit.tick else score.to("tick")
    grid = ticks.resample(steps_per_beat, min_dur=1)
    columns: dict[str, list] = {"time": [], "duration": [], "pitch": [], "is_drum": []}
    for track in grid.tracks:
        notes = track.notes.numpy()
        columns["time"].append(notes["time"].astype(np.int64))
        columns["duration"].append(notes["duration"].astype(np.int64))
        columns["pitch"].append(notes["pitch"].astype(np.int64))
        columns["is_drum"].append(np.full(len(notes["time"]), bool(track.is_drum)))
    arrays = {k: (np.concatenate(v) if v else np.zeros(0, dtype=np.int64)) for k, v in columns.items()}
    arrays["is_drum"] = arrays["is_drum"].astype(bool)
    bar_steps = 4 * steps_per_beat
    if len(grid.time_signatures):
        first = grid.time_signatures[0]
        bar_steps = max(1, round(first.numerator * steps_per_beat * 4 / first.denominator))
    seconds = float(score.to("second").end()) if len(arrays["time"]) else 0.0
    return NoteArrays(steps_per_beat=steps_per_beat, bar_steps=bar_steps, seconds=seconds, **arrays)


def pitch_class_entropy(n: NoteArrays) -> float:
    counts = np.bincount(n.pitch[n.pitched] % 12, minlength=12).astype(np.float64)
    if counts.sum() < 1:
        return math.nan
    prob = counts[counts > 0] / counts.sum()
    return float(-(prob * np.log2(prob)).sum())


def scale_consistency(n: NoteArrays) -> float:
    classes = n.pitch[n.pitched] % 12
    if classes.size == 0:
        return math.nan
    counts = np.bincount(classes, minlength=12)
    best = max(int(counts[np.roll(scale, root)].sum()) for scale in (MAJOR, MINOR) for root in range(12))
    return best / classes.size


def _length(n: NoteArrays) -> int:
    """MusPy's music length: the latest note end (steps)."""
    return int((n.time + n.duration).max()) if n.time.size else 0


def groove_consistency(n: NoteArrays) -> float:
    """1 - mean Hamming distance of consecutive bars' binary onset vectors; nan with fewer than 2 bars."""
    n_bars = _length(n) // n.bar_steps + 1  # MusPy counts a bar after the last note's end
    if n.time.size == 0 or n_bars < 2:
        return math.nan
    patterns = np.zeros((n_bars, n.bar_steps), dtype=bool)
    bar, position = np.divmod(n.time, n.bar_steps)
    patterns[bar, position] = True
    distance = np.count_nonzero(patterns[:-1] != patterns[1:])
    return 1 - distance / (n.bar_steps * (n_bars - 1))


def empty_bar_rate(n: NoteArrays) -> float:
    """Fraction of bars in which no note sounds (MusPy's empty_measure_rate).

    As in MusPy a note ending exactly on a bar line marks that next bar as sounding; we keep
    the quirk so figures stay comparable with published MusPy numbers.
    """
    length = _length(n)
    if length < 1:
        return math.nan
    n_bars = length // n.bar_steps + 1
    first, last = n.time // n.bar_steps, (n.time + n.duration) // n.bar_steps
    # mark every bar from each note's first to last: a difference array keeps it O(notes + bars)
    marks = np.zeros(n_bars + 1, dtype=np.int64)
    np.add.at(marks, first, 1)
    np.add.at(marks, last + 1, -1)
    sounding = np.cumsum(marks)[:n_bars] > 0
    return 1 - sounding.sum() / n_bars


def polyphony(n: NoteArrays) -> float:
    """Mean number of pitches sounding over the time steps where at least one pitched note sounds."""
    keep = n.pitched
    if not keep.any():
        return math.nan
    length = _length(n)
    roll = np.zeros((length, 128), dtype=bool)
    for start, dur, pitch in zip(n.time[keep], n.duration[keep], n.pitch[keep]):
        roll[start:start + dur, pitch] = True
    active = np.count_nonzero(roll.any(axis=1))
    return float(roll.sum() / active) if active else math.nan


def pitch_range(n: NoteArrays) -> float:
    pitches = n.pitch[n.pitched]
    return float(pitches.max() - pitches.min()) if pitches.size else 0.0


def music_statistics(score, steps_per_beat: int = 12) -> dict:
    """All statistics of a symusic.Score as {name: float} (nan where undefined, e.g. no pitched notes)."""
    n = note_arrays(score, steps_per_beat)
    beats = _length(n) / n.steps_per_beat
    return {
        "pitch_class_entropy": pitch_class_entropy(n),
        "scale_consistency": scale_consistency(n),
        "groove_consistency": groove_consistency(n),
        "empty_bar_rate": empty_bar_rate(n),
        "polyphony": polyphony(n),
        "pitch_range": pitch_range(n),
        "notes": float(n.time.size),
        "note_density": n.time.size / n.seconds if n.seconds > 0 else math.nan,  # notes per second
        "notes_per_beat": n.time.size / beats if beats > 0 else math.nan,
    }
