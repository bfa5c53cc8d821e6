"""The forced parts of a generated piece: the head (BOS + global controls), each bar's opening (`Bar`, the bar's
controls from the video, its meter), a --prime theme's bars, and the mask of tokens never sampled freely.

The sampler (generate/sampler.py) forces these and samples the rest.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

from v2m.errors import V2MError
from v2m.stages.tokens import controls as ctl
from v2m.stages.tokens.structure import bar_beats

# MIDI pitch ranges a register allows (inclusive); wide enough for a melody and its accompaniment
REGISTER_PITCHES = {"low": (28, 72), "mid": (40, 84), "high": (52, 96)}


@dataclass(frozen=True)
class Plan:
    """The forced parts of a piece: `head` (BOS + global controls), then per bar its opening tokens
    (`Bar` + the bar's controls, and for --prime bars the theme's notes too). The head and the
    first `theme_bars` bars stay pinned in every sliding window."""

    head: tuple[int, ...]
    bars: tuple[tuple[int, ...], ...]
    theme_bars: int = 0
    theme_from: int = 0  # the theme's first bar: 1 after a pickup bar (the theme starts on a downbeat)


def extend_grid(controls: dict, bars: int) -> dict:
    """Controls with exactly `bars` bars: the first `bars` (the music then ends where bar `bars` would start),
    or all of them and more after the video's end, repeating the bar controls cyclically in bars of the
    video's meter on a beat grid continued at the median beat interval (seconds)."""
    have = controls["bars"]
    if not have:
        raise V2MError("the controls have no bars (the video is shorter than one bar)",
                       "use a longer clip, or pass --bars N to generate N bars anyway")
    meter = int(controls["meter"])
    beat_times = [float(t) for t in controls["beat_times"]]
    downbeats = [float(t) for t in controls["downbeats"]]
    if len(beat_times) >= 2:
        step = statistics.median(b - a for a, b in zip(beat_times, beat_times[1:]))
    else:
        step = 60.0 / float(controls["tempo_bpm"])
    if not step > 0:  # a flat grid would put every added bar at the same time (the reader refuses one; a caller may not)
        raise V2MError("the controls' beat grid does not advance (beat times are not increasing)",
                       "make the controls again with v2m encode-tokens")
    end = float(controls.get("duration") or 0.0) or beat_times[-1] + step
    out = dict(controls)
    if bars <= len(have):
        end = downbeats[bars] if bars < len(downbeats) else end
        out.update(bars=have[:bars], downbeats=downbeats[:bars], beat_times=[t for t in beat_times if t < end - 1e-6],
                   duration=round(end, 3))
        return out
    extra = []
    for i in range(len(have), bars):  # past the video: bars of the video's meter, their controls repeated
        start = end + (i - len(have)) * meter * step
        extra.append(dict(have[i % len(have)], start=round(start, 3), beats=meter))
        beat_times.extend(round(start + step * k, 3) for k in range(meter))
    out.update(bars=list(have) + extra, downbeats=downbeats + [b["start"] for b in extra], beat_times=beat_times,
               duration=round(end + (bars - len(have)) * meter * step, 3))
    return out


def build_plan(controls: dict, vocab, theme: list[list[int]] | None = None) -> Plan:
    """Forced tokens for every bar of `controls`; `theme` (a prime's bars, each its note tokens without
    `Bar` or controls) opens the piece from its first downbeat (after a pickup bar, which is sampled): theme bar
    i is forced whole into bar i (i + 1 after a pickup), under the video's controls."""
    head = (vocab.bos, *ctl.global_control_ids(controls, vocab))
    signatures = time_signature_ids(vocab)
    meters = bar_beats(controls)
    start = 1 if len(meters) > 1 and meters[0] < int(controls["meter"]) else 0  # after a pickup bar
    bars = []
    for i, (bar, beats) in enumerate(zip(controls["bars"], meters)):
        # the video's meter is forced too, bar by bar: a bar of the music always has as many beats as the video's
        # bar (a pickup bar, a scene in another meter, a short last bar)
        meter = signatures.get(beats)
        opening = (vocab.bar_id, *ctl.bar_control_ids(bar, controls, vocab), *([meter] if meter is not None else []))
        if theme and 0 <= i - start < len(theme):
            opening = opening + tuple(theme[i - start])
        bars.append(opening)
    return Plan(head=head, bars=tuple(bars), theme_bars=min(start + len(theme or ()), len(bars)) if theme else 0,
                theme_from=start if theme else 0)


def time_signature_ids(vocab) -> dict[int, int]:
    """Beats per bar → the id of the TimeSig token of that many quarter-note beats (MidiTok REMI's `TimeSig_4/4`)."""
    ids = {}
    for token, name in enumerate(vocab.token_names()):
        if name.startswith("TimeSig_") and name.endswith("/4"):
            ids[int(name[len("TimeSig_"):-2])] = token
    return ids


STEPS_PER_BEAT = 12  # REMI Position resolution of the vocabulary (stages/tokens/vocab.py TokenizerSpec)


def note_kinds(vocab) -> dict[int, tuple[str, int]]:
    """REMI note tokens by id: ("pos", steps into the bar) | ("pitch", MIDI) | ("dur", steps); a step is a twelfth
    of a beat (the vocabulary's Position resolution)."""
    kinds = {}
    for token, name in enumerate(vocab.token_names()):
        if name.startswith("Position_"):
            kinds[token] = ("pos", int(name.split("_")[1]))
        elif name.startswith("Pitch_"):
            kinds[token] = ("pitch", int(name.split("_")[1]))
        elif name.startswith("Duration_"):
            a, b, r = (int(x) for x in name.split("_")[1].split("."))
            kinds[token] = ("dur", round((a + b / r) * STEPS_PER_BEAT))
    return kinds


class NoteTokens:
    """The vocabulary's note tokens both ways: `kind` (id → note_kinds' pair), `pitch_id` and `position_id`
    (value → id), `durations` (sorted (steps, id))."""

    def __init__(self, vocab):
        self.kind = note_kinds(vocab)
        self.pitch_id = {v: t for t, (k, v) in self.kind.items() if k == "pitch"}
        self.position_id = {v: t for t, (k, v) in self.kind.items() if k == "pos"}
        self.durations = sorted((v, t) for t, (k, v) in self.kind.items() if k == "dur")

    def duration_token(self, steps: int) -> int:
        """The longest duration token of at most `steps` (at least the shortest)."""
        best = self.durations[0][1]
        for value, token in self.durations:
            if value <= steps:
                best = token
        return best


def theme_bars(prime_ids: list[int], vocab, meter: int | None = None) -> list[list[int]]:
    """A prime's bars as lists of note tokens (controls, time signatures and specials dropped), re-barred into
    bars of `meter` beats: a theme in 4/4 primes a 3/4 video as 3/4 bars, its notes where they were in time
    (not squeezed into bars too short for them). Empty bars inside a theme are rests, kept."""
    tokens = NoteTokens(vocab)
    kinds = tokens.kind
    names = vocab.token_names()
    notes, start, beats, position, pitch, opened = [], 0.0, 4.0, 0, None, False
    for token in prime_ids:
        name = names[token] if 0 <= token < len(names) else ""
        if token == vocab.bar_id:
            start, position, pitch = start + beats if opened else 0.0, 0, None
            opened = True
        elif name.startswith("TimeSig_"):
            n, d = name[len("TimeSig_"):].split("/")
            beats = int(n) * 4 / int(d)
        elif token in kinds and opened:
            kind, value = kinds[token]
            if kind == "pos":
                position = value
            elif kind == "pitch":
                pitch = value
                notes.append([start * STEPS_PER_BEAT + position, value, 0])
            elif pitch is not None and notes:
                notes[-1][2] = value
    if not notes:
        return []
    step = STEPS_PER_BEAT * int(meter or beats)
    bars: list[list[int]] = [[] for _ in range(int(max(n[0] for n in notes) // step) + 1)]
    last = {}
    for onset, midi, length in sorted(notes, key=lambda n: (n[0], n[1])):
        bar, at = divmod(int(round(onset)), step)
        if last.get(bar) != at:
            bars[bar].append(tokens.position_id[at])
            last[bar] = at
        bars[bar] += [tokens.pitch_id[midi], tokens.duration_token(length)]
    return bars


# ---------------------------------------------------------------- the style's melody

def melody_feel(melody, bpm: float) -> str:
    """"half" when the video is faster than the style likes (by a quarter), "double" when slower, else "normal"."""
    low, high = melody.tempo
    return "half" if bpm > 1.25 * high else ("double" if bpm < low / 1.25 else "normal")


def melody_settings(style, controls: dict) -> dict:
    """What the style asks of the line for these controls: density shift, onset grid, shortest note (steps of a
    twelfth of a beat), pitch range (the picture's register inside the style's), and the feel."""
    melody = style.melody
    feel = melody_feel(melody, float(controls.get("tempo_bpm") or 120.0))
    shift = melody.density + {"half": -1, "double": 1}.get(feel, 0)
    grid = {"half": max(1, melody.grid // 2), "double": min(12, melody.grid * 2)}.get(feel, melody.grid)
    grid = max(g for g in (1, 2, 3, 4, 6, 12) if 12 % g == 0 and g <= grid)
    shortest = max(1, round(melody.shortest * STEPS_PER_BEAT * {"half": 2, "double": 0.5}.get(feel, 1)))
    return {"style": style.name, "feel": feel, "density_shift": shift, "grid": grid, "shortest_steps": shortest,
            "pitches": list(register_pitches(style.register.melody, controls.get("register")))}


def register_pitches(style_range: tuple[int, int], register: str | None) -> tuple[int, int]:
    """The picture's register (low/mid/high) as two thirds of the style's melody range: its lower, middle or
    upper part (the whole range without a register)."""
    low, high = int(style_range[0]), int(style_range[1])
    part = round((high - low) * 2 / 3)
    if register == "low":
        return low, low + part
    if register == "high":
        return high - part, high
    if register == "mid":
        middle = (low + high) // 2
        return middle - part // 2, middle - part // 2 + part
    return low, high


def shaped_controls(controls: dict, settings: dict, n_density: int) -> dict:
    """The controls with every bar's density class moved by the style's shift (kept in the vocabulary's range)."""
    shift = int(settings["density_shift"])
    if not shift:
        return controls
    bars = [dict(bar, density=min(max(int(bar["density"]) + shift, 0), n_density - 1)) for bar in controls["bars"]]
    return {**controls, "bars": bars}


# ---------------------------------------------------------------- logit masks

def free_mask(vocab, register: str | None, settings: dict | None = None):
    """Bool [V], True where a token may NOT be sampled between bar lines: specials other than EOS, every
    control token (controls come only from the video), time signatures (the video's meter is forced after
    each `Bar`), drum pitches (the line is pitched; `arrange` adds the drums), pitches outside the register;
    with a style's `settings` (melody_settings), its pitch range instead, onsets off its grid and notes
    shorter than its shortest."""
    names = vocab.token_names()
    banned = torch.zeros(len(names), dtype=torch.bool)
    banned[[vocab.bos, vocab.pad]] = True
    low, high = settings["pitches"] if settings else REGISTER_PITCHES.get(register or "", (0, 127))
    every = STEPS_PER_BEAT // settings["grid"] if settings else 1
    shortest = settings["shortest_steps"] if settings else 0
    kinds = note_kinds(vocab)
    for token, name in enumerate(names):
        kind, value = kinds.get(token, (None, 0))
        if vocab.is_control(token) or name.startswith(("TimeSig_", "PitchDrum_")):
            banned[token] = True
        elif kind == "pitch":
            banned[token] = not low <= value <= high
        elif kind == "pos":
            banned[token] = value % every != 0
        elif kind == "dur":
            banned[token] = value < shortest
    return banned
