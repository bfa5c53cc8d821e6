"""The accompaniment's pitched parts: chords voiced in the style's pattern (pad, comp, arpeggio, strum) and the
bass under them, on the arranger's bars (beats, per-beat strength, pattern level). The final chord of a
piece is held to the end in every pattern: the cadence lands with the picture's last frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from v2m.stages.arrange.harmony import Chord
from v2m.stages.arrange.styles import Style


@dataclass(frozen=True)
class Bar:
    start: float            # seconds
    beats: list[float]      # beat starts in the bar plus the next bar's downbeat, seconds
    strength: list[int]     # per beat: 0 none, 1 weak, 2 strong
    motion: float           # 0..1
    level: int              # 0 silent .. 3 full


def _vel(value: float) -> int:
    return int(np.clip(round(value), 1, 127))



def voice(chord: Chord, register: tuple[int, int], voices: int, previous: list[int] | None) -> list[int]:
    """A close-position voicing of `chord` inside `register`, as near as possible to the previous one
    (smallest total movement: smooth voice leading)."""
    low, high = register
    pcs = list(chord.pitch_classes)
    best, best_cost = None, np.inf
    for inversion in range(len(pcs)):
        order = pcs[inversion:] + pcs[:inversion]
        for base in range(low, low + 12):
            if base % 12 != order[0]:
                continue
            pitches = [base]
            for k in range(1, voices):
                pc = order[k % len(order)]
                nxt = pitches[-1] + 1
                while nxt % 12 != pc:
                    nxt += 1
                pitches.append(nxt)
            if pitches[-1] > high:
                continue
            centre = (low + high) / 2
            cost = (sum(abs(a - b) for a, b in zip(pitches, previous)) if previous and len(previous) == len(pitches)
                    else abs(float(np.mean(pitches)) - centre))
            if cost < best_cost:
                best, best_cost = pitches, cost
    return best or [low + (pc - low) % 12 for pc in pcs]


def merge_repeats(chords: list[Chord]) -> list[Chord]:
    """Consecutive segments with the same chord joined into one."""
    merged: list[Chord] = []
    for chord in chords:
        if merged and merged[-1].label == chord.label and abs(merged[-1].end - chord.start) < 1e-6:
            merged[-1] = Chord(merged[-1].start, chord.end, chord.root, chord.quality)
        else:
            merged.append(chord)
    return merged


def _beats_in(segment: Chord, bars: list[Bar]) -> list[tuple[float, float, int, Bar]]:
    """(beat start, beat end, strength, bar) for the beats inside a chord segment."""
    out = []
    for bar in bars:
        for j in range(len(bar.beats) - 1):
            if segment.start - 1e-6 <= bar.beats[j] < segment.end - 1e-6:
                out.append((bar.beats[j], bar.beats[j + 1], bar.strength[j], bar))
    return out


def harmony_part(chords: list[Chord], bars: list[Bar], style: Style, loudness: Callable[..., float],
                 rng: np.random.Generator, hold_last: bool = True) -> list:
    """Chords voiced per the style's pattern: pad (held), comp (hits on strong beats), arpeggio, strum; with
    `hold_last` the last chord is struck once and held to its end, whatever the pattern."""
    events, previous = [], None
    pattern = style.harmony.pattern
    if pattern == "pad":
        # a pad holds through repeated chords: re-attacking the same notes every bar sounds mechanical
        for chord in merge_repeats(chords):
            previous = voice(chord, style.register.harmony, style.harmony.voices, previous)
            events += [(chord.start, chord.end - chord.start, p, _vel(0.7 * loudness(chord.start))) for p in previous]
        return events
    for index, chord in enumerate(chords):
        pitches = voice(chord, style.register.harmony, style.harmony.voices, previous)
        previous = pitches
        beats = _beats_in(chord, bars)
        if not beats or (hold_last and index == len(chords) - 1):  # no beats, or the closing chord: held
            events += [(chord.start, chord.end - chord.start, p, _vel(0.7 * loudness(chord.start))) for p in pitches]
            continue
        for k, (start, stop, strength, bar) in enumerate(beats):
            span = stop - start
            velocity = 0.75 * loudness(start) * (1.1 if strength == 2 else 1.0)
            if pattern == "comp":
                if k == 0 or strength == 2 or (strength == 1 and bar.level >= 2) or bar.level >= 3:
                    length = span * (0.9 if bar.level <= 1 else 0.6)
                    events += [(start, length, p, _vel(velocity)) for p in pitches]
            elif pattern == "arpeggio":
                steps = max(1, round(style.harmony.arpeggio_steps * max(bar.level, 1) / 3))
                cycle = pitches + pitches[-2:0:-1]  # up then down
                for s in range(steps):
                    note = cycle[(k * steps + s) % len(cycle)]
                    events.append((start + span * s / steps, span / steps * 0.95, note, _vel(velocity * (1.0 if s == 0 else 0.85))))
            elif pattern == "strum":
                strokes = [(0.0, 1)] + ([(0.5, -1)] if bar.level >= 3 or (bar.level == 2 and strength == 2) else [])
                if k > 0 and strength == 0 and bar.level <= 1:
                    continue
                for offset, direction in strokes:
                    order = pitches if direction > 0 else pitches[::-1]
                    onset = start + span * offset
                    for n, p in enumerate(order):
                        # a strum spreads the chord by 6 ms a string (under 30 ms in all: heard as one onset),
                        # down-strokes low→high
                        events.append((onset + 0.006 * n, span * (0.5 if offset or len(strokes) > 1 else 0.95) - 0.006 * n,
                                       p, _vel(velocity * (1.0 if direction > 0 else 0.8) + rng.integers(-2, 3))))
    return events


def _bass_pitch(pc: int, register: tuple[int, int], near: int | None) -> int:
    low, high = register
    options = [p for p in range(low, high + 1) if p % 12 == pc] or [low + (pc - low) % 12]
    target = near if near is not None else low + 7
    return min(options, key=lambda p: (abs(p - target), p))


def bass_part(chords: list[Chord], bars: list[Bar], style: Style, loudness: Callable[..., float]) -> list:
    """Roots (and fifths) of the chords, re-attacked where the per-beat strength says: always on the
    chord's first beat and on strong beats; on weak beats from level 1 (root_fifth) or 2 (others)."""
    pattern = style.bass.pattern
    onsets: list[tuple[float, int, float]] = []  # (time, pitch, velocity)
    last = None
    for chord in chords:
        root = _bass_pitch(chord.root, style.register.bass, last)
        last = root
        fifth = root + 7 if root + 7 <= style.register.bass[1] else root - 5
        beats = _beats_in(chord, bars) or [(chord.start, chord.end, 2, bars[0] if bars else None)]
        for k, (start, stop, strength, bar) in enumerate(beats):
            level = bar.level if bar is not None else 1
            velocity = 0.9 * loudness(start) * (1.1 if strength == 2 else 0.9)
            if k == 0 or strength == 2:
                onsets.append((start, root, velocity))
            elif strength == 1 and (level >= 1 if pattern == "root_fifth" else level >= 2):
                onsets.append((start, fifth if pattern == "root_fifth" else root, velocity))
            if pattern in ("octave", "pulse") and level >= 2:
                # eighth-note drive between beats: octave jumps (disco / chiptune) or a repeated root (ostinato)
                onsets.append((start + 0.5 * (stop - start), root + 12 if pattern == "octave" and root + 12 <= 127 else root,
                               0.85 * velocity))
        last = root
    onsets.sort()
    events = []
    ends = [t for t, _, _ in onsets[1:]] + [chords[-1].end if chords else 0.0]
    for (time, pitch, velocity), stop in zip(onsets, ends):
        length = (stop - time) * (0.5 if pattern in ("octave", "pulse") else 0.95)
        events.append((time, length, pitch, _vel(velocity)))
    return events
