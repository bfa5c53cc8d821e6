"""Rhythm agreement between a video's beats and a piece of music's onsets.

Every function takes event times in seconds (1-D arrays) and returns plain floats, so
they can be checked against constructed cases with known answers (tests/stages/
test_metrics_rhythm.py) and called from `generate --rerank` without any files.

The "reference" is always the video (its visual beats from `extract-rhythm`); the
"estimate" is the music, seen two ways, and the names say which:

- `beat_*`: the music's *beats* — its tempo map for MIDI/tokens, or the beats a dynamic-programming
  tracker (Ellis 2007, librosa's algorithm) finds in audio — against the video's beats. This is the
  MIREX beat F-measure as meant: two beat sequences compared. Rendered audio gives the beat a listener hears;
  a tempo map built from the video's own beat grid agrees by construction;
- `onset_*`, `bcs`, `bhs`, `beat_align*`: the music's note *onsets* (from MIDI/tokens, or
  detected in audio) against the video's beats. Every off-beat note counts against
  `onset_f1`'s precision, so real music scores well below 1 on it (≈ 0.74 for chorales
  against their own audio beat, BENCHMARKS.md).

Metrics and the papers they come from:

- beat / onset F-measure: mir_eval's MIREX definition, one-to-one matching within ±70 ms (the matching
  is ours, `match_events`, checked against mir_eval's in the tests);
- BCS / BHS: Beats Coverage / Beats Hit Scores of D2M-GAN (Zhu et al., "Quantized GAN
  for Complex Music Generation from Dance Videos", ECCV 2022): time is cut into
  1-second bins, a bin "has a beat" when any event falls in it; BCS = music bins /
  reference bins, BHS = bins where both have one / reference bins;
- Beat Align Score: AIST++ / FACT (Li et al., "AI Choreographer", ICCV 2021):
  mean over one side's beats of exp(-d² / 2σ²), d the distance to the nearest beat
  of the other side. FACT uses σ = 3 frames at 60 fps; we state it in seconds,
  σ = 0.05 s, and compute both directions;
- tempo agreement: ratio of music to video tempo, named when it is a simple metrical
  relation (same, double, half, 3:2, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from v2m.stages.rhythm.audio import onset_strength, pick_onsets, track_beats

F_WINDOW = 0.070  # s, MIREX beat F-measure tolerance (mir_eval's default)
BIN_SECONDS = 1.0  # s, D2M-GAN's bin for BCS/BHS
BA_SIGMA = 0.05  # s, AIST++/FACT: σ = 3 frames at 60 fps
MERGE_SECONDS = 0.030  # s, note onsets closer than this are heard as one event
TEMPO_TOLERANCE = 0.04  # relative; the tolerance extract-rhythm is held to (issue 3)

# ratio music/video → name; checked within TEMPO_TOLERANCE, the closest wins
TEMPO_RELATIONS: dict[str, float] = {
    "same": 1.0, "double": 2.0, "half": 0.5, "3:2": 1.5, "2:3": 2 / 3,
    "triple": 3.0, "third": 1 / 3, "quadruple": 4.0, "quarter": 0.25, "4:3": 4 / 3, "3:4": 0.75,
}


def as_times(values) -> np.ndarray:
    """Event times as a sorted float64 array (s)."""
    times = np.asarray(values if values is not None else [], dtype=np.float64).ravel()
    return np.sort(times[np.isfinite(times)])


def merge_onsets(onsets, within: float = MERGE_SECONDS) -> np.ndarray:
    """Merge onsets closer than `within` seconds to the first of their group (a chord is one event).

    A group starts at an onset and swallows every later onset within `within` s of that start,
    so a slow arpeggio (gaps ≥ `within`) stays separate notes.
    """
    times = as_times(onsets)
    if times.size == 0:
        return times
    kept = [times[0]]
    for t in times[1:]:
        if t - kept[-1] >= within:
            kept.append(t)
    return np.asarray(kept)


# ---------------------------------------------------------------- beat F-measure (MIREX, as mir_eval)

@dataclass(frozen=True)
class BeatF:
    f1: float
    precision: float
    recall: float
    matched: int
    offset: float = float("nan")  # s, median of (estimate - reference) over matched pairs: > 0 means the music is late


def match_events(reference: np.ndarray, estimate: np.ndarray, window: float) -> list[tuple[int, int]]:
    """A maximum one-to-one matching of sorted `estimate` to sorted `reference` events within ±`window` s (both
    ends included): [(reference index, estimate index)], in order — what mir_eval.util.match_events computes.

    On a line every event's partners form a run whose ends only move forward from one event to the next, so
    pairing each event with the earliest partner still free is a maximum matching (the exchange argument;
    mir_eval runs Hopcroft–Karp on the general graph). Ours, because importing mir_eval costs ~0.5 s (scipy.stats).
    """
    pairs, i, j = [], 0, 0
    low, high = estimate - window, estimate + window  # mir_eval's window arithmetic: around each estimate
    while i < len(reference) and j < len(estimate):
        if reference[i] < low[j]:
            i += 1  # too early for this estimate, so for every later one too
        elif reference[i] > high[j]:
            j += 1
        else:
            pairs.append((i, j))
            i, j = i + 1, j + 1
    return pairs


def beat_f_measure(reference, estimate, window: float = F_WINDOW) -> BeatF:
    """MIREX beat F-measure: one-to-one matching of estimate to reference events within ±`window` s.

    precision = matched / len(estimate) (how many music events fall on a visual beat),
    recall = matched / len(reference) (how many visual beats the music hits).
    Unlike mir_eval.beat.evaluate we do not trim the first 5 s: a video clip's opening beats count.
    """
    ref, est = as_times(reference), as_times(estimate)
    if ref.size == 0 or est.size == 0:
        return BeatF(0.0, 0.0, 0.0, 0)
    pairs = match_events(ref, est, window)
    matched = len(pairs)
    precision, recall = matched / est.size, matched / ref.size
    f1 = 0.0 if matched == 0 else 2 * precision * recall / (precision + recall)
    offset = float(np.median([est[j] - ref[i] for i, j in pairs])) if pairs else float("nan")
    return BeatF(f1, precision, recall, matched, offset)


# ---------------------------------------------------------------- BCS / BHS (D2M-GAN)

def beat_bins(times, duration: float, bin_seconds: float = BIN_SECONDS) -> np.ndarray:
    """D2M-GAN's binary beat vector: one entry per `bin_seconds` bin of [0, duration), 1 if any event falls in it."""
    n_bins = max(1, int(np.ceil(duration / bin_seconds - 1e-9)))
    times = as_times(times)
    times = times[(times >= 0) & (times < n_bins * bin_seconds)]
    bins = np.zeros(n_bins, dtype=bool)
    bins[np.floor(times / bin_seconds).astype(int)] = True
    return bins


def beat_coverage_hit(reference, estimate, duration: float, bin_seconds: float = BIN_SECONDS) -> tuple[float, float]:
    """(BCS, BHS) as defined by D2M-GAN: BCS = B_g / B_t, BHS = B_a / B_t.

    B_t: bins holding a reference (video) beat; B_g: bins holding a music event; B_a: bins holding
    both. BCS can exceed 1 (music busier than the video); BHS is in [0, 1]. Both are 0 when the
    video has no beat. Note the 1-second bins make BHS forgiving: any music with an onset every
    second scores near 1 against a steady video, so read it next to the beat F-measure.
    """
    ref_bins = beat_bins(reference, duration, bin_seconds)
    est_bins = beat_bins(estimate, duration, bin_seconds)
    total = int(ref_bins.sum())
    if total == 0:
        return 0.0, 0.0
    return float(est_bins.sum()) / total, float((ref_bins & est_bins).sum()) / total


# ---------------------------------------------------------------- Beat Align Score (AIST++ / FACT)

def beat_align_score(beats, targets, sigma: float = BA_SIGMA) -> float:
    """Mean over `beats` of exp(-d² / 2σ²), d = distance (s) to the nearest of `targets` (FACT, σ in s).

    FACT computes it with music beats as `beats` and motion beats as `targets`; call it both ways.
    0 when either side is empty.
    """
    b, t = as_times(beats), as_times(targets)
    if b.size == 0 or t.size == 0:
        return 0.0
    idx = np.clip(np.searchsorted(t, b), 1, t.size - 1) if t.size > 1 else np.zeros(b.size, dtype=int)
    nearest = np.abs(b - t[idx]) if t.size == 1 else np.minimum(np.abs(b - t[idx - 1]), np.abs(b - t[idx]))
    return float(np.mean(np.exp(-nearest**2 / (2 * sigma**2))))


# ---------------------------------------------------------------- tempo

def tempo_relation(music_bpm: float, video_bpm: float, tolerance: float = TEMPO_TOLERANCE) -> tuple[float, str]:
    """(ratio music/video, name of the metrical relation or "unrelated").

    The closest named ratio within a relative `tolerance` wins ("same", "double", "half", "3:2", ...).
    """
    if not (music_bpm > 0 and video_bpm > 0):
        return float("nan"), "unknown"
    ratio = music_bpm / video_bpm
    best, best_error = "unrelated", tolerance
    for name, target in TEMPO_RELATIONS.items():
        error = abs(ratio / target - 1)
        if error <= best_error:
            best, best_error = name, error
    return ratio, best


def beats_tempo(beats) -> float:
    """Tempo (BPM) of a beat sequence from its median inter-beat interval; nan with fewer than 2 beats."""
    times = as_times(beats)
    if times.size < 2:
        return float("nan")
    return 60.0 / float(np.median(np.diff(times)))


# ---------------------------------------------------------------- audio onsets

def onset_envelope(samples: np.ndarray, sample_rate: int, hop_length: int = 256) -> np.ndarray | None:
    """The onset-strength envelope (spectral flux; stages/rhythm/audio.py, librosa's algorithm) of audio,
    mono-mixed; None for silence.

    A hop of 256 samples (11.6 ms at 22.05 kHz) and a 1024-sample window (46 ms) keep detections
    close to the attack: measured, ≤ 15 ms late on tone bursts, a steady ~24 ms late on
    FluidSynth's GM piano (its attack is not instantaneous); librosa's defaults (hop 512,
    window 2048) drift to ~30 ms. The beat tracker reads the same envelope: with the 2048 window its
    beats lie later too (click tracks exactly on the beat: +19 ms vs +10 ms; FluidSynth's GM piano +30 ms
    vs +21 ms), and late beats fall out of the ±70 ms F-measure window sooner.
    """
    y = np.asarray(samples, dtype=np.float32)
    if y.ndim > 1:  # channels first, as librosa.to_mono
        y = y.mean(axis=0)
    if y.size == 0 or not np.any(y):
        return None
    return onset_strength(y, sample_rate, hop_length, 4 * hop_length)


def onsets_from_envelope(envelope: np.ndarray, sample_rate: int, hop_length: int = 256) -> np.ndarray:
    """Onset times (s) picked on an `onset_envelope` (librosa's peak picking). We do not backtrack to the
    preceding energy minimum: on decaying tones that lands up to 30 ms early."""
    return pick_onsets(envelope, sample_rate, hop_length) * hop_length / sample_rate


def beats_from_envelope(envelope: np.ndarray, sample_rate: int, hop_length: int = 256) -> tuple[float, np.ndarray]:
    """(tempo BPM, beat times s) tracked on an `onset_envelope` by Ellis's dynamic-programming beat tracker
    (stages/rhythm/audio.py: librosa.beat.beat_track's algorithm and defaults)."""
    tempo, frames = track_beats(envelope, sample_rate, hop_length)
    return tempo, frames * hop_length / sample_rate


def audio_onsets(samples: np.ndarray, sample_rate: int, hop_length: int = 256) -> np.ndarray:
    """Onset times (s) detected in audio (`onset_envelope` + `onsets_from_envelope`); none in silence."""
    envelope = onset_envelope(samples, sample_rate, hop_length)
    return np.zeros(0) if envelope is None else onsets_from_envelope(envelope, sample_rate, hop_length)


def audio_beats(samples: np.ndarray, sample_rate: int, hop_length: int = 256) -> tuple[float, np.ndarray]:
    """(tempo BPM, beat times s) of audio (`onset_envelope` + `beats_from_envelope`); (nan, none) in silence."""
    envelope = onset_envelope(samples, sample_rate, hop_length)
    return (float("nan"), np.zeros(0)) if envelope is None else beats_from_envelope(envelope, sample_rate, hop_length)


# ---------------------------------------------------------------- all together

def rhythm_metrics(video_beats, music_onsets, duration: float, video_bpm: float | None = None,
                   music_bpm: float | None = None, music_beats=None) -> tuple[dict, dict]:
    """All rhythm-agreement metrics of music against a video's beats.

    `video_beats`, `music_onsets` and `music_beats` (the music's beats: tempo map or tracked in audio;
    optional) in seconds; `duration` (s) sets the BCS/BHS bins. `beat_*` compares the music's beats with
    the video's (only when `music_beats` has ≥ 2 beats), `onset_*`/BCS/BHS/Beat Align its onsets.
    Returns (metrics {name: float}, labels {name: str}).
    """
    video_beats, music_onsets = as_times(video_beats), as_times(music_onsets)
    onset_f = beat_f_measure(video_beats, music_onsets)
    bcs, bhs = beat_coverage_hit(video_beats, music_onsets, duration)
    metrics = {
        "onset_f1": onset_f.f1, "onset_precision": onset_f.precision, "onset_recall": onset_f.recall,
        "onset_offset_ms": 1000 * onset_f.offset,
        "bcs": bcs, "bhs": bhs,
        "beat_align": beat_align_score(music_onsets, video_beats),  # FACT's direction: music → video
        "beat_align_video": beat_align_score(video_beats, music_onsets),  # and the reverse
        "music_onsets": float(music_onsets.size), "video_beats": float(video_beats.size),
    }
    labels = {}
    grid = as_times(music_beats)
    if grid.size >= 2:
        beat_f = beat_f_measure(video_beats, grid)
        metrics.update({"beat_f1": beat_f.f1, "beat_precision": beat_f.precision, "beat_recall": beat_f.recall,
                        "beat_offset_ms": 1000 * beat_f.offset, "music_beats": float(grid.size)})
        if music_bpm is None:
            music_bpm = beats_tempo(grid)
    if video_bpm is None:
        video_bpm = beats_tempo(video_beats)
    if music_bpm is not None:
        ratio, relation = tempo_relation(music_bpm, video_bpm)
        metrics.update({"music_bpm": float(music_bpm), "video_bpm": float(video_bpm), "tempo_ratio": ratio,
                        "tempo_same": float(relation == "same"),
                        "tempo_related": float(relation not in ("unrelated", "unknown"))})
        labels["tempo_relation"] = relation
    return metrics, labels
