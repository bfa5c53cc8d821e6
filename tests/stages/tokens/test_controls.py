"""Controls from music and from a rhythm artifact: classes, phrase marks, mode, calibration, ids."""

import numpy as np
import pytest

from tests.music import minor_song, song
from tests.stages.tokens.test_vocab import small_vocab
from v2m.errors import V2MError


def test_analysis_counts_onsets_beats_and_simultaneous_notes():
    from v2m.stages.tokens.controls import analyse_score

    score, truth = song(notes_per_beat=(1, 2, 4, 1))
    analysis = analyse_score(score, small_vocab())
    assert analysis.bar_beats == [truth.meter] * truth.bars
    assert analysis.bar_onsets == truth.onsets_per_bar
    # beat 1 of each bar: melody note + 3-note chord; other beats: the melody alone
    assert analysis.beat_counts == [4, 1, 1, 1] * truth.bars
    assert analysis.mode == "major" and analysis.notes == truth.notes


def test_density_class_follows_onset_rate():
    from v2m.stages.tokens.controls import analyse_score, bar_controls, density_class

    vocab = small_vocab()
    stats = vocab.stats
    assert density_class(0, stats) == 0
    rates = [0.25, 0.5, 1, 2, 3, 4, 8]
    classes = [density_class(r, stats) for r in rates]
    assert classes == sorted(classes) and classes[-1] == stats["n_density"] - 1
    bars = bar_controls(analyse_score(song(notes_per_beat=(1, 2, 4, 1))[0], vocab), stats)
    assert bars[0]["density"] < bars[1]["density"] < bars[2]["density"] and bars[3]["density"] == bars[0]["density"]
    assert bars[0]["strength"] == [2, 1, 1, 1]  # the chord makes beat 1 strong


def test_mode_by_key_finding():
    from v2m.stages.tokens.controls import analyse_score

    assert analyse_score(minor_song()[0], small_vocab()).mode == "minor"
    assert analyse_score(song()[0], small_vocab()).mode == "major"


def test_phrase_marks_a_bar_after_a_long_rest():
    from v2m.stages.tokens.controls import analyse_score

    score, _ = song(chords=("C", "F", "G", "C", "F", "C"), notes_per_beat=(2, 2, 2, 2, 2, 2), chord_track=False)
    melody = score.tracks[0]
    # silence bar 2 from beat 2 on: bar 3 begins after a 3.5-beat gap
    melody.notes = [n for n in melody.notes if not (2 * 4 * 480 + 480 <= n.time < 3 * 4 * 480)]
    flags = analyse_score(score, small_vocab()).phrase
    assert flags == [True, False, False, True, False, False]


def test_calibration_uses_quantiles_of_the_corpus():
    from v2m.stages.tokens.controls import PieceAnalysis, calibrate

    # 4/4 at 120 bpm: 2 s bars, a 0.5 s beat that is its own tactus (120 bpm is in 60-180 and nearest 110)
    pieces = [PieceAnalysis([], [4] * 10, list(range(1, 11)), [1, 0, 2, 0] * 10, [True] + [False] * 9, 120.0, "major", 60.0,
                            55, "h", bar_seconds=[2.0] * 10)]
    stats = calibrate(pieces, n_density_bins=5)
    assert stats["density_unit"] == "tactus"
    rates = np.arange(1, 11) / 4
    assert stats["density_bounds"] == [round(float(q), 4) for q in np.quantile(rates, [0.2, 0.4, 0.6, 0.8])]
    assert stats["strong_min"] == 2
    assert stats["strength_shares"] == [0.5, 0.25, 0.25]
    assert sum(stats["corpus"]["density_class_shares"]) == pytest.approx(1.0, abs=1e-3)


def rhythm(bpm=120.0, bars=4, meter=4, onsets_per_beat=(1, 2, 4, 1), cuts=(), frame_rate=100.0):
    """A rhythm payload whose envelope has exactly `onsets_per_beat[i]` sharp peaks per beat in bar i; the video
    ends where bar `bars` ends."""
    period = 60.0 / bpm
    beats = [i * period for i in range(bars * meter)]
    duration = bars * meter * period
    envelope = np.zeros(int(round(duration * frame_rate)))
    for bar in range(bars):
        for beat in range(meter):
            k = onsets_per_beat[bar]
            for j in range(k):
                t = beats[bar * meter + beat] + j * period / k
                envelope[int(round(t * frame_rate))] = 1.0 if j == 0 else 0.6
    return {"kind": "video", "duration": duration, "frame_rate": frame_rate, "envelope": envelope.tolist(),
            "tempo": {"bpm": bpm, "confidence": 0.9}, "beats": beats, "beat_strength": [1.0 if i % meter == 0 else 0.5
                                                                                        for i in range(len(beats))],
            "meter": meter, "downbeats": beats[::meter][:bars], "cuts": list(cuts),
            "segments": [{"start": 0.0, "end": duration, "motion": 0.5, "brightness": 0.8, "saturation": 0.5}]}


def test_controls_from_rhythm_match_controls_from_music_on_the_same_rates():
    from v2m.stages.tokens.controls import analyse_score, bar_controls
    from v2m.stages.tokens.video_controls import controls_from_rhythm

    vocab = small_vocab()
    controls = controls_from_rhythm(rhythm(onsets_per_beat=(1, 2, 4, 1)), vocab)
    music = bar_controls(analyse_score(song(notes_per_beat=(1, 2, 4, 1))[0], vocab), vocab.stats)
    assert [b["density"] for b in controls["bars"]] == [b["density"] for b in music]
    assert controls["tokenizer_hash"] == vocab.hash and controls["meter"] == 4 and controls["mode"] == "major"
    assert controls["register"] == "high" and controls["tempo_bpm"] == 120.0
    assert len(controls["bars"]) == 4 and all(len(b["strength"]) == 4 for b in controls["bars"])
    assert all(1 <= b["velocity"] <= 127 for b in controls["bars"])
    assert set(controls["rhythm"]) == {"cuts", "envelope", "frame_rate", "scenes", "confidence", "planned"}


def test_cuts_become_phrase_marks_and_strength_follows_corpus_shares():
    from v2m.stages.tokens.video_controls import controls_from_rhythm

    vocab = small_vocab()
    controls = controls_from_rhythm(rhythm(cuts=(4.05,)), vocab)  # bar 2 starts at 4.0 s
    assert [b["phrase"] for b in controls["bars"]] == [True, False, True, False]
    shares = vocab.stats["strength_shares"]
    classes = np.concatenate([b["strength"] for b in controls["bars"]])
    assert abs((classes == 2).mean() - shares[2]) <= 1 / len(classes) + 0.07


def test_bar_and_global_control_ids():
    from v2m.stages.tokens.controls import bar_control_ids, global_control_ids

    vocab = small_vocab()
    ids = bar_control_ids({"density": 2, "strength": [2, 0, 1], "phrase": True}, None, vocab)
    assert [vocab.names[i] for i in ids] == ["Density_2", "Phrase", "Strength_2", "Strength_0", "Strength_1"]
    assert [vocab.names[i] for i in global_control_ids({"tempo_class": 1, "mode": "minor"}, vocab)] == ["TempoClass_1",
                                                                                                        "Mode_minor"]


def test_rhythm_without_beats_is_a_clear_error():
    from v2m.stages.tokens.video_controls import controls_from_rhythm

    with pytest.raises(V2MError, match="fewer than two beats"):
        controls_from_rhythm({**rhythm(), "beats": [0.5], "downbeats": []}, small_vocab())


def test_tactus_rule_is_the_beat_trackers():
    from v2m.stages.rhythm.extract import RhythmConfig
    from v2m.stages.rhythm.tempo import PRIOR_BPM
    from v2m.stages.tokens.controls import TACTUS, tactus_period

    assert tuple(TACTUS["bpm_range"]) == tuple(RhythmConfig().tempo_range) and TACTUS["prior_bpm"] == PRIOR_BPM
    stats = {"tactus": TACTUS}
    # any octave of a 120 bpm beat folds onto 120 bpm; 76 bpm folds onto 152 (nearer 110 on a log scale)
    for beat_s in (0.125, 0.25, 0.5, 1.0, 2.0):
        assert tactus_period(beat_s, stats) == pytest.approx(0.5)
    assert tactus_period(60 / 76, stats) == pytest.approx(60 / 152)
    assert tactus_period(60 / 90, stats) == pytest.approx(60 / 90)


def test_density_does_not_depend_on_the_notated_beat_level():
    """The same notes written in 4/4 (quarter beats) and in 2/2 (half-note beats) get the same density classes;
    on the old per-notated-beat scale they differed by a factor 2."""
    import symusic

    from v2m.stages.tokens.controls import analyse_score, bar_controls, density_rate

    vocab = small_vocab()
    common, _ = song(notes_per_beat=(1, 2, 4, 1))
    cut, _ = song(notes_per_beat=(1, 2, 4, 1))
    cut.time_signatures = [symusic.TimeSignature(0, 2, 2)]
    a_common, a_cut = analyse_score(common, vocab), analyse_score(cut, vocab)
    assert a_common.bar_beats == [4] * 4 and a_cut.bar_beats == [2] * 4
    assert a_common.bar_seconds == a_cut.bar_seconds == [2.0] * 4
    assert [b["density"] for b in bar_controls(a_common, vocab.stats)] == [b["density"] for b in bar_controls(a_cut, vocab.stats)]
    # what the old scale did: onsets per notated beat, twice as high in 2/2
    old = {}
    assert density_rate(8, 2, 2.0, 1.0, old) == 2 * density_rate(8, 4, 2.0, 0.5, old)


def test_density_from_rhythm_does_not_depend_on_the_tracked_beat_level():
    """Audio tracked at the quarter (120 bpm, 4 beats a bar) or at the half note (60 bpm, 2 beats a bar): same
    classes, and the same as the music's."""
    from v2m.stages.tokens.controls import analyse_score, bar_controls
    from v2m.stages.tokens.video_controls import controls_from_rhythm

    vocab = small_vocab()
    quarter = rhythm(onsets_per_beat=(1, 2, 4, 1))
    half = dict(quarter, beats=quarter["beats"][::2], beat_strength=quarter["beat_strength"][::2], meter=2,
                tempo={"bpm": 60.0, "confidence": 0.9})
    by_quarter = [b["density"] for b in controls_from_rhythm(quarter, vocab)["bars"]]
    by_half = [b["density"] for b in controls_from_rhythm(half, vocab)["bars"]]
    music = [b["density"] for b in bar_controls(analyse_score(song(notes_per_beat=(1, 2, 4, 1))[0], vocab), vocab.stats)]
    assert by_quarter == by_half == music
    assert len(set(music)) == 3  # 1, 2 and 4 onsets a beat are three different classes


def test_tokenizer_without_density_unit_keeps_the_per_beat_scale():
    from v2m.stages.tokens.controls import PieceAnalysis, bar_rates, density_rate

    old = {"density_bounds": [1.0], "n_density": 3}
    assert density_rate(6, 3, 10.0, 0.1, old) == 2.0
    piece = PieceAnalysis([], [4, 2], [4, 4], [1] * 6, [True, False], 120.0, "major", 60.0, 8, "h")
    assert bar_rates(piece, old).tolist() == [1.0, 2.0]
    with pytest.raises(V2MError, match="no bar lengths in seconds"):
        bar_rates(piece, {"density_unit": "tactus", **old})
