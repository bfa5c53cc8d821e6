"""Key finding and chord estimation against constructed music whose key and chords are known."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from v2m.stages.arrange.harmony import (
    QUALITIES,
    Chord,
    Key,
    beat_bounds,
    estimate_chords,
    find_key,
    notes_array,
    segment_bounds,
)

MAJOR_CADENCE = [(0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")]
MINOR_CADENCE = [(0, "min"), (5, "min"), (7, "maj"), (0, "min")]


def line(progression, tonic=0, beat=0.5, meter=4, block=False, base=60):
    """Notes (onset, offset, pitch, velocity) over one bar per chord: block chords, or a melody of the
    chord's tones with a neighbour tone (a diatonic step above the root) on the last beat."""
    rows = []
    for bar, (root, quality) in enumerate(progression):
        tones = [base + (tonic + root) % 12 + interval for interval in QUALITIES[quality]]
        start = bar * meter * beat
        if block:
            rows += [(start, start + meter * beat, p, 80) for p in [tones[0] - 12] + tones]
            continue
        for k, pitch in enumerate([tones[0], tones[1], tones[2], tones[0] + 14][:meter]):
            rows.append((start + k * beat, start + (k + 0.9) * beat, pitch, 80))
    return np.array(rows, dtype=float)


def bars(n, beat=0.5, meter=4):
    downbeats = [i * meter * beat for i in range(n)]
    beats = [i * beat for i in range(n * meter)]
    return downbeats, beats, n * meter * beat


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_krumhansl_schmuckler_finds_every_key_of_a_cadence(mode):
    cadence = MAJOR_CADENCE if mode == "major" else MINOR_CADENCE
    for tonic in range(12):
        assert find_key(line(cadence, tonic, block=True)) == Key(tonic, mode)


def test_no_notes_falls_back_to_the_controls_mode():
    empty = np.zeros((0, 4))
    assert find_key(empty) == Key(0, "major") and find_key(empty, "minor") == Key(9, "minor")


@pytest.mark.parametrize("block", [True, False])
def test_known_progressions_are_recovered_in_all_keys(block):
    # I vi IV V iii ii V I, and a minor one with the harmonic-minor V and a VI
    progressions = [[(0, "maj"), (9, "min"), (5, "maj"), (7, "maj"), (4, "min"), (2, "min"), (7, "maj"), (0, "maj")],
                    [(0, "min"), (8, "maj"), (5, "min"), (7, "maj"), (0, "min"), (3, "maj"), (7, "maj"), (0, "min")]]
    correct = total = 0
    for progression in progressions:
        for tonic in range(12):
            notes = line(progression, tonic, block=block)
            downbeats, beats, end = bars(len(progression))
            chords = estimate_chords(notes, segment_bounds(downbeats, beats, end), downbeats=downbeats)
            truth = [((tonic + root) % 12, quality) for root, quality in progression]
            correct += sum((c.root, c.quality) == t for c, t in zip(chords, truth))
            total += len(truth)
    accuracy = correct / total
    assert accuracy == 1.0 if block else accuracy >= 0.9, accuracy


def test_the_key_decides_an_ambiguous_bar():
    # E G A C (lowest E) is C6 or Am7: three tones of each, neither root in the bass; the diatonic
    # prior picks the key's tonic chord
    notes = np.array([(0.0, 2.0, pitch, 80) for pitch in (64, 67, 69, 72)])
    assert estimate_chords(notes, [(0.0, 2.0)], Key(0, "major"))[0].label == "C:maj"
    assert estimate_chords(notes, [(0.0, 2.0)], Key(9, "minor"))[0].label == "A:min"


def test_empty_segments_keep_the_previous_chord_and_start_on_the_tonic():
    notes = line([(5, "maj")], block=True)
    notes[:, :2] += 2.0  # the F chord sounds in the second bar only
    chords = estimate_chords(notes, [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)], Key(0, "major"))
    assert [c.label for c in chords] == ["C:maj", "F:maj", "F:maj"]


def test_half_bar_segments_split_on_the_middle_beat_and_catch_two_chords_a_bar():
    downbeats, beats, end = bars(2)
    assert segment_bounds(downbeats, beats, end, per_bar=2) == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]
    three = segment_bounds([0.0, 1.5], [0.0, 0.5, 1.0, 1.5, 2.0, 2.5], 3.0, per_bar=2)
    assert three == [(0.0, 1.0), (1.0, 1.5), (1.5, 2.5), (2.5, 3.0)]  # 3/4 splits before beat 3
    # C then G inside each bar, block chords on half-bars
    half = [(0, "maj"), (7, "maj"), (5, "maj"), (0, "maj")]
    notes = line(half, block=True, meter=2)
    chords = estimate_chords(notes, segment_bounds(downbeats, beats, end, per_bar=2), downbeats=downbeats)
    assert [c.label for c in chords] == ["C:maj", "G:maj", "F:maj", "C:maj"]
    assert len(beat_bounds(beats, end)) == 8


def test_notes_array_reads_pitched_tracks_in_seconds_and_skips_drums():
    score = symusic.Score(480)
    score.tempos.append(symusic.Tempo(0, qpm=60.0))
    piano, kit = symusic.Track("p", 0, False), symusic.Track("d", 0, True)
    piano.notes.append(symusic.Note(480, 240, 60, 90))
    kit.notes.append(symusic.Note(0, 120, 36, 100))
    score.tracks.extend([piano, kit])
    assert notes_array(score).tolist() == [[1.0, 1.5, 60.0, 90.0]]


def test_chord_labels_and_tones():
    chord = Chord(0.0, 1.0, 11, "dim")
    assert chord.label == "B:dim" and chord.pitch_classes == (11, 2, 5) and chord.fifth == 5


def test_a_leading_tone_diminished_chord_is_played_as_the_dominant_seventh():
    from v2m.stages.arrange.harmony import dominant_for_leading_tone

    played = dominant_for_leading_tone(Chord(0.0, 2.0, 11, "dim"), Key(0, "major"))
    assert played.label == "G:7" and set(played.pitch_classes) == {7, 11, 2, 5}
    minor = dominant_for_leading_tone(Chord(0.0, 2.0, 8, "dim"), Key(9, "minor"))  # G#° in A minor → E7
    assert minor.label == "E:7"
    other = Chord(0.0, 2.0, 2, "dim")  # ii° in C minor stays what it is
    assert dominant_for_leading_tone(other, Key(0, "minor")) == other
