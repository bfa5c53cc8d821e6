"""Key and chord estimation from notes, for the arranger (and for measuring it).

Key: Krumhansl–Schmuckler key finding — correlate the duration-weighted pitch-class
histogram with the 24 rotated Krumhansl–Kessler probe-tone profiles (Krumhansl 1990).

Chords: template matching per segment (a bar or half-bar of the beat grid) against the
36 major/minor/diminished triads, with a diatonic prior (chords of the key, harmonic minor
included, are more likely) and a Viterbi pass that prefers keeping a chord over changing it
— the HMM smoothing used by template-based chord recognisers (e.g. Papadopoulos & Peeters
2007). A chord's evidence is the notes sounding in the segment, weighted by how long they
sound, extra for notes that start on the segment's first beat and for the lowest note.
Notes are arrays, times in seconds; chords carry mir_eval labels ("C:maj", "A:min").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TRIADS = {"maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6)}  # what is estimated
QUALITIES = TRIADS | {"7": (0, 4, 7, 10)}  # what can be played (a dominant seventh replaces a bar-long vii°)
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural + raised leading tone (harmonic minor's V and vii°)


@dataclass(frozen=True)
class Key:
    tonic: int   # pitch class 0..11
    mode: str    # "major" | "minor"

    @property
    def name(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {self.mode}"

    def scale(self) -> set[int]:
        return {(self.tonic + step) % 12 for step in (MAJOR_SCALE if self.mode == "major" else MINOR_SCALE)}


@dataclass(frozen=True)
class Chord:
    start: float   # seconds
    end: float     # seconds
    root: int      # pitch class 0..11
    quality: str   # "maj" | "min" | "dim" (estimated), or "7" (played: see dominant_for_leading_tone)

    @property
    def pitch_classes(self) -> tuple[int, ...]:
        """Root, third, fifth (and seventh) as pitch classes."""
        return tuple((self.root + interval) % 12 for interval in QUALITIES[self.quality])

    @property
    def fifth(self) -> int:
        return self.pitch_classes[2]

    @property
    def label(self) -> str:
        """mir_eval chord label, e.g. "G:maj"."""
        return f"{PITCH_NAMES[self.root]}:{self.quality}"


CANDIDATES = [(root, quality) for quality in TRIADS for root in range(12)]
TEMPLATES = np.zeros((len(CANDIDATES), 12))
for _i, (_root, _quality) in enumerate(CANDIDATES):
    TEMPLATES[_i, [(_root + iv) % 12 for iv in QUALITIES[_quality]]] = 1.0


def notes_array(score) -> np.ndarray:
    """All pitched notes of a symusic Score as rows (onset s, offset s, pitch, velocity); drum tracks skipped."""
    seconds = score if str(score.ttype).rsplit(".", 1)[-1].lower() == "second" else score.to("second")
    rows = [(n.time, n.time + n.duration, n.pitch, n.velocity)
            for track in seconds.tracks if not track.is_drum for n in track.notes]
    return np.array(rows, dtype=float).reshape(-1, 4)


def pitch_class_profile(notes: np.ndarray, start: float = -np.inf, end: float = np.inf) -> np.ndarray:
    """Seconds each pitch class sounds within [start, end) (12-vector)."""
    profile = np.zeros(12)
    if len(notes):
        overlap = np.clip(np.minimum(notes[:, 1], end) - np.maximum(notes[:, 0], start), 0, None)
        np.add.at(profile, notes[:, 2].astype(int) % 12, overlap)
    return profile


def find_key(notes: np.ndarray, fallback_mode: str = "major") -> Key:
    """Krumhansl–Schmuckler: the key whose rotated profile correlates best with the notes' histogram.

    With no notes, C major (or A minor when `fallback_mode` is "minor")."""
    profile = pitch_class_profile(notes)
    if profile.sum() <= 0:
        return Key(0, "major") if fallback_mode != "minor" else Key(9, "minor")
    best, best_r = Key(0, "major"), -np.inf
    for mode, reference in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = np.corrcoef(profile, np.roll(reference, tonic))[0, 1]
            if r > best_r:
                best, best_r = Key(tonic, mode), r
    return best


def segment_evidence(notes: np.ndarray, start: float, end: float, onset_tolerance: float = 0.05) -> np.ndarray:
    """Pitch-class weights for one segment: sounding time, ×1.5 for notes starting on its first beat,
    plus the lowest sounding pitch class again (bass notes name chords more often than not)."""
    if not len(notes):
        return np.zeros(12)
    overlap = np.clip(np.minimum(notes[:, 1], end) - np.maximum(notes[:, 0], start), 0, None)
    sounding = overlap > 0
    weight = overlap * np.where(np.abs(notes[:, 0] - start) < onset_tolerance, 1.5, 1.0)
    evidence = np.zeros(12)
    np.add.at(evidence, notes[sounding, 2].astype(int) % 12, weight[sounding])
    if sounding.sum() >= 2:
        lowest = notes[sounding][np.argmin(notes[sounding, 2])]
        evidence[int(lowest[2]) % 12] += 0.5 * overlap[sounding][np.argmin(notes[sounding, 2])]
    return evidence


def diatonic_prior(key: Key) -> np.ndarray:
    """Log-prior per candidate chord: 0 for chords of the key (I, IV, V stronger), negative for the rest."""
    scale = key.scale()
    prior = np.full(len(CANDIDATES), -1.0)
    for i, (root, quality) in enumerate(CANDIDATES):
        if all((root + iv) % 12 in scale for iv in QUALITIES[quality]):
            prior[i] = -0.3
    for degree, quality in ((0, "maj" if key.mode == "major" else "min"), (5, "maj" if key.mode == "major" else "min"),
                            (7, "maj")):
        prior[CANDIDATES.index(((key.tonic + degree) % 12, quality))] = 0.0
    return prior


def estimate_chords(notes: np.ndarray, boundaries: list[tuple[float, float]], key: Key | None = None,
                    downbeats: list[float] | None = None, prior_weight: float = 1.0, change_penalty: float = 0.35,
                    off_downbeat_penalty: float = 0.6, sharpness: float = 6.0) -> list[Chord]:
    """One chord per segment (boundaries in seconds), key-aware and smoothed.

    Emission: `sharpness` × (share of the segment's weight on chord tones − share off them, plus a
    small root bonus) + `prior_weight` × diatonic prior. Transition: −`change_penalty` for any change,
    more (+`off_downbeat_penalty`) for a change on a segment that does not start a bar (when `downbeats`
    are given): harmony changes on the bar line more often than inside it.
    Segments with no notes take the previous chord (the tonic at the start).
    """
    key = key or find_key(notes)
    prior = diatonic_prior(key) * prior_weight
    n_segments = len(boundaries)
    if n_segments == 0:
        return []
    scores = np.zeros((n_segments, len(CANDIDATES)))
    empty = np.zeros(n_segments, dtype=bool)
    for s, (start, end) in enumerate(boundaries):
        evidence = segment_evidence(notes, start, end)
        total = evidence.sum()
        if total <= 0:
            empty[s] = True
            continue
        share = evidence / total
        on = TEMPLATES @ share
        roots = np.array([share[root] for root, _ in CANDIDATES])
        scores[s] = sharpness * (on - (1.0 - on) + 0.3 * roots) + prior
    bar_starts = np.asarray(downbeats if downbeats is not None else [b[0] for b in boundaries], dtype=float)
    on_bar = [bool(np.any(np.abs(bar_starts - start) < 1e-6)) for start, _ in boundaries]
    tonic = CANDIDATES.index((key.tonic, "maj" if key.mode == "major" else "min"))
    # Viterbi over candidates; empty segments are neutral so the previous chord carries through
    path_score = scores[0].copy() if not empty[0] else np.where(np.arange(len(CANDIDATES)) == tonic, 0.0, -1.0)
    back = np.zeros((n_segments, len(CANDIDATES)), dtype=int)
    for s in range(1, n_segments):
        stay = path_score
        best_prev = int(np.argmax(path_score))
        penalty = change_penalty + (off_downbeat_penalty if not on_bar[s] else 0.0)
        move = path_score[best_prev] - (penalty if not empty[s] else 50.0)
        choose_stay = stay >= move
        back[s] = np.where(choose_stay, np.arange(len(CANDIDATES)), best_prev)
        path_score = np.where(choose_stay, stay, move) + (scores[s] if not empty[s] else 0.0)
    states = [int(np.argmax(path_score))]
    for s in range(n_segments - 1, 0, -1):
        states.append(int(back[s, states[-1]]))
    states.reverse()
    return [Chord(start, end, *CANDIDATES[state]) for (start, end), state in zip(boundaries, states)]


def dominant_for_leading_tone(chord: Chord, key: Key) -> Chord:
    """vii° held for a whole segment sounds unresolved on its own; played as the dominant seventh it
    belongs to (vii° = V7 without its root, e.g. B–D–F under G7 in C), with the bass on the dominant."""
    if chord.quality == "dim" and chord.root == (key.tonic + 11) % 12:
        return Chord(chord.start, chord.end, (key.tonic + 7) % 12, "7")
    return chord


def closing_cadence(chords: list[Chord], key: Key, last_bar: float) -> list[Chord]:
    """The piece closes on an authentic cadence: from `last_bar` (s) to the end one tonic chord, and the chord
    sounding just before it becomes the dominant seventh (V7 in minor too: the raised leading tone)."""
    if not chords or last_bar >= chords[-1].end - 1e-6:
        return chords
    end = chords[-1].end
    before = [c for c in chords if c.start < last_bar - 1e-6]
    if before:
        last = before[-1]
        before[-1] = Chord(last.start, min(last.end, last_bar), (key.tonic + 7) % 12, "7")
    return before + [Chord(last_bar, end, key.tonic, "maj" if key.mode == "major" else "min")]


def segment_bounds(downbeats: list[float], beat_times: list[float], end: float, per_bar: int = 1) -> list[tuple[float, float]]:
    """Bar (per_bar=1) or half-bar (per_bar=2) segments in seconds; a half-bar splits at beat
    (meter+1)//2 counted from 0 (beat 3 of 4/4 and of 3/4), so a chord change lands on a beat."""
    edges = [d for d in downbeats if d < end] + [end]
    segments = []
    for start, stop in zip(edges[:-1], edges[1:]):
        if stop <= start:
            continue
        beats = [start] + [b for b in beat_times if start + 1e-6 < b < stop - 1e-6]
        if per_bar == 2 and len(beats) >= 2:
            middle = beats[(len(beats) + 1) // 2]
            segments += [(start, middle), (middle, stop)]
        else:
            segments.append((start, stop))
    return segments


def beat_bounds(beat_times: list[float], end: float) -> list[tuple[float, float]]:
    """One segment per beat (for evaluating against per-beat chord labels)."""
    edges = [b for b in beat_times if b < end] + [end]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
