"""Controls from a video's rhythm: what generate asks the model for, bar by bar.

A v2m.rhythm artifact (beats, downbeats, cuts, an onset-strength envelope, per-shot motion and brightness)
becomes a v2m.controls payload on the scale stages/tokens/controls.py reads off music, so the controls the model
was trained on mean the same thing here: onset peaks per tactus beat for density, beat strengths ranked
to the corpus' class shares, scene cuts for phrases, brightness for mode (stages/tokens/controls.py's docstring
gives each rule and why). Per-bar velocity, from motion and onset energy, has no music-side counterpart.
"""

from __future__ import annotations

import numpy as np

from v2m.errors import V2MError
from v2m.stages.tokens.controls import PEAK_PICKING, density_class, density_rate, tempo_class
from v2m.stages.tokens.structure import plan_structure


def pick_peaks(envelope: np.ndarray, frame_rate: float, params: dict = PEAK_PICKING) -> np.ndarray:
    """Frame indices of onset peaks (the peak-picking rule of librosa.util.peak_pick / Böck et al. 2012)."""
    env = np.asarray(envelope, dtype=np.float64)
    frames = lambda s: int(round(s * frame_rate))  # noqa: E731
    pre_max, post_max = max(frames(params["pre_max_s"]), 1), max(frames(params["post_max_s"]), 1)
    pre_avg, post_avg, wait = max(frames(params["pre_avg_s"]), 1), max(frames(params["post_avg_s"]), 1), frames(params["wait_s"])
    peaks, last = [], -wait - 1
    for n in range(len(env)):
        lo_max, hi_max = max(0, n - pre_max), min(len(env), n + post_max)
        if env[n] < env[lo_max:hi_max].max() or env[n] <= 0:
            continue
        if env[n] < env[max(0, n - pre_avg):min(len(env), n + post_avg)].mean() + params["delta"]:
            continue
        if n - last > wait:
            peaks.append(n)
            last = n
    return np.asarray(peaks, dtype=np.int64)


MAX_BAR_BEATS = 6  # the vocabulary's longest bar (TimeSig_6/4); a longer gap between downbeats is split


OPENING = 0.1  # s: a first beat later than this gets an opening (pickup) beat at 0


def music_grid(beats: np.ndarray, downbeats: list[float], duration: float, meter: int) -> tuple[np.ndarray, list[int]]:
    """The music's beats from the video's first frame to its last, and the index of each bar's first beat.

    The rhythm's beats start where motion starts and stop where it stops; music starts with the picture and
    ends with it. So the grid is extended backwards at the first beat period (a beat within 0.2 of a period
    before 0 goes to 0: the opening beat is a little long; more than OPENING seconds before the first beat get a
    short opening beat at 0, a pickup into it), and forwards until the last bar ends at the video's end (no beat in its
    last 0.6 of a period: the last beat is a little long instead). Beats before the first downbeat form a
    pickup bar (fewer beats: it is forced as TimeSig k/4, so the next bar starts on the downbeat); gaps between
    downbeats longer than MAX_BAR_BEATS beats, and the grid past the last downbeat, are cut into bars of
    `meter` beats.
    """
    beats = [float(b) for b in beats]
    head, tail = np.diff(beats[:2])[0] if len(beats) > 1 else 0.5, np.diff(beats[-2:])[0] if len(beats) > 1 else 0.5
    before, t = [], beats[0] - head
    while t > -0.2 * head:
        before.insert(0, max(t, 0.0))
        t -= head
    if not before and beats[0] > OPENING:
        before = [0.0]  # a pickup from the first frame: music starts with the picture, not at the first beat
    after, t = [], beats[-1] + tail
    while t < duration - 0.6 * tail:
        after.append(t)
        t += tail
    grid = [b for b in before + beats + after if b < duration - 0.6 * tail] or [0.0]  # the last beat ≥ 0.6 of a period
    grid = np.asarray(grid)
    index = sorted({int(np.argmin(np.abs(grid - d))) for d in downbeats if d >= grid[0] - 1e-6})
    starts: list[int] = []
    first = index[0] if index else len(grid)
    starts += list(range(first % meter if first > meter else 0, first, meter)) if first else []
    if first and (not starts or starts[0] != 0):
        starts.insert(0, 0)  # the pickup bar
    bounds = index + [len(grid)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        step = meter if b - a > MAX_BAR_BEATS or b == len(grid) else b - a
        starts += list(range(a, b, step))
    return grid, sorted(set(starts))


def controls_from_rhythm(rhythm: dict, vocab) -> dict:
    """A v2m.rhythm payload → a v2m.controls payload (see stages/tokens/controls.py's docstring for each control)."""
    stats = vocab.stats
    tracked = np.asarray(rhythm.get("beats") or [], dtype=np.float64)
    downbeats = [float(t) for t in rhythm.get("downbeats") or []]
    meter = int(rhythm.get("meter") or 4)
    duration = float(rhythm.get("duration") or 0.0)
    if len(tracked) < 2 or not downbeats:
        raise V2MError("the rhythm artifact has fewer than two beats or no downbeats; nothing to put bars on",
                       "use a longer clip, or pass a tempo hint to extract-rhythm")
    frame_rate = float(rhythm["frame_rate"])
    envelope = np.asarray(rhythm.get("envelope") or [], dtype=np.float64)
    peak_times = pick_peaks(envelope, frame_rate, stats.get("peak_picking", PEAK_PICKING)) / frame_rate
    period = float(np.median(np.diff(tracked)))
    duration = duration if duration > 0 else float(tracked[-1]) + period
    beats, starts = music_grid(tracked, downbeats, duration, meter)
    strengths = np.asarray(rhythm.get("beat_strength") or [], dtype=np.float64)
    if len(strengths) != len(tracked):  # no (or a mismatched) beat_strength: the envelope's peak near each beat
        strengths = _envelope_at(envelope, frame_rate, tracked)
    # the extended grid's beats (before and after the motion) are read off the envelope, on the same scale
    extended = _envelope_at(envelope, frame_rate, beats)
    known = {round(float(t), 6): float(v) for t, v in zip(tracked, strengths)}
    beat_classes = _strength_by_shares(np.array([known.get(round(float(t), 6), e) for t, e in zip(beats, extended)]),
                                       stats["strength_shares"])
    cuts = np.asarray(rhythm.get("cuts") or [], dtype=np.float64)
    segments = rhythm.get("segments") or []
    bars = []
    env_means = []
    end_of_music = duration  # the last bar ends with the picture
    for i, first in enumerate(starts):
        last = starts[i + 1] if i + 1 < len(starts) else len(beats)
        start = float(beats[first])
        end = float(beats[last]) if last < len(beats) else end_of_music
        bar_period = (end - start) / (last - first)
        onsets = int(((peak_times >= start - 0.5 * 0.05) & (peak_times < end - 0.025)).sum())
        phrase = i == 0 or bool(((cuts >= start - bar_period / 2) & (cuts < end - bar_period / 2)).any())
        lo, hi = int(start * frame_rate), max(int(end * frame_rate), int(start * frame_rate) + 1)
        env_means.append(float(envelope[lo:hi].mean()) if len(envelope[lo:hi]) else 0.0)
        rate = density_rate(onsets, last - first, end - start, period, stats)
        bars.append({"start": round(start, 3), "beats": last - first, "density": density_class(rate, stats),
                     "strength": [int(c) for c in beat_classes[first:last]] or [0], "phrase": phrase,
                     "motion": _segment_value(segments, start, "motion")})
    top = max(env_means) or 1.0
    for bar, env_mean in zip(bars, env_means):
        # loudness follows how much happens on screen: half motion, half onset energy (both 0..1)
        bar["velocity"] = int(np.clip(round(45 + 70 * (0.5 * bar.pop("motion") + 0.5 * env_mean / top)), 1, 127))
    brightness = float(np.mean([s.get("brightness", 0.5) for s in segments])) if segments else 0.5
    tempo = rhythm.get("tempo") or {}
    bpm = float(tempo.get("bpm") or 60.0 / period)
    controls = {"tokenizer_hash": vocab.hash, "meter": meter, "tempo_bpm": round(bpm, 3),
            "tempo_class": tempo_class(bpm, stats), "mode": "major" if brightness >= stats["mode_brightness_min"] else "minor",
            "register": "low" if brightness < 1 / 3 else ("high" if brightness > 2 / 3 else "mid"),
            "duration": round(end_of_music, 3), "beat_times": [round(float(t), 3) for t in beats],
            "downbeats": [round(float(beats[i]), 3) for i in starts], "bars": bars,
            "rhythm": {"cuts": [round(float(t), 3) for t in cuts], "envelope": list(rhythm.get("envelope") or []),
                       "frame_rate": frame_rate, "scenes": rhythm.get("scenes") or [],
                       "confidence": tempo.get("confidence"), "planned": tempo.get("planned", 0.0)}}
    controls["structure"] = plan_structure(controls)  # sections, phrases, motifs, cadences: read and edit it here
    return controls


def _envelope_at(envelope: np.ndarray, frame_rate: float, times: np.ndarray, window_s: float = 0.05) -> np.ndarray:
    """The envelope's maximum within ±`window_s` of each time (0 outside the envelope)."""
    out = np.zeros(len(times))
    for i, t in enumerate(times):
        lo, hi = max(int((t - window_s) * frame_rate), 0), int((t + window_s) * frame_rate) + 1
        out[i] = envelope[lo:hi].max() if lo < min(hi, len(envelope)) else 0.0
    return out


def _strength_by_shares(strengths: np.ndarray, shares: list[float]) -> np.ndarray:
    """Rank beats by strength; the weakest share[0] get 0, the strongest share[2] get 2 (histogram matching)."""
    n = len(strengths)
    order = np.argsort(strengths, kind="stable")
    classes = np.ones(n, dtype=np.int64)
    n_none, n_strong = int(round(shares[0] * n)), int(round(shares[2] * n))
    classes[order[:n_none]] = 0
    if n_strong:
        classes[order[n - n_strong:]] = 2
    return classes


def _segment_value(segments: list[dict], t: float, key: str) -> float:
    for segment in segments:
        if segment["start"] - 1e-6 <= t < segment["end"]:
            return float(segment.get(key, 0.5))
    return float(segments[-1].get(key, 0.5)) if segments else 0.5
