"""Tempo, beats and meter from an onset envelope (video motion or audio): pure numpy, no I/O.

- Tempo: autocorrelation of the envelope scored with a *comb* — energy at multiples of the period
  minus energy at the half- and third-way lags — so a pulse train is not mistaken for a half or a
  third of its tempo (every other or every third beat also correlates) or double it (the half-way
  lags do not). A broad log-normal prior around 110 BPM breaks near-ties, as tempo estimators since
  Ellis (2007) do. A pulse faster than the range is found above it and halved into it.
- Beats: dynamic-programming beat tracking (Ellis 2007, "Beat Tracking by Dynamic Programming"):
  the best chain of onsets spaced about one period apart, then sub-frame refinement of each beat
  on the envelope peak, and a least-squares fit of the beat grid for the final BPM.
- Meter: which grouping of beats (2, 3 or 4) and which phase makes every bar's first beat the
  strongest; downbeats follow.

Units: envelope index = analysis frame, `rate` = frames per second, times in seconds, tempo in BPM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PRIOR_BPM = 110.0
PRIOR_OCTAVES = 1.0  # std of the log2-tempo prior: broad, it only breaks near-ties
FOLD_MARGIN = 0.9  # a pulse above the range this nearly as clear as the best in-range lag is halved into the range


@dataclass(frozen=True)
class Tempo:
    bpm: float
    confidence: float  # 0..1: comb contrast relative to a perfect pulse train


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return np.convolve(x, kernel / kernel.sum(), mode="same")


def autocorrelation(x: np.ndarray) -> np.ndarray:
    """Biased autocorrelation of the mean-removed signal, normalised so r[0] = 1."""
    x = x - x.mean()
    n = len(x)
    spectrum = np.fft.rfft(x, 2 * n)
    r = np.fft.irfft(spectrum * np.conj(spectrum))[:n]
    return r / r[0] if r[0] > 0 else r


def estimate_tempo(envelope: np.ndarray, rate: float, bpm_range: tuple[float, float] = (60.0, 180.0)) -> Tempo:
    """Global tempo of an onset envelope (frames at `rate` Hz) within `bpm_range`.

    A pulse faster than the range (a 200 or 240 BPM flicker, or a 120 BPM beat with even eighth notes) is
    found above the range and *halved* into it. Searching the range alone, every in-range lag of such a pulse
    is a grouping of it; the one that grouped it in threes (200 -> 66.7, 240 -> 80 BPM) used to win.
    """
    r = autocorrelation(_smooth(envelope, 1.0))
    lo, hi = bpm_range
    top = max(hi, min(4 * hi, 60.0 * rate / 3))  # above the range, down to a 3-frame period
    bpms = np.exp(np.linspace(math.log(lo), math.log(top), max(400, int(400 * math.log(top / lo) / math.log(hi / lo)))))
    score = _comb(r, 60.0 * rate / bpms)
    prior = np.exp(-0.5 * (np.log2(bpms / PRIOR_BPM) / PRIOR_OCTAVES) ** 2)
    inside = bpms <= hi * (1 + 1e-9)
    best = int(np.argmax(np.where(inside, score * prior, -np.inf)))
    peak = np.r_[False, (score[1:-1] >= score[:-2]) & (score[1:-1] >= score[2:]), True]
    fast_peaks = peak & (bpms > hi * 1.03)  # a comb peak clearly above the range (not the shoulder of one at its edge)
    if fast_peaks.any():
        fast = int(np.argmax(np.where(fast_peaks, score * prior, -np.inf)))
        if score[fast] >= FOLD_MARGIN * score[best]:  # the pulse itself is faster than the range: fold by octaves
            bpm = float(bpms[fast])
            while bpm > hi * (1 + 1e-9):
                bpm /= 2
            if bpm >= lo:
                return Tempo(bpm=bpm, confidence=float(np.clip(score[fast], 0.0, 1.0)))
    return Tempo(bpm=float(bpms[best]), confidence=float(np.clip(score[best], 0.0, 1.0)))


def comb_scores(envelope: np.ndarray, rate: float, bpms: np.ndarray) -> np.ndarray:
    """The comb contrast at each tempo of `bpms` (≥ 0): one column of a tempogram."""
    return np.maximum(_comb(autocorrelation(_smooth(envelope, 1.0)), 60.0 * rate / np.asarray(bpms)), 0.0)


def pulse_strength(envelope: np.ndarray, rate: float, bpm: float) -> float:
    """0..1: how clearly `envelope` pulses at `bpm` (the comb contrast of estimate_tempo's confidence, at that
    tempo instead of the best one) — whether a neighbouring scene's pulse goes on here."""
    if len(envelope) < 4 or not bpm > 0:
        return 0.0
    return float(np.clip(_comb(autocorrelation(_smooth(envelope, 1.0)), np.array([60.0 * rate / bpm]))[0], 0.0, 1.0))


def _comb(r: np.ndarray, periods: np.ndarray) -> np.ndarray:
    """Per candidate period (frames): mean over the first four multiples that fit in half the autocorrelation
    of (energy at the multiple - the most energy at the half- or third-way lags before it); -1 where none fits.

    Energy half-way means the pulse is twice as fast (the candidate groups it in twos), a third of the way
    means three times as fast (groups in threes): either way the candidate is a grouping, not the pulse."""
    lags = np.arange(len(r))
    positive = np.maximum(r, 0.0)  # troughs are not evidence: a half-way lag on a trough would inflate the comb

    def at(lag: np.ndarray) -> np.ndarray:
        return np.interp(lag, lags, positive, right=0.0)

    score = np.zeros_like(periods)
    weight = np.zeros_like(periods)
    for k in range(1, 5):
        ok = k * periods < len(r) / 2
        between = np.maximum(at((k - 0.5) * periods), np.maximum(at((k - 1 / 3) * periods), at((k - 2 / 3) * periods)))
        score += np.where(ok, at(k * periods) - between, 0.0)
        weight += ok
    return np.where(weight > 0, score / np.maximum(weight, 1), -1.0)


def track_beats(envelope: np.ndarray, rate: float, bpm: float, tightness: float = 100.0) -> np.ndarray:
    """Beat times in seconds: Ellis's DP on the envelope for a period of 60/bpm s, refined below a frame."""
    n = len(envelope)
    period = 60.0 * rate / bpm
    if n < 2 or period >= n:
        return np.zeros(0)
    std = envelope.std()
    local = _smooth(envelope / std if std > 0 else envelope, max(period / 32, 0.5))
    offsets = np.arange(max(1, int(round(period / 2))), int(round(2 * period)) + 1)
    penalty = -tightness * np.log(offsets / period) ** 2
    cumulative = local.copy()
    backlink = np.full(n, -1)
    for t in range(n):
        valid = offsets <= t
        if not valid.any():
            continue
        candidates = cumulative[t - offsets[valid]] + penalty[valid]
        best = int(np.argmax(candidates))
        if candidates[best] > 0:  # only chain onto a positive history (a quiet start does not pull beats in)
            cumulative[t] += candidates[best]
            backlink[t] = t - offsets[valid][best]
    tail = max(0, n - int(math.ceil(period)))
    beat = tail + int(np.argmax(cumulative[tail:]))
    frames = []
    while beat >= 0:
        frames.append(beat)
        beat = backlink[beat]
    frames = np.array(frames[::-1])
    # drop leading/trailing beats that sit on nothing (librosa trims the same way)
    threshold = 0.5 * math.sqrt(np.mean(local[frames] ** 2)) if len(frames) else 0.0
    keep = np.nonzero(local[frames] >= threshold)[0]
    frames = frames[keep[0]:keep[-1] + 1] if len(keep) else frames[:0]
    return np.array([_refine(envelope, f, period) for f in frames]) / rate


def _refine(envelope: np.ndarray, frame: int, period: float) -> float:
    """Move a beat to the envelope peak within a frame, with parabolic sub-frame interpolation.

    Only a frame: the DP already weighed onsets against the tempo; reaching further lets noise pull beats off.
    """
    reach = 1
    lo, hi = max(0, frame - reach), min(len(envelope), frame + reach + 1)
    peak = lo + int(np.argmax(envelope[lo:hi]))
    if 0 < peak < len(envelope) - 1:
        a, b, c = envelope[peak - 1], envelope[peak], envelope[peak + 1]
        denominator = a - 2 * b + c
        if denominator < 0:
            return peak + float(np.clip(0.5 * (a - c) / denominator, -0.5, 0.5))
    return float(peak)


def grid_bpm(beat_times: np.ndarray, bpm: float) -> float:
    """Least-squares tempo of a beat sequence (skipped beats allowed), starting from the estimate `bpm`."""
    if len(beat_times) < 4:
        return bpm
    period = 60.0 / bpm
    index = np.concatenate([[0], np.cumsum(np.maximum(1, np.round(np.diff(beat_times) / period)))])
    slope = np.polyfit(index, beat_times, 1)[0]
    return 60.0 / slope if slope > 0 else bpm


def beat_strengths(envelope: np.ndarray, rate: float, beat_times: np.ndarray) -> np.ndarray:
    """Per beat, the envelope's peak within one frame of it (0..1 for a normalised envelope)."""
    frames = np.clip(np.round(beat_times * rate).astype(int), 0, max(len(envelope) - 1, 0))
    padded = np.pad(envelope, 1)
    return np.max(np.stack([padded[frames], padded[frames + 1], padded[frames + 2]]), axis=0) if len(frames) else np.zeros(0)


def estimate_meter(strengths: np.ndarray, meters: tuple[int, ...] = (2, 3, 4)) -> tuple[int, int]:
    """(beats per bar, index of the first downbeat) from per-beat strengths; 4/4 from beat 0 when unclear."""
    if len(strengths) < 8:
        return 4, 0
    mean = strengths.mean() + 1e-9
    best = (0.0, 4, 0)
    for meter in meters:
        for phase in range(meter):
            accented = strengths[phase::meter]
            others = np.delete(strengths, np.arange(phase, len(strengths), meter))
            contrast = (accented.mean() - others.mean()) / mean
            if contrast > best[0] + 1e-9:
                best = (contrast, meter, phase)
    if best[0] < 0.15:  # no clear accent pattern: common time, first strongest beat of the first bar
        phase = int(np.argmax([strengths[p::4].mean() for p in range(4)]))
        return 4, phase
    return best[1], best[2]
