"""The arranger: a generated line → a multi-track piece (melody, harmony, bass, drums) on the video's grid.

Everything is placed in seconds on the controls' beat grid (bar i starts at `downbeats[i]`), so
the accompaniment lands on the video's beats however the tempo drifts. From the controls:

- per-bar motion = 0.6 · density class / top class + 0.4 · velocity / 127 → intensity (style's
  `motion_drive` mixes it with a fixed `base_intensity`; median of 3 bars within a phrase, so one-bar
  blips do not flip the pattern) → pattern level 0 (silent) .. 3 (full);
- per-beat strength (0/1/2) → where the bass re-attacks, the comping hits, the drum accents;
- `rhythm.cuts` → a drum fill into and a crash on each cut (stages/arrange/grooves.py);
- dynamics: velocities follow the motion (bars' motion and the smoothed video envelope), with a fade
  over the last `fade_seconds` (at most 15 % of the piece);
- the end: V7 → I on the last bar, the tonic held to the end (harmony.closing_cadence, parts.py).

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
    closing_cadence,
    dominant_for_leading_tone,
    estimate_chords,
    find_key,
    notes_array,
    segment_bounds,
)
from v2m.stages.arrange.parts import Bar, _vel, bass_part, harmony_part
from v2m.stages.arrange.styles import Style, load_style, resolved_settings

ROLES = ("melody", "harmony", "bass", "drums")
FADE_FLOOR = 0.2  # velocity factor reached at the very end of the fade


@dataclass(frozen=True)
class Arrangement:
    score: Any                 # symusic Score, same time unit as the input
    key: Key
    chords: list[Chord]        # as played (a segment-long vii° becomes V7)
    bars: list[Bar]
    settings: dict             # the resolved style and arranger settings, for artifacts


# a role a multi-track model may write (stages/generate/diffusion.py: the tokens' `parts`) → the arranger's role
GIVEN_ROLES = {"bass": "bass", "accompaniment": "harmony"}


def arrange(score, controls: dict, style: str | Style | dict = "pop", seed: int = 0, given: dict | None = None):
    """Arrange `score` (a symusic Score: the generated line) with `controls` (a v2m.controls `data` dict).

    `style`: a bundled style name, a path to a style TOML, a Style, or the `settings` dict that
    `arrangement_settings` recorded in an artifact (what decode should pass, so custom styles replay).

    Returns a symusic Score with one named track per role (melody, harmony, bass, drums; a role the
    style turns off is left out). Same inputs and seed → the same Score.

    `given`: parts the model wrote itself ({"bass": Score, "accompaniment": Score}, on the same grid as `score`):
    a given part with notes takes its role's place (accompaniment → harmony) with the style's instrument and
    dynamics, and the rules fill only the roles left empty (and the drums); chords are then read off all the
    given notes, and the melody keeps the model's register (moving it alone would break the voicing).
    """
    return arrange_detailed(score, controls, style, seed, given).score


def arrangement_settings(style: str | Style | dict, seed: int = 0) -> dict:
    """What an artifact records about the arrangement: style name, every resolved style setting, seed."""
    resolved = load_style(style)
    return {"style": resolved.name, "seed": seed, "settings": resolved_settings(resolved)}


def arrange_detailed(score, controls: dict, style: str | Style | dict = "pop", seed: int = 0,
                     given: dict | None = None) -> Arrangement:
    """`arrange`, also returning the key, the chords and the per-bar levels it used."""
    import symusic

    style = load_style(style)
    rng = np.random.default_rng(seed)
    unit = time_unit(score)
    seconds = score if unit == "second" else score.to("second")
    end, bars = beat_grid(controls, style)
    notes = notes_array(seconds)
    written = {GIVEN_ROLES[role]: notes_array(part) for role, part in (given or {}).items() if role in GIVEN_ROLES}
    written = {role: rows for role, rows in written.items() if len(rows)}
    heard = np.concatenate([notes, *written.values()]) if written else notes  # chords from every written note
    key = find_key(heard, fallback_mode=controls.get("mode", "major"))
    beat_times = [b for bar in bars for b in bar.beats[:-1]]
    starts = [b.start for b in bars]
    estimated = estimate_chords(heard, segment_bounds(starts, beat_times, end, style.harmony.chords_per_bar), key, starts)
    chords = [dominant_for_leading_tone(chord, key) for chord in estimated]
    if len(bars) >= 2:  # an authentic cadence closes the piece: V7 into the tonic on the last bar, to the end
        chords = closing_cadence(chords, key, bars[-1].start)
    loudness = dynamics_curve(bars, end, style, motion_envelope(controls))

    out = symusic.Score(seconds.tpq, ttype="second")
    for kind in ("tempos", "time_signatures", "key_signatures"):
        getattr(out, kind).extend(getattr(seconds, kind))
    parts: dict[str, tuple[list[tuple[float, float, int, int]], int, bool]] = {
        "melody": (melody_part(notes, style, loudness, keep_register=bool(given)), style.instruments.melody, False)}
    if "harmony" in written:
        parts["harmony"] = (written_part(written["harmony"], loudness), style.instruments.harmony, False)
    elif style.harmony.pattern != "none":
        parts["harmony"] = (harmony_part(chords, bars, style, loudness, rng), style.instruments.harmony, False)
    if "bass" in written:
        parts["bass"] = (written_part(written["bass"], loudness), style.instruments.bass, False)
    elif style.bass.pattern != "none":
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
    width = max(1, min(int(round(window * rate)), envelope.size))  # "same" mode returns max(len, width) values
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
    fade = fade_length(style, end)

    def velocity(t: float, faded: bool = True) -> float:
        motion = float(np.interp(t, centres, motions))
        if envelope is not None:
            motion = 0.5 * motion + 0.5 * float(np.interp(t, envelope[0], envelope[1]))
        level = low + (high - low) * motion
        return level * _fade_factor(t, end, fade) if faded else level

    return velocity


# ---------------------------------------------------------------- parts

def melody_part(notes: np.ndarray, style: Style, loudness: Callable[..., float], keep_register: bool = False) -> list:
    """The generated notes, moved by whole octaves into the style's melody register when outside it (unless
    `keep_register`), as long as the style's articulation says, velocities following the motion curve (the line's
    own accents kept as a ±30 % relative factor)."""
    if not len(notes):
        return []
    low, high = style.register.melody
    median = float(np.median(notes[:, 2]))
    # generate samples inside the style's register already (the picture's part of it): such a line stays put
    shift = 0 if keep_register or low <= median <= high else 12 * int(round(((low + high) / 2 - median) / 12))
    mean_velocity = float(np.mean(notes[:, 3])) or 1.0
    sounding = style.melody.articulation
    events = []
    for onset, offset, pitch, velocity in notes:
        relative = float(np.clip(velocity / mean_velocity, 0.7, 1.3))
        length = max((offset - onset) * sounding, min(offset - onset, 0.05))  # staccato, never below 50 ms
        events.append((onset, length, int(np.clip(pitch + shift, 0, 127)), _vel(loudness(onset) * relative)))
    return events


def written_part(notes: np.ndarray, loudness: Callable[..., float]) -> list:
    """A part the model wrote (rows of notes_array), as it is, its velocities following the motion curve."""
    return [(onset, max(offset - onset, 0.05), int(pitch), _vel(loudness(onset))) for onset, offset, pitch, _ in notes]


def drum_part(bars: list[Bar], controls: dict, end: float, style: Style, loudness: Callable[..., float],
              rng: np.random.Generator) -> list:
    """The style's groove family with fills into and crashes on the scene cuts (controls `rhythm.cuts`)."""
    family = grooves.FAMILIES[style.drums.family]
    cuts = [float(c) for c in (controls.get("rhythm") or {}).get("cuts", []) if 0.0 < float(c) < end]
    plan = [{"beats": bar.beats, "strength": bar.strength, "level": bar.level, "velocity": loudness(bar.start, faded=False)}
            for bar in bars]
    events = grooves.drum_events(family, plan, cuts, fills=style.drums.fills, crashes=style.drums.crash_on_cuts, rng=rng)
    # the fade applies per hit (bar velocities above are unfaded), so a crash in the fade is softer too
    return [(t, d, p, _vel(v * _fade_factor(t, end, fade_length(style, end)))) for t, d, p, v in events if t < end]


def fade_length(style: Style, end: float) -> float:
    """The fade-out suits the piece: the style's `fade_seconds`, but never more than 15 % of the piece (a 4 s
    clip fades over 0.6 s, not 3 s)."""
    return min(style.dynamics.fade_seconds, 0.15 * end)


def _fade_factor(t: float, end: float, fade: float) -> float:
    if fade <= 0 or t <= end - fade:
        return 1.0
    return max(FADE_FLOOR, 1.0 - (1.0 - FADE_FLOOR) * (t - (end - fade)) / fade)
