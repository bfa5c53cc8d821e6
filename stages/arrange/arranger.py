"""The arranger: a generated line → a multi-track piece (melody, harmony, bass, drums) on the video's grid.

Everything is placed in seconds on the controls' beat grid (bar i starts at `downbeats[i]`), so
the accompaniment lands on the video's beats however the tempo drifts. From the controls:

- per-bar motion = 0.6 · density class / top class + 0.4 · velocity / 127 → intensity (style's
  `motion_drive` mixes it with a fixed `base_intensity`; median of 3 bars within a phrase, so one-bar
  blips do not flip the pattern) → pattern level 0 (silent) .. 3 (full);
- per-beat strength (0/1/2) → where the bass re-attacks, the comping hits, the drum accents;
- `rhythm.cuts` → a drum fill into and a crash on each cut (stages/arrange/grooves.py);
- dynamics: velocities follow the motion (bars' motion and the smoothed video envelope), with a fade
  over the last `fade_seconds`.

Chords come from the generated notes (stages/arrange/harmony.py: Krumhansl–Schmuckler key, template
matching with a diatonic prior, Viterbi smoothing), one per bar or half-bar. The input Score may
be tick- or second-based; the result has the same time unit, tpq and tempo map. All pitched notes
of the input become the melody track; drum tracks in the input are not kept (the style's kit plays).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from v2m.errors import V2MError
from v2m.stages.arrange import grooves
from v2m.stages.arrange.harmony import (
    Chord,
    Key,
    dominant_for_leading_tone,
    estimate_chords,
    find_key,
    notes_array,
    segment_bounds,
)
from v2m.stages.arrange.styles import Style, load_style, resolved_settings

ROLES = ("melody", "harmony", "bass", "drums")
FADE_FLOOR = 0.2  # velocity factor reached at the very end of the fade


@dataclass(frozen=True)
class Bar:
    start: float            # seconds
    beats: list[float]      # beat starts in the bar plus the next bar's downbeat, seconds
    strength: list[int]     # per beat: 0 none, 1 weak, 2 strong
    motion: float           # 0..1
    level: int              # 0 silent .. 3 full


@dataclass(frozen=True)
class Arrangement:
    score: Any                 # symusic Score, same time unit as the input
    key: Key
    chords: list[Chord]        # as played (a segment-long vii° becomes V7)
    bars: list[Bar]
    settings: dict             # the resolved style and arranger settings, for artifacts


def arrange(score, controls: dict, style: str | Style | dict = "pop", seed: int = 0):
    """Arrange `score` (a symusic Score: the generated line) with `controls` (a v2m.controls `data` dict).

    `style`: a bundled style name, a path to a style TOML, a Style, or the `settings` dict that
    `arrangement_settings` recorded in an artifact (what decode should pass, so custom styles replay).

    Returns a symusic Score with one named track per role (melody, harmony, bass, drums; a role the
    style turns off is left out). Same inputs and seed → the same Score.
    """
    return arrange_detailed(score, controls, style, seed).score


def arrangement_settings(style: str | Style | dict, seed: int = 0) -> dict:
    """What an artifact records about the arrangement: style name, every resolved style setting, seed."""
    resolved = load_style(style)
    return {"style": resolved.name, "seed": seed, "settings": resolved_settings(resolved)}


def arrange_detailed(score, controls: dict, style: str | Style | dict = "pop", seed: int = 0) -> Arrangement:
    """`arrange`, also returning the key, the chords and the per-bar levels it used."""
    import symusic

    style = load_style(style)
    rng = np.random.default_rng(seed)
    unit = time_unit(score)
    seconds = score if unit == "second" else score.to("second")
    end, bars = beat_grid(controls, style)
    notes = notes_array(seconds)
    key = find_key(notes, fallback_mode=controls.get("mode", "major"))
    beat_times = [b for bar in bars for b in bar.beats[:-1]]
    starts = [b.start for b in bars]
    estimated = estimate_chords(notes, segment_bounds(starts, beat_times, end, style.harmony.chords_per_bar), key, starts)
    chords = [dominant_for_leading_tone(chord, key) for chord in estimated]
    loudness = dynamics_curve(bars, end, style, motion_envelope(controls))

    out = symusic.Score(seconds.tpq, ttype="second")
    for kind in ("tempos", "time_signatures", "key_signatures"):
        getattr(out, kind).extend(getattr(seconds, kind))
    parts: dict[str, tuple[list[tuple[float, float, int, int]], int, bool]] = {
        "melody": (melody_part(notes, style, loudness), style.instruments.melody, False)}
    if style.harmony.pattern != "none":
        parts["harmony"] = (harmony_part(chords, bars, style, loudness, rng), style.instruments.harmony, False)
    if style.bass.pattern != "none":
        parts["bass"] = (bass_part(chords, bars, style, loudness), style.instruments.bass, False)
    if style.drums.family != "none":
        parts["drums"] = (drum_part(bars, controls, end, style, loudness, rng), style.instruments.drum_kit, True)
    for role, (events, program, is_drum) in parts.items():
        track = symusic.Track(role, program, is_drum, ttype="second")
        # The per-track level is baked into the velocities (× level / 100) with CC 7 left at the GM default
        # 100: SoundFont 2 maps velocity and CC 7 to attenuation through the same concave curve, so this
        # sounds the same as CC 7 = level (measured with FluidR3_GM: equal RMS within 0.2 dB) and it
        # survives renderers that keep notes only (decode's flatten_tempo drops controller events).
        track.controls.append(symusic.ControlChange(0.0, 7, 100, ttype="second"))
        scale = getattr(style.mix, role) / 100.0
        for time, duration, pitch, velocity in events:
            track.notes.append(symusic.Note(float(time), float(max(duration, 0.01)), int(pitch), _vel(velocity * scale),
                                            ttype="second"))
        track.sort()
        out.tracks.append(track)
    settings = arrangement_settings(style, seed) | {"key": key.name}
    result = out if unit == "second" else out.to(unit)
    return Arrangement(result, key, chords, bars, settings)


# ---------------------------------------------------------------- grid and dynamics

def time_unit(score) -> str:
    """"tick", "quarter" or "second": a symusic Score's time unit (its ttype prints as symusic.core.Tick)."""
    return str(score.ttype).rsplit(".", 1)[-1].lower()


def beat_grid(controls: dict, style: Style) -> tuple[float, list[Bar]]:
    """(end s, bars) from a controls payload: beats per bar, strengths, motion and pattern level."""
    beat_times = [float(b) for b in controls.get("beat_times", [])]
    bar_data = controls.get("bars", [])
    downbeats = [float(d) for d in controls.get("downbeats", [])]
    starts = [float(b["start"]) for b in bar_data] if bar_data and all("start" in b for b in bar_data) else downbeats
    if not starts:
        raise V2MError("the controls have no bars (no downbeats): nothing to put an arrangement on",
                       "make controls from a rhythm with `v2m encode-tokens RHYTHM.json`, or pass --arrange none")
    period = float(np.median(np.diff(beat_times))) if len(beat_times) >= 2 else 0.5
    meter = int(controls.get("meter", 4))
    end = float(controls.get("duration") or (starts[-1] + meter * period))
    # density classes are 0..n_density-1; without n_density in the payload, the piece's busiest bar (at
    # least class 3) is the top, so a calm clip with classes 0-1 is not inflated to full motion
    top_density = int(controls["n_density"]) - 1 if controls.get("n_density") else \
        max(max((int(b.get("density", 0)) for b in bar_data), default=0), 3)
    grid, motions, phrase = [], [], []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else max(end, start + period)
        beats = [b for b in beat_times if start - 1e-6 <= b < stop - 1e-6] or [start]
        beats[0] = start
        # a grid that stops early (or a long last beat) is extended at the median period
        while stop - beats[-1] > 1.5 * period and len(beats) < meter:
            beats.append(beats[-1] + period)
        info = bar_data[i] if i < len(bar_data) else {}
        strength = [int(s) for s in info.get("strength", [])][:len(beats)]
        strength += [1] * (len(beats) - len(strength))
        grid.append((start, beats + [stop], strength))
        motions.append(float(np.clip(0.6 * int(info.get("density", 0)) / max(top_density, 1)
                                     + 0.4 * float(info.get("velocity", 64)) / 127.0, 0.0, 1.0)))
        phrase.append(i == 0 or bool(info.get("phrase", False)))
    drive, base = style.dynamics.motion_drive, style.dynamics.base_intensity
    intensity = smooth_within_phrases([drive * m + (1 - drive) * base for m in motions], phrase)
    levels = [grooves.level_of(x, style.drums.min_level, style.drums.max_level) for x in intensity]
    bars = [Bar(start, beats, strength, motion, level)
            for (start, beats, strength), motion, level in zip(grid, motions, levels)]
    return end, bars


def smooth_within_phrases(values: list[float], phrase: list[bool]) -> list[float]:
    """Median of each bar and its neighbours, never across a phrase start (a scene cut): a drummer
    changes pattern by sections, not on a one-bar blip, but a new scene may change it at once."""
    out = []
    for i, value in enumerate(values):
        window = [value]
        if i > 0 and not phrase[i]:
            window.append(values[i - 1])
        if i + 1 < len(values) and not phrase[i + 1]:
            window.append(values[i + 1])
        out.append(float(np.median(window)) if len(window) == 3 else value)
    return out


def motion_envelope(controls: dict, window: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """(times s, 0..1 values) of the video's onset envelope (controls `rhythm.envelope` at `frame_rate`),
    averaged over `window` seconds — the local amount of motion — and scaled so its 95th percentile is 1;
    None when the controls carry no envelope."""
    rhythm = controls.get("rhythm") or {}
    envelope = np.asarray(rhythm.get("envelope") or [], dtype=float)
    rate = float(rhythm.get("frame_rate") or 0.0)
    if envelope.size < 2 or rate <= 0:
        return None
    width = max(1, int(round(window * rate)))
    local = np.convolve(envelope, np.ones(width) / width, mode="same")
    top = float(np.percentile(local, 95))
    return np.arange(envelope.size) / rate, np.clip(local / top, 0.0, 1.0) if top > 0 else np.zeros_like(local)


def dynamics_curve(bars: list[Bar], end: float, style: Style, envelope=None) -> Callable[..., float]:
    """Velocity at time t (s): motion mapped into the style's velocity range, times (unless `faded=False`)
    a linear fade to FADE_FLOOR over the last `fade_seconds`. Motion is the bars' motion (linear between
    bar centres), averaged half and half with the smoothed video envelope when there is one, so loudness
    also follows swells inside a bar."""
    low, high = style.dynamics.velocity_range
    centres = [0.5 * (b.beats[0] + b.beats[-1]) for b in bars] or [0.0]
    motions = [b.motion for b in bars] or [0.5]
    fade = style.dynamics.fade_seconds

    def velocity(t: float, faded: bool = True) -> float:
        motion = float(np.interp(t, centres, motions))
        if envelope is not None:
            motion = 0.5 * motion + 0.5 * float(np.interp(t, envelope[0], envelope[1]))
        level = low + (high - low) * motion
        return level * _fade_factor(t, end, fade) if faded else level

    return velocity


def _vel(value: float) -> int:
    return int(np.clip(round(value), 1, 127))


# ---------------------------------------------------------------- parts

def melody_part(notes: np.ndarray, style: Style, loudness: Callable[..., float]) -> list:
    """The generated notes, moved by whole octaves into the style's melody register, velocities
    following the motion curve (the line's own accents kept as a ±30 % relative factor)."""
    if not len(notes):
        return []
    low, high = style.register.melody
    shift = 12 * int(round(((low + high) / 2 - float(np.median(notes[:, 2]))) / 12))
    mean_velocity = float(np.mean(notes[:, 3])) or 1.0
    events = []
    for onset, offset, pitch, velocity in notes:
        relative = float(np.clip(velocity / mean_velocity, 0.7, 1.3))
        events.append((onset, offset - onset, int(np.clip(pitch + shift, 0, 127)), _vel(loudness(onset) * relative)))
    return events


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
                 rng: np.random.Generator) -> list:
    """Chords voiced per the style's pattern: pad (held), comp (hits on strong beats), arpeggio, strum."""
    events, previous = [], None
    pattern = style.harmony.pattern
    if pattern == "pad":
        # a pad holds through repeated chords: re-attacking the same notes every bar sounds mechanical
        for chord in merge_repeats(chords):
            previous = voice(chord, style.register.harmony, style.harmony.voices, previous)
            events += [(chord.start, chord.end - chord.start, p, _vel(0.7 * loudness(chord.start))) for p in previous]
        return events
    for chord in chords:
        pitches = voice(chord, style.register.harmony, style.harmony.voices, previous)
        previous = pitches
        beats = _beats_in(chord, bars)
        if not beats:
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


def drum_part(bars: list[Bar], controls: dict, end: float, style: Style, loudness: Callable[..., float],
              rng: np.random.Generator) -> list:
    """The style's groove family with fills into and crashes on the scene cuts (controls `rhythm.cuts`)."""
    family = grooves.FAMILIES[style.drums.family]
    cuts = [float(c) for c in (controls.get("rhythm") or {}).get("cuts", []) if 0.0 < float(c) < end]
    plan = [{"beats": bar.beats, "strength": bar.strength, "level": bar.level, "velocity": loudness(bar.start, faded=False)}
            for bar in bars]
    events = grooves.drum_events(family, plan, cuts, fills=style.drums.fills, crashes=style.drums.crash_on_cuts, rng=rng)
    # the fade applies per hit (bar velocities above are unfaded), so a crash in the fade is softer too
    return [(t, d, p, _vel(v * _fade_factor(t, end, style.dynamics.fade_seconds))) for t, d, p, v in events if t < end]


def _fade_factor(t: float, end: float, fade: float) -> float:
    if fade <= 0 or t <= end - fade:
        return 1.0
    return max(FADE_FLOOR, 1.0 - (1.0 - FADE_FLOOR) * (t - (end - fade)) / fade)
