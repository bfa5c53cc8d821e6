"""Drum grooves on a non-uniform (video) beat grid: pattern families, accents, fills and crashes.

A family says which GM drum notes play the kick, backbeat and time-keeping parts and how
finely the time-keeper subdivides the beat at each intensity level (0 silent, 1 sparse,
2 medium, 3 full). Steps are placed by interpolating between the bar's actual beat times,
so every hit lands on the video's grid even when the tempo drifts. Accents follow the
per-beat strength controls (2 = a strong visual beat); each scene cut gets a fill in the
beat(s) before it and a crash plus kick *exactly* at the cut time (not snapped to the grid).
Events are plain tuples (time s, duration s, GM note, velocity 1..127), sorted by time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# GM percussion key map (channel 10)
KICK, SIDE_STICK, SNARE, CLAP, FLOOR_TOM = 36, 37, 38, 39, 41
CLOSED_HAT, LOW_TOM, PEDAL_HAT, MID_TOM, OPEN_HAT, HIGH_TOM = 42, 45, 44, 47, 46, 50
CRASH, RIDE, RIDE_BELL, TAMBOURINE, SHAKER, HIGH_TIMBALE = 49, 51, 53, 54, 70, 65

Event = tuple[float, float, int, int]


@dataclass(frozen=True)
class Family:
    """A drum pattern family.

    `steps` = time-keeper hits per beat at levels 0..3 (0 = none); `kick` plays on the beats
    listed by `kick_beats` at each level ("one" = downbeat, "halves" = downbeat and mid-bar,
    "all" = every beat); the backbeat plays from `backbeat_level` up on the bar's weak half.
    """
    name: str
    kick: int = KICK
    backbeat: int | None = SNARE
    timekeeper: int = CLOSED_HAT
    steps: tuple[int, int, int, int] = (0, 1, 2, 4)
    kick_beats: tuple[str, str, str, str] = ("none", "one", "halves", "halves")
    backbeat_level: int = 2
    fill_notes: tuple[int, ...] = (HIGH_TOM, MID_TOM, LOW_TOM, FLOOR_TOM)
    crash: int = CRASH
    velocity: float = 1.0   # family loudness factor


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("pop"),
    # four-on-the-floor with an offbeat hat feel: kick every beat from level 2
    Family("dance", timekeeper=CLOSED_HAT, steps=(0, 2, 2, 4), kick_beats=("none", "one", "all", "all"), backbeat=CLAP),
    # big, sparse: toms and kick instead of a backbeat, ride for time, few subdivisions
    Family("cinematic", backbeat=FLOOR_TOM, timekeeper=RIDE, steps=(0, 0, 1, 2),
           kick_beats=("none", "one", "one", "halves"), backbeat_level=3, fill_notes=(LOW_TOM, FLOOR_TOM, FLOOR_TOM, KICK)),
    # almost nothing: a shaker pulse and a soft kick; no backbeat ever
    Family("ambient", backbeat=None, timekeeper=SHAKER, steps=(0, 1, 2, 2), kick_beats=("none", "none", "one", "one"),
           backbeat_level=4, fill_notes=(RIDE_BELL, RIDE, RIDE), velocity=0.7),
    # busy 8-bit groove: sixteenth hats early, kick on halves
    Family("chiptune", steps=(0, 2, 4, 4), kick_beats=("none", "halves", "halves", "all"), backbeat_level=1,
           fill_notes=(SNARE, SNARE, HIGH_TIMBALE, SNARE)),
    # acoustic: side stick and tambourine, kick on the half bar
    Family("folk", backbeat=SIDE_STICK, timekeeper=TAMBOURINE, steps=(0, 1, 2, 2), kick_beats=("none", "one", "halves", "halves"),
           fill_notes=(SNARE, SNARE, LOW_TOM, FLOOR_TOM), velocity=0.9),
)}


def level_of(intensity: float, min_level: int = 0, max_level: int = 3) -> int:
    """Intensity 0..1 → pattern level 0 (silent) .. 3 (full), clamped to the style's range."""
    level = 0 if intensity < 0.15 else 1 if intensity < 0.4 else 2 if intensity < 0.7 else 3
    return int(min(max(level, min_level), max_level))


def _kick_on(rule: str, beat: int, meter: int) -> bool:
    if rule == "all":
        return True
    if rule == "one":
        return beat == 0
    if rule == "halves":
        return beat == 0 or (meter >= 4 and beat == meter // 2)
    return False


def _backbeat_on(beat: int, meter: int) -> bool:
    # 4/4: beats 2 and 4; 3/4: beat 3 ("oom-pah-pah" lands the accent late); 2/4: beat 2; 6/8-as-6: beats 4
    if meter == 3:
        return beat == 2
    if meter == 6:
        return beat == 3
    return beat % 2 == 1


def bar_pattern(family: Family, level: int, beat_times: list[float], strength: list[int], velocity: float,
                rng: np.random.Generator) -> list[Event]:
    """One bar's hits. `beat_times` = the bar's beat starts plus the next bar's downbeat (seconds),
    `strength` = per-beat strength class (0 none, 1 weak, 2 strong), `velocity` = base velocity 1..127."""
    meter = len(beat_times) - 1
    events: list[Event] = []
    base = velocity * family.velocity
    for beat in range(meter):
        start, end = beat_times[beat], beat_times[beat + 1]
        span = end - start
        strong = beat < len(strength) and strength[beat] == 2
        accent = 1.15 if strong else 1.0
        if level == 0:
            continue
        if _kick_on(family.kick_beats[level], beat, meter) or (strong and level >= 2):
            events.append((start, span * 0.5, family.kick, _vel(base * accent, rng)))
        if family.backbeat is not None and level >= family.backbeat_level and _backbeat_on(beat, meter):
            events.append((start, span * 0.5, family.backbeat, _vel(base * 0.95 * accent, rng)))
        steps = family.steps[level]
        for step in range(steps):
            # on-beat time-keeper hits louder than off-beats; a strong beat opens the hat
            note = OPEN_HAT if (strong and step == 0 and family.timekeeper == CLOSED_HAT and level == 3) else family.timekeeper
            weight = 0.8 if step == 0 else 0.6
            events.append((start + span * step / steps, span / steps * 0.9, note, _vel(base * weight * accent, rng)))
    return events


def fill(family: Family, start: float, end: float, hits: int, velocity: float, rng: np.random.Generator) -> list[Event]:
    """A fill of `hits` even strokes from `start` to `end` (the cut), seconds: a crescendo walking
    down the family's fill notes (or alternating high/low, picked by the seeded rng)."""
    if end - start <= 0.05 or hits <= 0:
        return []
    span = end - start
    notes = family.fill_notes
    variant = int(rng.integers(0, 2))
    events = []
    for k in range(hits):
        index = (k * len(notes)) // hits if variant == 0 else (k % 2) * (len(notes) - 1)
        gain = 0.6 + 0.4 * (k + 1) / hits
        events.append((start + span * k / hits, span / hits * 0.9, notes[index], _vel(velocity * family.velocity * gain, rng)))
    return events


def cut_hits(family: Family, cut: float, velocity: float, length: float) -> list[Event]:
    """Crash + kick exactly on a scene cut (seconds), the crash ringing for `length` seconds."""
    loud = min(127, int(round(velocity * 1.1)))
    return [(cut, length, family.crash, loud), (cut, min(length, 0.3), family.kick, loud)]


def drum_events(family: Family, bars: list[dict], cuts: list[float], fills: bool = True, crashes: bool = True,
                rng: np.random.Generator | None = None) -> list[Event]:
    """The whole drum part.

    `bars`: per bar `{"beats": [beat starts..., next downbeat] (s), "strength": [int], "level": 0..3,
    "velocity": 1..127}`. A fill replaces the pattern in the beat before each cut (two beats at
    level 3), and the cut itself gets a crash and a kick at its exact time.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    events: list[Event] = []
    for bar in bars:
        events += bar_pattern(family, bar["level"], bar["beats"], bar["strength"], bar["velocity"], rng)
    all_beats = sorted({t for bar in bars for t in bar["beats"]})

    def bar_at(t: float) -> dict:
        starts = [bar["beats"][0] for bar in bars]
        return bars[max(0, int(np.searchsorted(starts, t, side="right")) - 1)]

    period = float(np.median(np.diff(all_beats))) if len(all_beats) >= 2 else 0.5
    for cut in cuts:
        bar = bar_at(cut)
        level = max(bar["level"], 1)
        # the fill starts on the last beat at least 0.6 beat before the cut (two beats at level 3),
        # so it is never squeezed into a sliver when a cut falls just after a beat
        before = [b for b in all_beats if b <= cut - 0.6 * period]
        if fills and before:
            fill_start = before[-2] if level >= 3 and len(before) >= 2 else before[-1]
            per_beat = 4 if level >= 2 else 2
            hits = max(2, int(round((cut - fill_start) / period * per_beat)))
            # the fill replaces whatever the pattern had there (the hits on its first beat stay)
            events = [e for e in events if not (fill_start < e[0] < cut - 1e-6)]
            events += fill(family, fill_start, cut, hits, max(bar["velocity"], 60), rng)
    if crashes:
        # after all fills, so a fill into a close second cut never removes the first cut's crash
        for cut in cuts:
            bar = bar_at(cut)
            events = [e for e in events if not (abs(e[0] - cut) < 0.03 and e[2] in (family.kick, family.crash))]
            span = bar["beats"][-1] - bar["beats"][0]
            events += cut_hits(family, cut, max(bar["velocity"], 70), max(span, 1.0))
    return sorted(events, key=lambda e: (e[0], e[2]))


def _vel(value: float, rng: np.random.Generator) -> int:
    """A MIDI velocity with a small seeded humanisation (±3) so repeats are not machine-identical."""
    return int(np.clip(round(value + rng.integers(-3, 4)), 1, 127))
