"""Structure metrics of a melody (stages/evaluate/structure.py) on constructed melodies whose answers are known."""

import json
import math

import numpy as np
import pytest
from symusic import Note, Score, Tempo, TimeSignature, Track

from v2m.errors import V2MError
from v2m.stages.evaluate import structure as st

Q = 12  # ticks per quarter = the metrics' grid, so the constructed times are the measured steps
BAR = 4 * Q


def score_of(bars, *, tracks=None, numerator=4, qpm=120.0, time_signatures=None):
    """A one-track 4/4 score from per-bar lists of (onset in quarters, pitch); each note lasts until the next onset
    (the last of a bar until the bar line) unless a bar entry is (onset, pitch, duration in quarters)."""
    score = Score(Q)
    score.tempos.append(Tempo(0, qpm=qpm))
    for t, n, d in time_signatures or [(0, numerator, 4)]:
        score.time_signatures.append(TimeSignature(t, n, d))
    track = Track(name="piano", program=0, is_drum=False)
    bar_len = numerator * Q
    for i, bar in enumerate(bars):
        for k, note in enumerate(bar):
            onset, pitch = note[0], note[1]
            end = bar[k + 1][0] if k + 1 < len(bar) else numerator
            length = note[2] if len(note) > 2 else end - onset
            track.notes.append(Note(i * bar_len + round(onset * Q), round(length * Q), pitch, 80))
    score.tracks.append(track)
    for extra in tracks or []:
        score.tracks.append(extra)
    return score


A = [(0, 60), (1, 62), (2, 64), (3, 60)]                    # the motif: up 2, up 2, down 4
B = [(0, 67), (2, 65)]
A_UP2 = [(t, p + 2) for t, p in A]                          # transposed: same onsets, same intervals
A_SEQ = [(0, 60), (1, 61), (2, 65), (3, 64)]                # varied (a): same onsets and contour (+ + -), new intervals
A_MOVED = [(0, 65), (1.5, 67), (2, 69), (3, 65)]            # varied (b): A's intervals, one onset moved
C = [(0, 72), (0.5, 71), (1, 69)]                           # new


def test_exact_transposed_and_varied_bars_counted_exactly():
    melody = st.melody_of(score_of([A, B, A, A_UP2, A_SEQ, A_MOVED, [], C]))
    assert st.classify_bars(st.bar_contents(melody)) == [
        "new", "new", "exact", "transposed", "varied", "varied", "empty", "new"]
    metrics = st.bar_repetition(melody)
    assert metrics["melody_bars"] == 7  # the empty bar is left out
    assert metrics["bar_repeat_exact"] == pytest.approx(1 / 7)
    assert metrics["bar_repeat_transposed"] == pytest.approx(1 / 7)
    assert metrics["bar_varied"] == pytest.approx(2 / 7)
    assert metrics["bar_repeated_or_varied"] == pytest.approx(4 / 7)


def test_nothing_repeats_in_a_line_of_new_bars_and_everything_after_the_first_in_a_loop():
    # each bar its own rhythm (3 notes, the second one on a different eighth): nothing to match
    fresh = [[(0, 60 + i), (0.5 * (i + 1), 64 - i), (3.5, 70)] for i in range(6)]
    none = st.bar_repetition(st.melody_of(score_of(fresh)))
    assert none["bar_repeated_or_varied"] == 0.0
    loop = st.bar_repetition(st.melody_of(score_of([A] * 6)))
    assert loop["bar_repeat_exact"] == pytest.approx(5 / 6) and loop["bar_repeated_or_varied"] == pytest.approx(5 / 6)


def test_short_bars_need_enough_notes_to_count_as_transposed_or_varied():
    # one-note bars: a transposed single note is no pattern; a 2-note bar with A's contour is not "varied"
    melody = st.melody_of(score_of([[(0, 60)], [(0, 62)], [(0, 60), (2, 64)], [(0, 61), (2, 69)], [(0, 60)]]))
    assert st.classify_bars(st.bar_contents(melody)) == ["new", "new", "new", "new", "exact"]
    # fewer than 2 non-empty bars: undefined, not 0
    assert math.isnan(st.bar_repetition(st.melody_of(score_of([A])))["bar_repeat_exact"])


def test_bar_lines_follow_time_signature_changes():
    assert st.bar_lines([(0, 4, 4)], 100).tolist() == [0, 48, 96, 144]
    assert st.bar_lines([(0, 4, 4), (96, 3, 4)], 200).tolist() == [0, 48, 96, 132, 168, 204]
    assert st.bar_lines([(0, 6, 8)], 10).tolist() == [0, 36]
    # the same 3-beat figure in a 3/4 bar after two 4/4 bars is its own bar, and it repeats
    three = [(0, 67), (1, 65), (2, 64)]
    score = score_of([A, A], time_signatures=[(0, 4, 4), (2 * BAR, 3, 4)])
    track = score.tracks[0]
    for bar in range(2):
        for onset, pitch in three:
            track.notes.append(Note(2 * BAR + bar * 3 * Q + onset * Q, Q, pitch, 80))
    melody = st.melody_of(score)
    assert melody.bar_starts.tolist() == [0, 48, 96, 132, 168]
    assert st.classify_bars(st.bar_contents(melody)) == ["new", "exact", "new", "exact"]


def test_melody_is_the_named_or_highest_busy_track_and_its_skyline():
    bass = Track(name="bass", program=33, is_drum=False)
    drums = Track(name="kit", program=0, is_drum=True)
    for i in range(16):
        bass.notes.append(Note(i * Q, Q, 36 + i % 3, 80))
        drums.notes.append(Note(i * Q, 1, 100, 80))  # a high "pitch" on a drum track never wins
    score = score_of([A, A], tracks=[bass, drums])
    assert st.melody_track(score).name == "piano"
    sparse_high = Track(name="bells", program=9, is_drum=False)
    sparse_high.notes.append(Note(0, Q, 96, 80))  # highest, but one note: not the melody
    score.tracks.append(sparse_high)
    assert st.melody_track(score).name == "piano"
    named = Track(name="melody", program=0, is_drum=False)
    named.notes.append(Note(0, Q, 50, 80))
    score.tracks.append(named)
    assert st.melody_track(score).name == "melody"
    # a second, lower voice in the melody's track: the skyline keeps the top note at each onset
    chords = score_of([A], tracks=None)
    for onset, pitch in A:
        chords.tracks[0].notes.append(Note(onset * Q, Q, pitch - 12, 80))
    assert st.melody_of(chords).pitch.tolist() == [60, 62, 64, 60]


def test_motif_recurrence_counts_motifs_met_again_elsewhere():
    # A twice, a bar apart: its 4-note motif at note 0 recurs at note 4 (transposed would too); the motifs that
    # straddle the bar line (notes 1-4, 2-5, 3-6) occur once. 5 motifs, 2 recurring.
    melody = st.melody_of(score_of([A, A]))
    assert st.motif_recurrence(melody) == pytest.approx(2 / 5)
    melody = st.melody_of(score_of([A, A_UP2]))
    assert st.motif_recurrence(melody) == pytest.approx(2 / 5)  # transposition-invariant
    assert math.isnan(st.motif_recurrence(st.melody_of(score_of([A]))))  # fewer than 8 notes


def test_melody_density_is_notes_per_quarter_over_its_bars():
    melody = st.melody_of(score_of([[], A, B, C]))  # 9 notes over bars 1..3 = 12 quarters; the empty lead-in is not counted
    assert st.melody_notes_per_beat(melody) == pytest.approx(9 / 12)


def rest_song():
    """Four bars: bar 1 ends with a half-beat rest, bar 2 with a held note, bar 3 with a beat of rest."""
    return score_of([A, [(0, 62), (1, 64), (2, 65, 1.5)], [(0, 67), (3, 65)], [(0, 64), (1, 62, 2)], [(0, 60, 4)]])


def test_breaths_and_phrase_starts_from_controls():
    melody = st.melody_of(rest_song())
    assert st.breath_before(melody).tolist() == [True, False, True, False, True]
    # the controls mark phrases at bars 2 and 3 (by start time, seconds at 120 qpm: 2 s per bar)
    bars = [{"start": 2.0 * i, "phrase": i in (0, 2, 3)} for i in range(5)]
    assert st.controls_phrases(melody, bars) == [True, False, True, True, False]
    rests = st.phrase_rests(melody, st.controls_phrases(melody, bars))
    assert rests == {"phrase_start_rest": 0.5, "other_bar_rest": 0.5}  # bar 2 yes, 3 no; bar 1 no, bar 4 yes
    metrics, labels = st.structure_metrics(rest_song(), bars)
    assert labels["phrase_source"] == st.PHRASES_FROM_CONTROLS and metrics["phrase_start_rest"] == 0.5
    # without controls the line's own long gaps mark phrases: bar 4 starts after a beat-long rest
    metrics, labels = st.structure_metrics(rest_song())
    assert labels["phrase_source"] == st.PHRASES_FROM_MUSIC
    # (the rule's threshold: 2 × the median IOI of a quarter = 2 beats; bar 2 follows a 2-beat gap, bar 4 a 3-beat one)
    assert st.music_phrases(melody) == [True, False, True, False, True]
    assert metrics["phrase_start_rest"] == 1.0 and metrics["other_bar_rest"] == 0.0


def test_excerpt_cuts_at_a_bar_line():
    score = score_of([A] * 8)  # 2 s per bar at 120 qpm
    cut = st.excerpt(score, 5.0)  # bars starting before 5 s: 0, 1, 2
    assert st.melody_of(cut).bar_starts.tolist() == [0, 48, 96, 144]
    assert st.bar_repetition(st.melody_of(cut))["melody_bars"] == 3


def test_no_pitched_notes_gives_undefined_metrics():
    score = Score(Q)
    kit = Track(name="kit", program=0, is_drum=True)
    kit.notes.append(Note(0, 1, 36, 80))
    score.tracks.append(kit)
    metrics, labels = st.structure_metrics(score)
    assert set(metrics) == set(st.STRUCTURE_METRICS) and all(math.isnan(v) for v in metrics.values())


def test_corpus_range_is_read_from_the_presets_and_a_broken_file_is_one_line(tmp_path):
    shipped = st.corpus_range({"bar_repeated_or_varied": 0.1, "beat_f1": 1.0})
    assert list(shipped) == ["bar_repeated_or_varied"]
    low, mid, high = (shipped["bar_repeated_or_varied"][k] for k in ("p10", "median", "p90"))
    assert 0 <= low <= mid <= high <= 1
    broken = tmp_path / "range.json"
    broken.write_text(json.dumps({"ranges": {}}))
    with pytest.raises(V2MError, match="not a readable corpus range"):
        st.corpus_range({"bar_varied": 0.0}, broken)


def test_random_lines_rarely_repeat_but_a_looped_one_always_does():
    rng = np.random.default_rng(0)
    bars = [[(k / 2, int(rng.integers(55, 80))) for k in range(8)] for _ in range(8)]
    chance = st.bar_repetition(st.melody_of(score_of(bars)))
    assert chance["bar_repeat_exact"] == chance["bar_repeat_transposed"] == 0.0
    assert chance["bar_varied"] <= 1 / 8  # a 7-step contour met again by chance, at most once
    metrics, _ = st.structure_metrics(score_of(bars[:2] * 4))
    assert metrics["bar_repeat_exact"] == pytest.approx(6 / 8) and metrics["motif_recurrence"] == 1.0
