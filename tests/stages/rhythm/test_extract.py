"""extract-rhythm as pure functions: tempo, beats, meter and cuts on envelopes and frames made in memory.

Ground truth comes from construction (impulse trains, v2m.samples' renderer); beat accuracy is the
mir_eval F-measure at ±70 ms, as in the accuracy bench.
"""

import math

import mir_eval
import numpy as np
import pytest

from v2m.errors import V2MError
from v2m.samples import SampleSpec, ground_truth, render_frames
from v2m.stages.rhythm import tempo
from v2m.stages.rhythm.extract import (
    RhythmConfig,
    detect_cuts,
    onset_envelope,
    rhythm_from_envelope,
    rhythm_from_frames,
)

RATE = 30.0


def pulse_train(bpm: float, seconds: float, phase: float = 0.3, accent_every: int = 0, noise: float = 0.05, seed: int = 0):
    """An onset envelope with a one-frame pulse per beat (true beat times returned too)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    beats = np.arange(phase, seconds - 0.05, 60.0 / bpm)
    envelope = noise * rng.random(n)
    for k, b in enumerate(beats):
        i = int(round(b * RATE))
        if i < n:
            envelope[i] += 1.0 if accent_every and k % accent_every == 0 else 0.6
    return envelope, beats


@pytest.mark.parametrize("bpm", [62.0, 97.0, 128.0, 175.0])
def test_tempo_and_beats_of_a_pulse_train(bpm):
    envelope, beats = pulse_train(bpm, 20.0)
    estimate = tempo.estimate_tempo(envelope, RATE, (60, 180))
    assert abs(estimate.bpm / bpm - 1) < 0.04
    assert estimate.confidence > 0.5
    found = tempo.track_beats(envelope, RATE, estimate.bpm)
    assert mir_eval.beat.f_measure(beats, found, 0.07) > 0.95
    assert abs(tempo.grid_bpm(found, estimate.bpm) / bpm - 1) < 0.01  # the fitted grid is finer than a frame


def test_pulse_train_is_not_read_at_half_or_double_tempo():
    # every other pulse weaker: still the fast tempo (not half); a plain train at 70: not 140
    envelope, _ = pulse_train(150.0, 20.0, accent_every=2)
    assert abs(tempo.estimate_tempo(envelope, RATE).bpm / 150 - 1) < 0.04
    envelope, _ = pulse_train(70.0, 20.0)
    assert abs(tempo.estimate_tempo(envelope, RATE).bpm / 70 - 1) < 0.04


@pytest.mark.parametrize("bpm", [200.0, 215.0, 240.0])
def test_a_pulse_faster_than_the_range_is_halved_into_it(bpm):
    """Not grouped in threes (200 -> 66.7 BPM): the comb finds the pulse above the range and halves it, and
    the beats fall on every other pulse."""
    envelope, pulses = pulse_train(bpm, 20.0)
    estimate = tempo.estimate_tempo(envelope, RATE, (60, 180))
    assert abs(estimate.bpm / (bpm / 2) - 1) < 0.02 and estimate.confidence > 0.5
    found = tempo.track_beats(envelope, RATE, estimate.bpm)
    assert max(mir_eval.beat.f_measure(pulses[k::2], found, 0.07) for k in (0, 1)) > 0.95
    # at the range's top edge the in-range tempo stands (not a fold of the same comb peak to 90)
    envelope, _ = pulse_train(180.0, 20.0)
    assert abs(tempo.estimate_tempo(envelope, RATE, (60, 180)).bpm / 180 - 1) < 0.02
    # a wider range keeps the pulse itself
    envelope, _ = pulse_train(bpm, 20.0)
    assert abs(tempo.estimate_tempo(envelope, RATE, (60, 260)).bpm / bpm - 1) < 0.02


def test_noise_has_low_tempo_confidence():
    noise = np.random.default_rng(1).random(600)
    assert tempo.estimate_tempo(noise, RATE).confidence < 0.3


@pytest.mark.parametrize("meter", [3, 4])
def test_meter_and_downbeats_from_accents(meter):
    envelope, beats = pulse_train(120.0, 20.0, accent_every=meter)
    result = rhythm_from_envelope(envelope / envelope.max(), RATE, RhythmConfig())
    assert result["meter"] == meter
    assert mir_eval.beat.f_measure(beats[::meter], np.array(result["downbeats"]), 0.07) > 0.9


def test_tempo_hint_and_meter_override():
    envelope, beats = pulse_train(90.0, 12.0)
    result = rhythm_from_envelope(envelope, RATE, RhythmConfig(tempo=90.0, meter=3))
    assert result["tempo"]["source"] == "hint" and result["tempo"]["bpm"] == 90.0
    assert result["meter"] == 3
    assert set(result["downbeats"]) <= set(result["beats"])


def test_too_short_without_a_hint_is_an_error_and_with_one_a_grid():
    with pytest.raises(V2MError, match="too short"):
        rhythm_from_envelope(np.zeros(6), RATE, RhythmConfig())
    result = rhythm_from_envelope(np.zeros(6), RATE, RhythmConfig(tempo=120.0))
    assert result["beats"] == [0.0]  # 0.2 s at 120 BPM: one beat of the grid


def test_cuts_are_step_changes_not_flashes():
    jump = np.full(300, 0.02)
    step = np.full(300, 0.03)
    jump[100], step[100] = 0.8, 0.8  # a hard cut: the new colours stay
    jump[200], step[200] = 0.6, 0.05  # a flash: gone three frames later
    jump[201] = 0.55
    assert detect_cuts(jump, step, RATE, 0.25) == [100]


def test_cut_spikes_are_removed_from_the_envelope():
    raw = np.random.default_rng(0).random(300) * 0.1
    raw[150] = 50.0  # the "motion" of a cut
    envelope = onset_envelope(raw, RATE, cuts=[150], blank=1)
    assert envelope[149:152].max() == 0.0
    assert envelope.max() == pytest.approx(1.0) and envelope.min() >= 0.0


@pytest.mark.parametrize("motion,bpm", [("bounce", 84.0), ("pan", 140.0), ("flash", 110.0), ("mixed", 200.0)])
@pytest.mark.parametrize("method", ["flow", "diff"])
def test_frames_in_memory_recover_tempo_beats_and_cuts(motion, bpm, method):
    # no ffmpeg: frames rendered at 320x180 and area-downscaled to the analysis size, as the decoder does
    import cv2

    spec = SampleSpec(bpm=bpm, duration=10.0, width=320, height=180, motion=motion, noise=6.0, cuts=2, seed=3, audio=False)
    truth = ground_truth(spec)
    frames = (cv2.resize(f, (128, 72), interpolation=cv2.INTER_AREA) for f in render_frames(spec, truth))
    chunks = (np.stack([next(frames) for _ in range(min(32, truth["frames"] - i))]) for i in range(0, truth["frames"], 32))
    result = rhythm_from_frames(chunks, spec.fps, spec.fps, RhythmConfig(method=method))
    beats = np.array(truth["beats"])
    if bpm > 180:  # above extract-rhythm's range: half the pulse, on every other one
        bpm, beats = bpm / 2, max((beats[k::2] for k in (0, 1)),
                                  key=lambda b: mir_eval.beat.f_measure(b, np.array(result["beats"]), 0.07))
    assert abs(result["tempo"]["bpm"] / bpm - 1) < 0.04
    assert mir_eval.beat.f_measure(beats, np.array(result["beats"]), 0.07) >= 0.9
    assert len(mir_eval.util.match_events(np.array(truth["cuts"]), np.array(result["cuts"]), 0.1)) == len(truth["cuts"])
    assert len(result["cuts"]) == len(truth["cuts"])
    assert len(result["envelope"]) == round(result["duration"] * result["frame_rate"])
    assert max(result["envelope"]) == 1.0 and min(result["envelope"]) >= 0.0
    assert [s["start"] for s in result["segments"]][0] == 0.0 and result["segments"][-1]["end"] == result["duration"]
    assert all(0 <= s[k] <= 1 for s in result["segments"] for k in ("motion", "brightness", "saturation"))


def test_segments_report_brightness_and_motion():
    # a still grey first half, a bright moving second half (a cut in between)
    n, h, w = 120, 72, 128
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[:60] = 60
    texture = np.kron(np.random.default_rng(0).integers(120, 250, (h // 4, 3 * w // 4)), np.ones((4, 4)))
    for i in range(60, n):  # a textured scene panning 3 px per frame
        frames[i] = texture[:, 3 * (i - 60):3 * (i - 60) + w, None].astype(np.uint8)
        frames[i, ..., 0] = 250  # saturated red-ish
    result = rhythm_from_frames([frames[:64], frames[64:]], RATE, RATE, RhythmConfig(tempo=120.0))
    assert result["cuts"] == [2.0]
    first, second = result["segments"]
    assert first["brightness"] == pytest.approx(60 / 255, abs=0.01) and first["motion"] < 0.05
    assert second["brightness"] > 0.6 and second["motion"] > 0.5 and second["saturation"] > first["saturation"]


def test_long_shots_are_split_into_segments():
    envelope, _ = pulse_train(120.0, 20.0)
    frames = np.full((600, 72, 128, 3), 100, np.uint8)
    result = rhythm_from_frames([frames[i:i + 32] for i in range(0, 600, 32)], RATE, RATE, RhythmConfig(tempo=120.0))
    lengths = [s["end"] - s["start"] for s in result["segments"]]
    assert len(lengths) == math.ceil(20 / 8) and max(lengths) <= 8.0
