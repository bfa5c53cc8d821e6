"""Music statistics: checked against MusPy's own implementation on random scores and on hand-computed cases."""

import math

import muspy  # test-only dependency: the reference implementation these statistics are checked against
import numpy as np
import pytest
from symusic import Note, Score, TimeSignature, Track

from v2m.stages.evaluate import music_metrics as mm

STEPS = 12


def make_score(notes, drums=(), numerator=4, denominator=4, tpq=STEPS):
    """A symusic Score from (time, duration, pitch) tuples in ticks (tpq per quarter)."""
    score = Score(tpq)
    score.time_signatures.append(TimeSignature(0, numerator, denominator))
    piano = Track(name="piano", program=0, is_drum=False)
    for time, duration, pitch in notes:
        piano.notes.append(Note(time, duration, pitch, 80))
    score.tracks.append(piano)
    if drums:
        kit = Track(name="drums", program=0, is_drum=True)
        for time, duration, pitch in drums:
            kit.notes.append(Note(time, duration, pitch, 80))
        score.tracks.append(kit)
    return score


def random_score(seed):
    rng = np.random.default_rng(seed)
    notes = [(int(rng.integers(0, 16 * STEPS * 4)), int(rng.integers(1, 3 * STEPS)), int(rng.integers(36, 90)))
             for _ in range(int(rng.integers(5, 80)))]
    drums = [(int(rng.integers(0, 16 * STEPS * 4)), 1, 36) for _ in range(int(rng.integers(0, 20)))]
    numerator = int(rng.choice([2, 3, 4, 6]))
    return make_score(notes, drums, numerator=numerator)


def to_muspy(score):
    music = muspy.Music(resolution=STEPS)
    for track in score.tracks:
        notes = [muspy.Note(time=n.time, pitch=n.pitch, duration=n.duration, velocity=n.velocity) for n in track.notes]
        music.tracks.append(muspy.Track(is_drum=track.is_drum, notes=notes))
    return music


@pytest.mark.parametrize("seed", range(8))
def test_matches_muspy_on_random_scores(seed):
    score = random_score(seed)
    ours = mm.music_statistics(score, steps_per_beat=STEPS)
    music = to_muspy(score)
    bar = mm.note_arrays(score, STEPS).bar_steps
    expected = {
        "pitch_class_entropy": muspy.pitch_class_entropy(music),
        "scale_consistency": muspy.scale_consistency(music),
        "groove_consistency": muspy.groove_consistency(music, bar),
        "empty_bar_rate": muspy.empty_measure_rate(music, bar),
        "polyphony": muspy.polyphony(music),
        "pitch_range": muspy.pitch_range(music),
    }
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9, nan_ok=True), name


def test_hand_computed_c_major_scale():
    # one bar per note of C major, whole notes: 7 classes equally likely, all in C major
    notes = [(i * 4 * STEPS, 4 * STEPS, 60 + step) for i, step in enumerate([0, 2, 4, 5, 7, 9, 11])]
    stats = mm.music_statistics(make_score(notes), STEPS)
    assert stats["pitch_class_entropy"] == pytest.approx(math.log2(7))
    assert stats["scale_consistency"] == 1.0
    assert stats["pitch_range"] == 11
    assert stats["polyphony"] == 1.0
    # bars 0..6 each have one onset at position 0 (identical patterns); MusPy's rule adds an 8th, empty
    # bar after the last note's end, so exactly one of the 7 bar-to-bar comparisons differs in one step
    assert stats["groove_consistency"] == pytest.approx(1 - 1 / (4 * STEPS * 7))
    assert stats["notes_per_beat"] == pytest.approx(7 / 28)


def test_chords_and_empty_bars():
    # a C major triad held one beat in bar 0 and bar 2; bars 1 and 3 silent
    triad = [(0, STEPS, 60), (0, STEPS, 64), (0, STEPS, 67)]
    later = [(8 * STEPS, STEPS, p) for _, _, p in triad]
    tail = [(15 * STEPS, STEPS, 72)]  # last beat of bar 3, so the score spans 4 bars
    stats = mm.music_statistics(make_score(triad + later + tail), STEPS)
    assert stats["polyphony"] == pytest.approx((3 + 3 + 1) / 3)
    # bars 0, 2 and 3 sound; the tail ends on the bar line, so MusPy's rule also counts a 5th bar (sounding)
    assert stats["empty_bar_rate"] == pytest.approx(1 / 5)


def test_drums_ignored_by_pitch_statistics():
    score = make_score([(0, STEPS, 60)], drums=[(0, 1, 36), (STEPS, 1, 42)])
    stats = mm.music_statistics(score, STEPS)
    assert stats["pitch_range"] == 0.0
    assert stats["pitch_class_entropy"] == 0.0
    assert stats["notes"] == 3


def test_empty_score_is_nan_not_crash():
    stats = mm.music_statistics(make_score([]), STEPS)
    assert math.isnan(stats["pitch_class_entropy"]) and math.isnan(stats["polyphony"])
    assert stats["notes"] == 0
