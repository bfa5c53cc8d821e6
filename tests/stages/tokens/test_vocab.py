"""The vocabulary and MIDI ↔ ids: layout, controls interleaving, round trip, and the beat-grid tempo map."""

import functools

import numpy as np
import pytest

from tests.music import minor_song, song
from v2m.errors import V2MError
from v2m.stages.tokens.convert import decode_ids, encode_score


@functools.lru_cache(maxsize=1)
def small_vocab():
    """A Vocab calibrated on synthetic songs (the shipped preset is calibrated on music21's corpus)."""
    from v2m.stages.tokens.controls import analyse_score, calibrate
    from v2m.stages.tokens.vocab import new_vocab

    provisional = new_vocab({"n_density": 1, "tempo_bounds_bpm": []})
    pieces = [song(notes_per_beat=(1, 2, 3, 4))[0], song(notes_per_beat=(2, 2, 1, 1), qpm=80)[0], minor_song()[0]]
    return new_vocab(calibrate([analyse_score(p, provisional) for p in pieces]))


def notes_in_quarters(score) -> list[tuple]:
    """(onset, duration, pitch) of every note, times in quarter notes (exact fractions of the tpq)."""
    from fractions import Fraction

    tpq = score.ticks_per_quarter
    return sorted((Fraction(n.time, tpq), Fraction(n.duration, tpq), n.pitch) for t in score.tracks for n in t.notes)


def test_special_ids_and_control_block():
    vocab = small_vocab()
    assert (vocab.pad, vocab.bos, vocab.eos) == (0, 1, 2)
    assert vocab.names[vocab.bar_id] == "Bar_None"
    controls = sorted(vocab.control_ids)
    assert controls == list(range(vocab.n_base, len(vocab)))  # appended after MidiTok's ids
    assert all(vocab.names[i].split("_")[0] in {"Density", "Strength", "Phrase", "TempoClass", "Mode"} for i in controls)
    assert not vocab.is_control(vocab.bar_id) and vocab.is_control(vocab.phrase_id)


def test_json_round_trip_keeps_hash():
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = small_vocab()
    again = load_tokenizer(vocab.to_json())
    assert again.hash == vocab.hash and again.names == vocab.names
    changed = vocab.to_json()
    changed["stats"] = {**changed["stats"], "strong_min": changed["stats"]["strong_min"] + 1}
    assert load_tokenizer(changed).hash != vocab.hash


def test_encode_interleaves_controls_after_bar_and_globals_after_bos():
    vocab = small_vocab()
    score, truth = song()
    ids = encode_score(score, vocab)
    names = [vocab.names[i] for i in ids]
    assert names[0] == "BOS_None" and names[-1] == "EOS_None"
    assert names[1].startswith("TempoClass_") and names[2] == "Mode_major"
    bar_starts = [i for i, n in enumerate(names) if n == "Bar_None"]
    assert len(bar_starts) == truth.bars
    for b in bar_starts:
        assert names[b + 1].startswith("Density_")
        rest = names[b + 2:]
        if rest[0] == "Phrase":
            rest = rest[1:]
        assert all(n.startswith("Strength_") for n in rest[:truth.meter])  # one per beat
        assert rest[truth.meter] == "TimeSig_4/4"  # MidiTok's own tokens follow the controls
    assert names[bar_starts[0] + 2] == "Phrase"  # the first bar starts a phrase


def test_round_trip_keeps_every_note():
    from v2m.stages.tokens.vocab import prepare_score

    vocab = small_vocab()
    score, truth = song(notes_per_beat=(1, 2, 3, 4))
    decoded = decode_ids(encode_score(score, vocab), vocab)
    assert notes_in_quarters(decoded) == notes_in_quarters(prepare_score(score, vocab))
    assert decoded.note_num() == truth.notes


def test_fixed_tempo_from_the_tempo_class_when_no_grid():
    from v2m.stages.tokens.vocab import tempo_class_centre

    vocab = small_vocab()
    score, _ = song(qpm=120)
    ids = encode_score(score, vocab)
    decoded = decode_ids(ids, vocab)
    cls = int(vocab.names[ids[1]].split("_")[1])
    assert len(decoded.tempos) == 1 and decoded.tempos[0].qpm == pytest.approx(tempo_class_centre(cls, vocab.stats), abs=0.01)
    assert decode_ids(ids, vocab, tempo_bpm=90).tempos[0].qpm == pytest.approx(90, abs=0.01)


def test_uneven_beat_grid_puts_bars_and_beats_on_the_grid():
    vocab = small_vocab()
    score, truth = song(notes_per_beat=(1, 1, 1, 1))
    rng = np.random.default_rng(0)
    beat_times = list(np.round(0.7 + np.cumsum(rng.uniform(0.35, 0.8, truth.bars * truth.meter + 1)), 3))
    downbeats = beat_times[::truth.meter]
    decoded = decode_ids(encode_score(score, vocab), vocab, beat_times=beat_times, downbeats=downbeats).to("second")
    onsets = sorted({round(n.time, 4) for t in decoded.tracks for n in t.notes})
    # one note per beat: the k-th onset is the k-th grid beat, to MIDI's microsecond tempo resolution
    assert np.max(np.abs(np.asarray(onsets) - np.asarray(beat_times[:len(onsets)]))) < 1e-3
    assert len(onsets) == truth.bars * truth.meter


def test_grid_with_a_different_beat_count_stretches_the_bar():
    vocab = small_vocab()
    score, _ = song(notes_per_beat=(1, 1, 1, 1))
    beat_times = [0.0, 0.5, 1.0, 1.6, 2.2, 2.8, 3.6, 4.4, 5.0, 5.6]  # 3 beats per bar in the grid
    downbeats = [0.0, 1.6, 3.6, 5.6]
    decoded = decode_ids(encode_score(score, vocab), vocab, beat_times=beat_times, downbeats=downbeats).to("second")
    bar_onsets = sorted({round(n.time, 3) for t in decoded.tracks for n in t.notes if n.pitch < 70})  # chord per bar
    assert bar_onsets == pytest.approx(downbeats, abs=1e-3)


def test_controls_and_foreign_ids_are_handled():
    from v2m.stages.tokens.vocab import strip_controls

    vocab = small_vocab()
    ids = encode_score(minor_song()[0], vocab)
    assert ids[2] == vocab.mode_id("minor")
    stripped = strip_controls(ids, vocab)
    assert not any(vocab.is_control(t) for t in stripped) and vocab.bos not in stripped
    with pytest.raises(V2MError, match="outside this tokenizer's vocabulary"):
        decode_ids([vocab.bos, len(vocab) + 5, vocab.eos], vocab)


def test_no_notes_is_a_clear_error():
    import symusic

    vocab = small_vocab()
    empty = symusic.Score(480)
    empty.tracks = [symusic.Track("x", 0, False)]
    with pytest.raises(V2MError, match="no notes"):
        encode_score(empty, vocab)


def test_midi_beat_grid_in_seconds_follows_tempo_changes():
    import symusic

    from v2m.stages.tokens.beat_grid import beat_grid_seconds

    score, _ = song()
    score.tempos = [symusic.Tempo(0, 120.0), symusic.Tempo(4 * 480, 60.0)]
    beats, bars = beat_grid_seconds(score)
    assert bars[:3] == [0.0, 2.0, 6.0]
    assert beats[3:6] == [1.5, 2.0, 3.0]
