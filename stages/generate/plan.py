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
    `Bar` or controls) opens the piece: bar i < len(theme) is forced whole, under the video's controls."""
    head = (vocab.bos, *ctl.global_control_ids(controls, vocab))
    signatures = time_signature_ids(vocab)
    bars = []
    for i, bar in enumerate(controls["bars"]):
        # the video's meter is forced too, bar by bar: a bar of the music always has as many beats as the video's
        # bar (a pickup bar, a scene in another meter, a short last bar)
        meter = signatures.get(int(bar.get("beats", controls["meter"])))
        opening = (vocab.bar_id, *ctl.bar_control_ids(bar, controls, vocab), *([meter] if meter is not None else []))
        if theme and i < len(theme):
            opening = opening + tuple(theme[i])
        bars.append(opening)
    return Plan(head=head, bars=tuple(bars), theme_bars=min(len(theme or ()), len(bars)))


def time_signature_ids(vocab) -> dict[int, int]:
    """Beats per bar → the id of the TimeSig token of that many quarter-note beats (MidiTok REMI's `TimeSig_4/4`)."""
    ids = {}
    for token, name in enumerate(vocab.token_names()):
        if name.startswith("TimeSig_") and name.endswith("/4"):
            ids[int(name[len("TimeSig_"):-2])] = token
    return ids


def theme_bars(prime_ids: list[int], vocab) -> list[list[int]]:
    """A prime's bars as lists of note tokens: split at `Bar`; controls, time signatures and specials dropped."""
    special = {vocab.bos, vocab.eos, vocab.pad, *time_signature_ids(vocab).values()}
    bars: list[list[int]] = []
    for token in prime_ids:
        if token == vocab.bar_id:
            bars.append([])
        elif bars and token not in special and not vocab.is_control(token):
            bars[-1].append(token)
    return bars if any(bars) else []  # empty bars inside a theme are rests, kept


# ---------------------------------------------------------------- logit masks

def free_mask(vocab, register: str | None):
    """Bool [V], True where a token may NOT be sampled between bar lines: specials other than EOS, every
    control token (controls come only from the video), time signatures (the video's meter is forced after
    each `Bar`), drum pitches (the line is pitched; `arrange` adds the drums), pitches outside the register."""
    names = vocab.token_names()
    banned = torch.zeros(len(names), dtype=torch.bool)
    banned[[vocab.bos, vocab.pad]] = True
    low, high = REGISTER_PITCHES.get(register or "", (0, 127))
    for token, name in enumerate(names):
        if vocab.is_control(token) or name.startswith(("TimeSig_", "PitchDrum_")):
            banned[token] = True
        elif name.startswith("Pitch_"):
            pitch = _number(name)
            banned[token] = pitch is not None and not low <= pitch <= high
    return banned


def _number(name: str) -> int | None:
    tail = name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else None
