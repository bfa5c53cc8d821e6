"""Rhythm metrics on constructed cases with known answers, and cross-checked against second implementations."""

import math

import numpy as np
import pytest

from v2m.stages.evaluate import beat_metrics as mr

PERIOD = 0.5  # s, 120 BPM
DURATION = 30.0  # s
BEATS = np.arange(1.0, 29.0 + 1e-9, PERIOD)  # clear of both ends, so no window is cut by the clip's edges


def test_identical_beats_score_one():
    metrics, labels = mr.rhythm_metrics(BEATS, BEATS, DURATION, music_beats=BEATS)
    assert metrics["beat_f1"] == 1.0 and metrics["onset_f1"] == 1.0
    assert metrics["bcs"] == 1.0 and metrics["bhs"] == 1.0
    assert metrics["beat_align"] == 1.0 and metrics["beat_align_video"] == 1.0
    assert labels["tempo_relation"] == "same" and metrics["tempo_ratio"] == pytest.approx(1.0)


def test_beats_and_onsets_are_scored_apart():
    """Eighth notes on a grid whose beats are the video's: the beats agree (F = 1), the onsets are half off-beat
    (precision 1/2, recall 1 → F = 2/3); without the music's beats there is no beat_f1 at all."""
    eighths = np.arange(BEATS[0], BEATS[-1] + 1e-9, PERIOD / 2)
    metrics, _ = mr.rhythm_metrics(BEATS, eighths, DURATION, music_beats=BEATS)
    assert metrics["beat_f1"] == 1.0 and metrics["music_beats"] == len(BEATS)
    assert metrics["onset_precision"] == pytest.approx(len(BEATS) / len(eighths)) and metrics["onset_recall"] == 1.0
    assert metrics["onset_f1"] == pytest.approx(2 / 3, abs=0.01)
    # the same onsets on a beat grid shifted by half a beat: onsets unchanged, beats all missed
    shifted, _ = mr.rhythm_metrics(BEATS, eighths, DURATION, music_beats=BEATS + PERIOD / 2)
    assert shifted["beat_f1"] == 0.0 and shifted["onset_f1"] == metrics["onset_f1"]
    alone, _ = mr.rhythm_metrics(BEATS, eighths, DURATION)
    assert "beat_f1" not in alone and alone["onset_f1"] == metrics["onset_f1"]


def test_offset_tells_early_from_late():
    assert mr.beat_f_measure(BEATS, BEATS + 0.030).offset == pytest.approx(0.030)
    assert mr.beat_f_measure(BEATS, BEATS - 0.050).offset == pytest.approx(-0.050)


def test_200ms_shift_scores_zero():
    shifted = BEATS + 0.200
    result = mr.beat_f_measure(BEATS, shifted)
    assert result.f1 == 0.0
    # nearest beat is 200 ms away: exp(-0.2² / 2·0.05²) = exp(-8)
    assert mr.beat_align_score(shifted, BEATS) == pytest.approx(math.exp(-8), rel=1e-6)


def test_half_tempo_scores_two_thirds():
    half = BEATS[::2]
    result = mr.beat_f_measure(BEATS, half)
    assert result.precision == 1.0 and result.offset == 0.0
    assert result.recall == pytest.approx(len(half) / len(BEATS))
    assert result.f1 == pytest.approx(2 / 3, abs=0.01)
    ratio, relation = mr.tempo_relation(mr.beats_tempo(half), mr.beats_tempo(BEATS))
    assert relation == "half" and ratio == pytest.approx(0.5)


@pytest.mark.parametrize("music_bpm,video_bpm,name", [
    (120, 120, "same"), (240, 120, "double"), (60, 120, "half"), (180, 120, "3:2"), (80, 120, "2:3"),
    (123, 120, "same"), (115, 100, "unrelated"), (137, 100, "4:3"), (360, 120, "triple"),
])
def test_tempo_relations_named(music_bpm, video_bpm, name):
    assert mr.tempo_relation(music_bpm, video_bpm)[1] == name


def test_random_onsets_reach_the_analytic_chance_level():
    """n onsets uniform on [0, T): a beat's ±w window holds none with probability (1 - 2w/T)^n.

    The windows (140 ms) are narrower than the beat period (500 ms), so mir_eval's one-to-one
    matching pairs exactly one onset with every window that holds any:
    E[matched] = N_b (1 - (1 - 2w/T)^n) and E[F] = 2 E[matched] / (n + N_b).
    BHS: every 1-s bin holds a video beat, and a bin holds no onset with probability (1 - 1/T)^n.
    Beat Align (music → video): an onset inside the beat span sits at a distance uniform on
    [0, P/2] from its nearest beat, so E = (2/P) ∫ exp(-x²/2σ²) dx = (2/P) σ √(π/2) erf(P / (2√2 σ)).
    """
    rng = np.random.default_rng(7)
    n, trials, w, sigma = 40, 300, mr.F_WINDOW, mr.BA_SIGMA
    f_values, bhs_values, ba_values = [], [], []
    for _ in range(trials):
        onsets = rng.uniform(0, DURATION, n)
        f_values.append(mr.beat_f_measure(BEATS, onsets).f1)
        bhs_values.append(mr.beat_coverage_hit(BEATS, onsets, DURATION)[1])
        ba_values.append(mr.beat_align_score(rng.uniform(BEATS[0], BEATS[-1], n), BEATS))
    n_beats = len(BEATS)
    expected_f = 2 * n_beats * (1 - (1 - 2 * w / DURATION) ** n) / (n + n_beats)
    expected_bhs = 1 - (1 - 1 / DURATION) ** n
    expected_ba = (2 / PERIOD) * sigma * math.sqrt(math.pi / 2) * math.erf(PERIOD / (2 * math.sqrt(2) * sigma))
    for values, expected in ((f_values, expected_f), (bhs_values, expected_bhs), (ba_values, expected_ba)):
        standard_error = np.std(values) / math.sqrt(trials)
        assert abs(np.mean(values) - expected) < 4 * standard_error + 1e-3, (np.mean(values), expected)
    assert 0.2 < expected_f < 0.3  # the scale every later number is read against


def greedy_f_measure(reference, estimate, window):
    """Independent F-measure: with windows narrower than half the beat spacing, greedy matching is optimal."""
    used, matched = set(), 0
    for r in reference:
        candidates = [i for i, e in enumerate(estimate) if abs(e - r) <= window and i not in used]
        if candidates:
            used.add(min(candidates, key=lambda i: abs(estimate[i] - r)))
            matched += 1
    if matched == 0:
        return 0.0
    precision, recall = matched / len(estimate), matched / len(reference)
    return 2 * precision * recall / (precision + recall)


def d2m_gan_scores(reference, estimate, duration):
    """BCS/BHS written as in D2M-GAN's released evaluation: per-second 0/1 lists, then counts."""
    n = int(np.ceil(duration))
    gt, syn = [0] * n, [0] * n
    for t in reference:
        gt[int(np.trunc(t))] = 1
    for t in estimate:
        syn[int(np.trunc(t))] = 1
    total, cover = sum(gt), sum(syn)
    hit = sum(1 for i in range(n) if gt[i] == 1 and syn[i] == 1)
    return cover / total, hit / total


@pytest.mark.parametrize("seed", range(5))
def test_cross_checked_against_second_implementations(seed):
    import mir_eval

    rng = np.random.default_rng(seed)
    # a video with an uneven beat (tempo drifting 90..140 BPM) and a gap; music near some of its beats plus extras
    periods = 60 / rng.uniform(90, 140, 50)
    video = np.cumsum(periods)
    video = video[(video < 25) & ((video < 10) | (video > 14))]
    keep = rng.random(video.size) < 0.7
    music = np.concatenate([video[keep] + rng.normal(0, 0.04, keep.sum()), rng.uniform(0, 25, 15)])
    music = np.sort(music[(music >= 0) & (music < 25)])
    ours = mr.beat_f_measure(video, music)
    assert ours.f1 == pytest.approx(mir_eval.beat.f_measure(video, music, 0.07))
    assert ours.f1 == pytest.approx(greedy_f_measure(video, music, 0.07))
    assert mr.beat_coverage_hit(video, music, 25.0) == pytest.approx(d2m_gan_scores(video, music, 25.0))


def tone_bursts(onsets, sample_rate=22050, seconds=10.0, seed=0):
    """Rising sine sweeps (a fifth over 0.4 s), one per onset, with a 2 ms attack and a smooth decay, plus faint noise."""
    rng = np.random.default_rng(seed)
    y = np.zeros(int(seconds * sample_rate))
    n = int(0.4 * sample_rate)
    t = np.arange(n) / sample_rate
    for k, onset in enumerate(onsets):
        f0 = 200 * 2 ** (k / 4)
        phase = 2 * np.pi * (f0 * t + 0.5 * f0 * t**2 / (2 * 0.4))
        envelope = np.exp(-12 * t) * np.minimum(1, t / 0.002) * np.minimum(1, (0.4 - t) / 0.05)
        start = int(round(onset * sample_rate))
        y[start:start + n] += 0.5 * envelope * np.sin(phase)
    return y + 0.001 * rng.standard_normal(y.size)


def test_sine_sweep_onsets_detected_within_20ms():
    rng = np.random.default_rng(3)
    truth = np.array([0.5 + 0.62 * i + rng.uniform(-0.1, 0.1) for i in range(14)])
    detected = mr.audio_onsets(tone_bursts(truth), 22050)
    errors = np.array([np.min(np.abs(detected - t)) for t in truth])
    assert errors.max() <= 0.020, errors
    # and nothing much else: at most one spurious detection
    assert len(detected) <= len(truth) + 1


def test_merge_onsets_joins_chords_not_arpeggios():
    chord = [1.0, 1.005, 1.02]
    arpeggio = [2.0, 2.04, 2.08]
    assert mr.merge_onsets(chord + arpeggio).tolist() == [1.0, 2.0, 2.04, 2.08]


def test_empty_sides_score_zero():
    assert mr.beat_f_measure(BEATS, []).f1 == 0.0
    assert mr.beat_coverage_hit([], BEATS, DURATION) == (0.0, 0.0)
    assert mr.beat_align_score([], BEATS) == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_matching_is_as_large_as_mir_evals_on_dense_events(seed):
    """Events denser than the window (onsets of fast notes, jittered beats, duplicates): our linear matching finds
    as many pairs as mir_eval's Hopcroft–Karp, and where each reference has a single candidate the same pairs."""
    import mir_eval

    rng = np.random.default_rng(seed)
    for _ in range(20):
        ref = np.sort(rng.uniform(0, 5, rng.integers(0, 60)))
        hit = ref[rng.random(ref.size) < 0.5]
        est = np.sort(np.concatenate([hit + rng.normal(0, 0.05, hit.size), rng.uniform(0, 5, rng.integers(0, 60)), ref[:3]]))
        assert len(mr.match_events(ref, est, 0.07)) == len(mir_eval.util.match_events(ref, est, 0.07))
    beats = np.arange(0.5, 20, 0.4)
    kept = beats[rng.random(beats.size) < 0.8]
    near = np.sort(kept + rng.uniform(-0.069, 0.069, kept.size))
    assert mr.match_events(beats, near, 0.07) == [tuple(map(int, p)) for p in mir_eval.util.match_events(beats, near, 0.07)]
