"""Control tokens: the same per-bar controls computed from music (training) and from a video's rhythm (inference).

This is the CMT idea (Di et al. 2021, "Video Background Music Generation with Controllable Music
Transformer"): the model is trained on music alone with controls read off the music itself, and at
inference the controls come from the video, measured on the same scale (this module reads them off music
and holds the class rules; stages/tokens/video_controls.py reads them off a rhythm artifact). Per bar:

- `density`: onsets per *tactus* beat of the bar: distinct onset times in the bar / the bar's length in
  seconds × the tactus period. The tactus is the beat level a listener taps (and a beat tracker finds):
  the beat period doubled or halved until its tempo lies in `tactus.bpm_range` (60-180 bpm, the range
  extract-rhythm searches), picking the level nearest `tactus.prior_bpm` (110 bpm, the tracker's
  tempo prior, stages/rhythm/tempo.py). The same rule is applied on both sides, so the scale does not depend on
  which metrical level was notated or tracked: a chorale in 4/2 half notes, the same chorale in 4/4
  quarters, and its audio tracked at the quarter (or at the half) all give the same rate. From music:
  note onsets after quantisation, the notated beat (time-signature denominator) under the MIDI's tempo
  map. From a rhythm artifact: peaks of the onset-strength envelope (the librosa/Böck peak-picking rule,
  parameters in the tokenizer stats) in the bar, the tracked beat period (median). Class 0 = no onset;
  classes 1.. split the corpus' non-empty bars at its quantiles (`density_bounds`). A tokenizer JSON
  without `density_unit: "tactus"` (made before this definition) keeps the old one: onsets per notated
  (or tracked) beat.
- `strength`: per beat, 0 none / 1 weak / 2 strong. From music: notes starting exactly on the beat;
  strong when at least `strong_min` (the corpus median of non-zero counts, at least 2) start together.
  From a rhythm artifact: `beat_strength` is ranked within the clip and classed so the class shares match
  the corpus' shares (`strength_shares`): histogram matching, since motion and note counts have no common
  unit, while onset *rates* (density) do.
- `phrase`: a phrase starts at this bar. From music: bar 0, and a bar whose first onset ends an
  inter-onset gap of at least twice the piece's median IOI and one beat (the rest/long-note cue of
  Cambouropoulos' Local Boundary Detection Model, reduced to its strongest rule). From video: a scene cut
  within the bar (±half a beat).
- global `tempo_class` (fixed bpm bounds, see below) and `mode` (major/minor; music: Krumhansl-Schmuckler
  key finding; video: brightness, after the brightness-pleasure link of Valdez & Mehrabian 1994).

Tempo bounds are fixed (66, 90, 115, 140 bpm ≈ adagio/andante/moderato/allegro/presto) rather than
corpus quantiles: score formats mostly carry no tempo, so the corpus' tempo distribution is a spike at
the 120 bpm default (recorded in the stats as `tempo_histogram` for honesty).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from v2m.errors import V2MError
from v2m.stages.tokens.beat_grid import ticks_to_seconds
from v2m.stages.tokens.vocab import base_tokens, prepare_score

TEMPO_BOUNDS_BPM = (66.0, 90.0, 115.0, 140.0)
# Krumhansl & Kessler (1982) key profiles, C major / C minor.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# the tactus rule of the density scale: extract-rhythm's tempo search range and its tempo prior
# (stages/rhythm/extract.py RhythmConfig.tempo_range, stages/rhythm/tempo.py PRIOR_BPM)
TACTUS = {"bpm_range": [60.0, 180.0], "prior_bpm": 110.0}
# librosa.onset.onset_detect's peak-picking defaults, in seconds (delta on the 0..1 envelope)
PEAK_PICKING = {"pre_max_s": 0.03, "post_max_s": 0.0, "pre_avg_s": 0.10, "post_avg_s": 0.10, "wait_s": 0.03, "delta": 0.07}


@dataclass
class PieceAnalysis:
    """What the controls need from one piece, before class boundaries are applied.

    `bar_beats[i]` beats in bar i, `bar_onsets[i]` distinct onsets in it, `bar_seconds[i]` its length in
    seconds under the MIDI's tempo map, `beat_counts` notes starting on each beat (all bars concatenated),
    `phrase[i]` a phrase starts at bar i. One entry per `Bar` token.
    """

    base_ids: list[int]
    bar_beats: list[int]
    bar_onsets: list[int]
    beat_counts: list[int]
    phrase: list[bool]
    tempo_qpm: float
    mode: str
    mean_pitch: float
    notes: int
    content_hash: str
    extra: dict = field(default_factory=dict)
    bar_seconds: list[float] = field(default_factory=list)


# ---------------------------------------------------------------- from music

def analyse_score(score, vocab) -> PieceAnalysis:
    """A symusic.Score → its base tokens and raw control features (see module docstring)."""
    from miditok.utils import get_bars_ticks, get_beats_ticks

    tempo_qpm = float(score.tempos[0].qpm) if len(score.tempos) else 120.0
    prepared = prepare_score(score, vocab)
    ids = base_tokens(prepared, vocab)
    notes = prepared.tracks[0].notes.numpy() if prepared.tracks else {"time": np.zeros(0, np.int64)}
    n_bars = sum(1 for t in ids if t == vocab.bar_id)
    if not ids or not len(notes["time"]):
        return PieceAnalysis([], [], [], [], [], tempo_qpm, "major", 0.0, 0, "")
    bars = np.asarray(get_bars_ticks(prepared, only_notes_onsets=False), dtype=np.int64)
    beats = np.asarray(get_beats_ticks(prepared, only_notes_onsets=False), dtype=np.int64)
    bars = _extend_ticks(bars, n_bars + 1)
    beats = _extend_ticks(beats, int(np.searchsorted(beats, bars[n_bars])) + 2)
    onset_ticks, counts = np.unique(notes["time"], return_counts=True)
    bar_beats, bar_onsets, beat_counts = [], [], []
    for i in range(n_bars):
        lo, hi = bars[i], bars[i + 1]
        in_bar = beats[(beats >= lo) & (beats < hi)]
        bar_beats.append(max(len(in_bar), 1))
        bar_onsets.append(int(((onset_ticks >= lo) & (onset_ticks < hi)).sum()))
        at = np.searchsorted(onset_ticks, in_bar)
        hit = (at < len(onset_ticks)) & (onset_ticks[np.minimum(at, len(onset_ticks) - 1)] == in_bar)
        beat_counts += [int(counts[a]) if h else 0 for a, h in zip(at, hit)] or [0]
    beat_len = float(np.median(np.diff(beats))) if len(beats) > 1 else float(prepared.ticks_per_quarter)
    phrase = phrase_starts(onset_ticks, bars[:n_bars], beat_len)
    bar_times = ticks_to_seconds([int(t) for t in bars[:n_bars + 1]], prepared)
    bar_seconds = [round(b - a, 6) for a, b in zip(bar_times, bar_times[1:])]
    pitch = notes["pitch"].astype(np.float64)
    digest = hashlib.sha256()
    for key in ("time", "duration", "pitch"):
        digest.update(np.ascontiguousarray(notes[key], dtype=np.int64).tobytes())
    digest.update(repr([(t.time, t.numerator, t.denominator) for t in prepared.time_signatures]).encode())
    return PieceAnalysis(ids, bar_beats, bar_onsets, beat_counts, phrase, tempo_qpm,
                         estimate_mode(notes["pitch"], notes["duration"]), float(pitch.mean()), len(pitch),
                         digest.hexdigest(), bar_seconds=bar_seconds)


def _extend_ticks(ticks: np.ndarray, n: int) -> np.ndarray:
    """Bar/beat ticks continued at their last spacing until there are at least `n`."""
    ticks = ticks if len(ticks) else np.zeros(1, np.int64)
    if len(ticks) >= n:
        return ticks
    step = int(ticks[-1] - ticks[-2]) if len(ticks) > 1 else 1
    return np.concatenate([ticks, ticks[-1] + step * np.arange(1, n - len(ticks) + 1)])


def phrase_starts(onsets: np.ndarray, bar_starts: np.ndarray, beat_len: float) -> list[bool]:
    """Bar 0, and bars whose first onset (within a beat of the bar line) ends a gap ≥ max(2 × median IOI, 1 beat)."""
    flags = [False] * len(bar_starts)
    if not len(flags):
        return flags
    flags[0] = True
    if len(onsets) < 2:
        return flags
    threshold = max(2.0 * float(np.median(np.diff(onsets))), beat_len)
    for i in range(1, len(bar_starts)):
        at = int(np.searchsorted(onsets, bar_starts[i]))
        if 0 < at < len(onsets) and onsets[at] - bar_starts[i] < beat_len and onsets[at] - onsets[at - 1] >= threshold \
                and not flags[i - 1]:
            flags[i] = True
    return flags


def estimate_mode(pitches: np.ndarray, durations: np.ndarray) -> str:
    """Krumhansl-Schmuckler key finding on the duration-weighted pitch-class histogram → 'major'/'minor'."""
    histogram = np.bincount(np.asarray(pitches) % 12, weights=np.asarray(durations, dtype=np.float64), minlength=12)
    if histogram.std() <= 0:
        return "major"
    z = (histogram - histogram.mean()) / histogram.std()
    correlations = _KEY_PROFILES @ z / 12.0  # Pearson r against the 24 rotated profiles
    return "major" if int(np.argmax(correlations)) < 12 else "minor"


def _z_rows(rows: np.ndarray) -> np.ndarray:
    return (rows - rows.mean(axis=1, keepdims=True)) / rows.std(axis=1, keepdims=True)


_KEY_PROFILES = _z_rows(np.stack([np.roll(p, k) for p in (KK_MAJOR, KK_MINOR) for k in range(12)]))


# ---------------------------------------------------------------- classes

def tactus_period(beat_s: float, stats: dict) -> float:
    """The tactus period (s) for a beat of `beat_s` seconds: the beat doubled or halved until its tempo is in
    `tactus.bpm_range`, the level nearest `tactus.prior_bpm` (log scale). Returns `beat_s` when it is not positive."""
    if not beat_s > 0:
        return beat_s
    rule = stats.get("tactus", TACTUS)
    lo, hi = rule["bpm_range"]
    bpm = 60.0 / beat_s
    levels = bpm * 2.0 ** np.arange(-6, 7)
    levels = levels[(levels >= lo - 1e-9) & (levels <= hi + 1e-9)]
    if not len(levels):  # a range narrower than an octave may miss every level: take the nearest to it
        levels = bpm * 2.0 ** np.arange(-6, 7)
    return float(60.0 / levels[int(np.argmin(np.abs(np.log2(levels / float(rule["prior_bpm"])))))])


def density_rate(onsets: int, beats: int, seconds: float, beat_s: float, stats: dict) -> float:
    """A bar's onset rate on the tokenizer's density scale: onsets per tactus beat (`density_unit` "tactus",
    see the module docstring), or onsets per beat for tokenizers made before it. `beats`: beats in the bar,
    `seconds`: its length, `beat_s`: the beat period (s) the tactus is derived from."""
    if stats.get("density_unit") == "tactus" and seconds > 0 and beat_s > 0:
        return onsets / seconds * tactus_period(beat_s, stats)
    return onsets / max(beats, 1)


def density_class(rate: float, stats: dict) -> int:
    """An onset rate (see `density_rate`) → density class (0 = empty bar)."""
    if rate <= 0:
        return 0
    return 1 + int(np.searchsorted(np.asarray(stats["density_bounds"]), rate, side="right"))


def strength_class(count: int, stats: dict) -> int:
    return 0 if count <= 0 else (2 if count >= int(stats["strong_min"]) else 1)


def tempo_class(bpm: float, stats: dict) -> int:
    return int(np.searchsorted(np.asarray(stats["tempo_bounds_bpm"]), float(bpm), side="right"))


def bar_rates(analysis: PieceAnalysis, stats: dict) -> np.ndarray:
    """Each bar's onset rate on the density scale (`density_rate`); the beat is the bar's notated beat."""
    seconds = analysis.bar_seconds
    if stats.get("density_unit") != "tactus":
        seconds = seconds or [0.0] * len(analysis.bar_beats)
    elif len(seconds) != len(analysis.bar_beats):
        raise V2MError("the piece analysis has no bar lengths in seconds (made by an older v2m); analyse it again")
    return np.asarray([density_rate(o, b, s, s / max(b, 1), stats)
                       for o, b, s in zip(analysis.bar_onsets, analysis.bar_beats, seconds)], dtype=np.float64)


def bar_controls(analysis: PieceAnalysis, stats: dict) -> list[dict]:
    """Per bar `{"density", "strength", "phrase"}` classes from a piece's raw features."""
    out, at = [], 0
    for beats, rate, phrase in zip(analysis.bar_beats, bar_rates(analysis, stats), analysis.phrase):
        counts = analysis.beat_counts[at:at + beats]
        at += beats
        out.append({"density": density_class(float(rate), stats),
                    "strength": [strength_class(c, stats) for c in counts], "phrase": bool(phrase)})
    return out


# ---------------------------------------------------------------- ids

def global_control_ids(controls: dict, vocab) -> list[int]:
    """The global control tokens placed right after BOS: tempo class, then mode."""
    return [vocab.tempo_class_id(int(controls["tempo_class"])), vocab.mode_id(controls.get("mode", "major"))]


def bar_control_ids(bar: dict, controls: dict | None, vocab) -> list[int]:
    """A controls-artifact bar → its control tokens (placed right after the bar's `Bar` token):
    Density, Phrase (only when true), then one Strength per beat."""
    ids = [vocab.density_id(int(bar["density"]))]
    if bar.get("phrase"):
        ids.append(vocab.phrase_id)
    ids += [vocab.strength_id(int(s)) for s in bar["strength"]]
    return ids


def split_bars(base_ids: list[int], bar_id: int) -> list[list[int]]:
    """Base ids → per bar its tokens after the `Bar` token (anything before the first Bar is dropped)."""
    bars: list[list[int]] = []
    for token in base_ids:
        if token == bar_id:
            bars.append([])
        elif bars:
            bars[-1].append(token)
    return bars


def assemble_chunks(analysis: PieceAnalysis, vocab, max_tokens: int | None = None) -> tuple[list[list[int]], int]:
    """BOS, globals, (Bar, bar controls, bar tokens)*, EOS — split at bars into sequences ≤ `max_tokens`.

    Returns (sequences, bars dropped because a single bar did not fit). Sequences without any note are dropped.
    """
    stats = vocab.stats
    glob = {"tempo_class": tempo_class(analysis.tempo_qpm, stats), "mode": analysis.mode}
    head = [vocab.bos, *global_control_ids(glob, vocab)]
    pieces: list[list[int]] = []
    dropped = 0
    current: list[int] = []
    has_note = False
    budget = None if max_tokens is None else max_tokens - len(head) - 1
    for bar, ctl in zip(split_bars(analysis.base_ids, vocab.bar_id), bar_controls(analysis, stats)):
        tokens = [vocab.bar_id, *bar_control_ids(ctl, None, vocab), *bar]
        if budget is not None and len(tokens) > budget:
            dropped += 1
            continue
        if budget is not None and len(current) + len(tokens) > budget:
            if has_note:
                pieces.append(head + current + [vocab.eos])
            current, has_note = [], False
        current += tokens
        has_note = has_note or ctl["density"] > 0
    if has_note:
        pieces.append(head + current + [vocab.eos])
    return pieces, dropped


def assemble(analysis: PieceAnalysis, vocab) -> list[int]:
    """The whole piece as one sequence (no length limit)."""
    pieces, _ = assemble_chunks(analysis, vocab, None)
    return pieces[0] if pieces else [vocab.bos, vocab.eos]


def controls_from_score(score, vocab) -> dict:
    """Controls read off a piece of music, in the v2m.controls bar layout (starts in quarter notes, not seconds)."""
    analysis = analyse_score(score, vocab)
    if not analysis.base_ids:
        raise V2MError("the MIDI has no notes the tokenizer can keep")
    return {"tempo_bpm": round(analysis.tempo_qpm, 3), "tempo_class": tempo_class(analysis.tempo_qpm, vocab.stats),
            "mode": analysis.mode, "bars": bar_controls(analysis, vocab.stats)}


# ---------------------------------------------------------------- calibration

def calibrate(analyses: list[PieceAnalysis], n_density_bins: int = 6) -> dict:
    """Corpus statistics → the class boundaries stored in the tokenizer JSON (from quantiles, not guesses)."""
    unit = {"density_unit": "tactus", "tactus": dict(TACTUS)}
    rates = np.concatenate([bar_rates(a, unit) for a in analyses if a.bar_beats])
    nonzero = rates[rates > 0]
    if not len(nonzero):
        raise V2MError("calibration found no notes in the corpus")
    quantiles = np.quantile(nonzero, np.arange(1, n_density_bins) / n_density_bins)
    bounds = sorted(set(round(float(q), 4) for q in quantiles))
    counts = np.concatenate([np.asarray(a.beat_counts) for a in analyses if a.beat_counts])
    strong_min = max(2, int(round(float(np.median(counts[counts > 0])))))
    stats = {**unit, "density_bounds": bounds, "n_density": len(bounds) + 2, "strong_min": strong_min,
             "tempo_bounds_bpm": list(TEMPO_BOUNDS_BPM), "mode_brightness_min": 0.4, "peak_picking": dict(PEAK_PICKING)}
    classes = np.asarray([strength_class(int(c), stats) for c in counts])
    stats["strength_shares"] = [round(float((classes == k).mean()), 4) for k in range(3)]
    tempos = np.asarray([a.tempo_qpm for a in analyses])
    stats["corpus"] = {
        "pieces": len(analyses), "bars": int(len(rates)), "empty_bar_share": round(float((rates == 0).mean()), 4),
        "density_quantiles": {f"q{int(q * 100)}": round(float(np.quantile(nonzero, q)), 4) for q in (0.05, 0.25, 0.5, 0.75, 0.95)},
        "density_class_shares": [round(float(np.mean([density_class(r, stats) == k for r in rates])), 4)
                                 for k in range(stats["n_density"])],
        "tempo_histogram": {str(int(b)): int(n) for b, n in zip(*np.unique(np.round(tempos, -1), return_counts=True))},
        "minor_share": round(float(np.mean([a.mode == "minor" for a in analyses])), 4),
        "phrase_share": round(float(np.mean(np.concatenate([np.asarray(a.phrase, float) for a in analyses if a.phrase]))), 4),
    }
    return stats
