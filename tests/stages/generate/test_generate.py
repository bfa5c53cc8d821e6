"""generate: forced controls per bar, bar count and grid from the video, determinism, sliding window, masks.

The helpers at the top (a calibrated vocabulary and a debug model trained for a few seconds on constructed
melodies) are shared with tests/stages/run/test_video.py, tests/cli/test_generate.py, tests/cli/test_run.py and
tests/test_pipeline.py.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from tests.media import needs_fluidsynth

# ---------------------------------------------------------------- shared helpers

SCALE = {"major": [0, 2, 4, 5, 7, 9, 11], "minor": [0, 2, 3, 5, 7, 8, 10]}


def melody_score(seed: int, bars: int = 8, mode: str = "major", tpq: int = 480):
    """A constructed one-track melody: quarter and eighth notes on a diatonic scale, 4/4 at 120 bpm."""
    import symusic

    rng = np.random.default_rng(seed)
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, 120.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    track = symusic.Track("melody", 0, False)
    tonic, degree, t = 60 + int(rng.integers(-3, 4)), 0, 0
    for _ in range(bars * 4):
        steps = [tpq] if rng.random() < 0.5 else [tpq // 2, tpq // 2]
        for length in steps:
            degree = int(np.clip(degree + rng.integers(-2, 3), -3, 9))
            octave, pc = divmod(degree, 7)
            track.notes.append(symusic.Note(t, length, tonic + 12 * octave + SCALE[mode][pc], 80))
            t += length
    score.tracks.append(track)
    return score


@functools.lru_cache(maxsize=1)
def constructed_vocab():
    """A Vocab calibrated on constructed melodies (the shipped presets/tokenizer.json is calibrated on music21)."""
    from v2m.stages.tokens.controls import analyse_score, calibrate
    from v2m.stages.tokens.vocab import new_vocab

    provisional = new_vocab({"n_density": 2, "tempo_bounds_bpm": [90.0], "density_bounds": [1.0], "strong_min": 2,
                             "strength_shares": [0.3, 0.4, 0.3], "mode_brightness_min": 0.4})
    analyses = [analyse_score(melody_score(s, mode=("major", "minor")[s % 2]), provisional) for s in range(4)]
    return new_vocab(calibrate(analyses))


def write_debug_model(path: Path, max_len: int = 128, seed: int = 0) -> Path:
    """An untrained tiny transformer checkpoint for the constructed vocabulary, written with models' save_model.

    Untrained on purpose: these tests check the mechanics (forced controls, bar grid, windows, seeds, files),
    which must hold for any weights; training even the debug preset costs ~50 s on the shared 2-core machine.
    """
    import torch

    from v2m.models.config import ModelConfig
    from v2m.models.loading import save_model
    from v2m.models.registry import build_model

    vocab = constructed_vocab()
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=len(vocab), d_model=32, n_layers=2, n_heads=4, d_ff=64, max_len=max_len)
    save_model(path, build_model(config).eval(), config, vocab.to_json(), vocab.hash, {"steps": 0, "note": "untrained"},
               force=True)
    return path


def grid_controls(vocab, bars: int = 6, bpm: float = 100.0, meter: int = 4, phase: float = 0.3, cuts=(), register="mid"):
    """A v2m.controls payload on a regular beat grid (seconds), as encode-tokens makes from a rhythm."""
    period = 60.0 / bpm
    beat_times = [round(phase + i * period, 3) for i in range(bars * meter + 1)]
    downbeats = beat_times[:bars * meter:meter]
    bar_list = [{"start": d, "density": 1 + i % 3, "strength": [2, 0, 1, 0][:meter], "velocity": 60 + 10 * (i % 4),
                 "phrase": i == 0 or any(d <= c < d + meter * period for c in cuts)} for i, d in enumerate(downbeats)]
    return {"tokenizer_hash": vocab.hash, "meter": meter, "tempo_bpm": bpm, "tempo_class": 2, "mode": "major",
            "register": register, "duration": beat_times[-1], "beat_times": beat_times, "downbeats": downbeats,
            "bars": bar_list, "rhythm": {"cuts": list(cuts), "envelope": [], "frame_rate": 30.0}}


@pytest.fixture(scope="module")
def debug_model(tmp_path_factory):
    """(path, LoadedModel, Vocab). One torch thread while it lives: on the shared 2-core machine a tiny model's
    decode step is ~10× slower when two threads contend with other processes."""
    import torch

    from v2m.stages.session import open_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = write_debug_model(tmp_path_factory.mktemp("model") / "debug.safetensors")
    session = open_model(path)
    yield (path, session.loaded, session.vocab)
    torch.set_num_threads(threads)


def split_at_bars(ids, vocab):
    bars = []
    for token in ids:
        if token == vocab.bar_id:
            bars.append([])
        elif bars:
            bars[-1].append(token)
    return bars


def run_generate(debug_model, controls, **settings):
    from v2m.stages.generate.sampler import GenerateConfig, generate

    _, loaded, vocab = debug_model
    rerank = settings.pop("rerank", False)
    prime_ids = settings.pop("prime_ids", None)
    decoders = settings.pop("decoders", None)
    config = GenerateConfig(**{"max_bar_tokens": 24, **settings})
    return generate(loaded.model, vocab, controls, config, rerank=rerank, prime_ids=prime_ids, decoders=decoders)


# ---------------------------------------------------------------- tests

def test_every_bar_opens_with_the_videos_controls(debug_model):
    from v2m.stages.tokens.controls import bar_control_ids, global_control_ids

    _, _, vocab = debug_model
    controls = grid_controls(vocab, bars=6, cuts=(7.5,))
    data = run_generate(debug_model, controls, seed=1)
    ids = data["ids"]
    assert ids[:3] == [vocab.bos, *global_control_ids(controls, vocab)]
    assert ids[-1] == vocab.eos and ids.count(vocab.eos) == 1
    bars = split_at_bars(ids, vocab)
    assert len(bars) == 6
    four_four = vocab.ids["TimeSig_4/4"]
    for bar, tokens in zip(controls["bars"], bars):
        forced = [*bar_control_ids(bar, controls, vocab), four_four]
        assert tokens[:len(forced)] == forced
        # no control or meter token is ever sampled: the only ones are those forced from the video
        assert not any(vocab.is_control(t) or t == four_four for t in tokens[len(forced):])
    assert sum(b["phrase"] for b in controls["bars"]) == 2  # bar 0 and the cut at 7.5 s
    assert data["beat_times"] == controls["beat_times"] and data["downbeats"] == controls["downbeats"]


def test_same_seed_same_ids_other_seed_differs(debug_model):
    controls = grid_controls(debug_model[2], bars=4)
    first, again = run_generate(debug_model, controls, seed=5), run_generate(debug_model, controls, seed=5)
    assert first == again
    assert run_generate(debug_model, controls, seed=6)["ids"] != first["ids"]


def test_sliding_window_generates_past_the_context_with_a_fixed_cache(debug_model):
    from v2m.models.engines.decoder import DecoderPool

    _, loaded, vocab = debug_model
    controls = grid_controls(vocab, bars=24)
    pool = DecoderPool()
    data = run_generate(debug_model, controls, seed=2, window=48, decoders=pool)
    assert len(data["ids"]) > 3 * 48  # several windows' worth
    assert len(split_at_bars(data["ids"], vocab)) == 24
    # memory is bounded by the window: the one cache the generation used was preallocated for 48 positions
    assert pool.get(loaded.model, 1, 48).cache.k.shape[3] == 48


def test_num_samples_are_a_batch_of_complete_pieces(debug_model):
    vocab = debug_model[2]
    data = run_generate(debug_model, grid_controls(vocab, bars=5), seed=3, num_samples=3)
    pieces = [data["ids"], *data["samples"]]
    assert len(pieces) == 3 and len({tuple(p) for p in pieces}) == 3
    for piece in pieces:
        assert len(split_at_bars(piece, vocab)) == 5 and piece[-1] == vocab.eos


@pytest.mark.parametrize("register", ["low", "high"])
def test_register_limits_sampled_pitches(debug_model, register):
    from v2m.stages.generate.plan import REGISTER_PITCHES

    vocab = debug_model[2]
    data = run_generate(debug_model, grid_controls(vocab, bars=6, register=register), seed=4, max_bar_tokens=48)
    names = vocab.token_names()
    pitches = [int(names[t].split("_")[1]) for t in data["ids"] if names[t].startswith("Pitch_")]
    low, high = REGISTER_PITCHES[register]
    assert pitches and all(low <= p <= high for p in pitches)


def test_bars_option_continues_the_grid(debug_model):
    vocab = debug_model[2]
    controls = grid_controls(vocab, bars=4, bpm=120.0)
    data = run_generate(debug_model, controls, seed=0, bars=7)
    assert len(split_at_bars(data["ids"], vocab)) == 7
    assert len(data["downbeats"]) == 7 and len(data["controls"]["bars"]) == 7
    # the extension keeps the video's bar length (4 beats at 120 bpm = 2 s)
    assert np.allclose(np.diff(data["downbeats"]), 2.0, atol=0.002)
    assert run_generate(debug_model, controls, seed=0, bars=2)["downbeats"] == controls["downbeats"][:2]


def test_decoded_music_follows_the_videos_beat_grid(debug_model):
    from v2m.stages.evaluate import beat_metrics as mr
    from v2m.stages.tokens.convert import decode_ids

    vocab = debug_model[2]
    # a drifting grid: beats 0.55 s apart, then 0.65 s, as a video's tempo wanders
    controls = grid_controls(vocab, bars=4, bpm=60 / 0.55)
    beats = [0.3 + 0.55 * i for i in range(9)] + [0.3 + 0.55 * 8 + 0.65 * i for i in range(1, 9)]
    controls["beat_times"], controls["downbeats"] = [round(b, 3) for b in beats], [round(b, 3) for b in beats[:16:4]]
    data = run_generate(debug_model, controls, seed=7)
    score = decode_ids(data["ids"], vocab, beat_times=data["beat_times"], downbeats=data["downbeats"])
    music_beats = np.asarray(score.to("second").get_beats())
    # the music's beats inside its 4 bars (an empty lead-in bar before the first downbeat holds no notes)
    music_beats = music_beats[(music_beats > beats[0] - 0.01) & (music_beats < beats[15] + 0.01)]
    assert mr.beat_f_measure(np.asarray(beats[:16]), music_beats).f1 == pytest.approx(1.0)
    notes = [n.time for track in score.to("second").tracks for n in track.notes]
    assert notes and min(notes) >= beats[0] - 0.001


def test_prime_theme_opens_the_piece(debug_model):
    from v2m.stages.generate.plan import theme_bars
    from v2m.stages.generate.sampler import prime_ids_from_midi
    from v2m.stages.tokens.controls import bar_control_ids

    vocab = debug_model[2]
    theme = melody_score(11, bars=2)
    prime = prime_ids_from_midi(theme.dumps_midi(), vocab, "theme.mid")
    expected = theme_bars(prime, vocab)
    assert len(expected) == 2 and all(expected)
    # a window small enough to slide several times: the theme stays pinned in each
    data = run_generate(debug_model, grid_controls(vocab, bars=16), seed=0, prime_ids=prime, window=110)
    bars = split_at_bars(data["ids"], vocab)
    assert len(bars) == 16 and len(data["ids"]) > 2 * 110
    controls = data["controls"]
    for got, notes, bar in zip(bars, expected, controls["bars"]):
        # exactly the theme's notes, under the video's controls and meter
        assert got == [*bar_control_ids(bar, controls, vocab), vocab.ids["TimeSig_4/4"], *notes]
    # and the theme returns: the plan's second section (A') opens by restating the theme's first bar
    row = controls["structure"]["bars"][8]
    assert (row["role"], row["source"], row["kind"]) == ("restate", 0, "exact")
    assert bar_notes(bars[8], vocab) == bar_notes(expected[0], vocab)


def test_prime_must_be_midi(debug_model):
    from v2m.errors import V2MError
    from v2m.stages.generate.sampler import prime_ids_from_midi

    with pytest.raises(V2MError, match="expects a MIDI file"):
        prime_ids_from_midi(b'{"format": "v2m.tokens"}', debug_model[2], "theme.json")


@needs_fluidsynth
def test_rerank_keeps_the_candidate_whose_heard_beats_match_best(debug_model):
    """--rerank scores what the report shows: the beats heard in each candidate's FluidSynth render (evaluate's
    tracker) against the video's beats; the first of the best wins, so it never keeps one worse than candidate 0."""
    from v2m.stages.generate.sampler import heard_score

    vocab = debug_model[2]
    controls = grid_controls(vocab, bars=4)
    data = run_generate(debug_model, controls, seed=9, num_samples=4, rerank=True, max_bar_tokens=48)
    scores = data["rerank"]["scores"]
    assert len(scores) == 4 and data["rerank"]["chosen"] == int(np.argmax(scores))  # argmax: the first of ties
    assert scores[data["rerank"]["chosen"]] >= scores[0]
    assert heard_score(data["ids"], vocab, data["controls"]) == pytest.approx(max(scores), abs=1e-4)
    assert "heard" in data["rerank"]["metric"] and len(data["samples"]) == 3


def test_controls_from_another_tokenizer_are_refused(debug_model):
    from v2m.errors import V2MError

    controls = grid_controls(debug_model[2], bars=2)
    controls["tokenizer_hash"] = "0" * 64
    with pytest.raises(V2MError, match="another tokenizer"):
        run_generate(debug_model, controls)


# ---------------------------------------------------------------- structure and styles (issue 17)

def bar_notes(tokens, vocab):
    """A bar's REMI note tokens as (kind, value) pairs (controls and the time signature dropped)."""
    from v2m.stages.generate.plan import note_kinds

    kinds = note_kinds(vocab)
    return [kinds[t] for t in tokens if t in kinds]


def test_generate_follows_the_structure_plan(debug_model):
    from v2m.stages.generate.motifs import SHORTEST

    vocab = debug_model[2]
    data = run_generate(debug_model, grid_controls(vocab, bars=12, cuts=(12.3,)), seed=3)
    plan = data["controls"]["structure"]
    bars = [bar_notes(bar, vocab) for bar in split_at_bars(data["ids"], vocab)]
    restated = [(i, row) for i, row in enumerate(plan["bars"]) if row["role"] == "restate" and bars[row["source"]]]
    assert restated, plan["bars"]
    for i, row in restated:
        got, source = bars[i], bars[row["source"]]
        rhythm = lambda notes: [(k, v) for k, v in notes if k != "pitch"]  # noqa: E731
        if row["kind"] == "exact" and not row.get("breath"):
            assert got == source
        elif not row.get("breath"):  # transposed or varied: the same rhythm
            assert rhythm(got) == rhythm(source)
    for i, row in enumerate(plan["bars"]):
        if row.get("breath"):  # nothing starts in the last beat before the next phrase
            assert all(v <= 3 * 12 - SHORTEST for k, v in bars[i] if k == "pos"), (i, bars[i])
    final = bars[-1]
    assert [k for k, _ in final] == ["pos", "pitch", "dur"] and final[0][1] == 0 and final[2][1] == 4 * 12


def test_prime_keeps_every_note_in_three_four(debug_model):
    from v2m.stages.generate.plan import theme_bars
    from v2m.stages.generate.sampler import prime_ids_from_midi

    vocab = debug_model[2]
    prime = prime_ids_from_midi(melody_score(4, bars=2).dumps_midi(), vocab, "theme.mid")
    four = theme_bars(prime, vocab, 4)
    three = theme_bars(prime, vocab, 3)
    pitches = lambda bars: [v for bar in bars for k, v in bar_notes(bar, vocab) if k == "pitch"]  # noqa: E731
    assert pitches(three) == pitches(four) and len(three) > len(four)
    assert all(v < 36 for bar in three for k, v in bar_notes(bar, vocab) if k == "pos")
    data = run_generate(debug_model, grid_controls(vocab, bars=6, meter=3), seed=0, prime_ids=prime)
    assert pitches(split_at_bars(data["ids"], vocab)[:len(three)]) == pitches(three)


def test_styles_change_the_melody_not_only_the_instruments():
    """The shipped model, one seed, the five styles: each line on its style's grid and in its register, and no
    two sharing 30 % of their notes (bar, onset, pitch). (A random debug model would not do: where two styles'
    masks both allow its argmax, the same noise picks the same token.)"""
    import torch

    from v2m.stages.arrange.styles import load_style, style_names
    from v2m.stages.generate.sampler import GenerateConfig, generate
    from v2m.stages.session import open_model

    torch.set_num_threads(1)
    session = open_model(None)
    loaded, vocab = session.loaded, session.vocab
    controls = grid_controls(vocab, bars=8)
    lines = {}
    for name in style_names():
        data = generate(loaded.model, vocab, controls, GenerateConfig(seed=7, max_bar_tokens=24), style=name)
        settings, notes, onset = data["melody"], set(), None
        for i, bar in enumerate(split_at_bars(data["ids"], vocab)):
            for kind, value in bar_notes(bar, vocab):
                if kind == "pos":
                    onset = value
                    assert value % (12 // settings["grid"]) == 0  # on the style's grid
                elif kind == "pitch":
                    assert settings["pitches"][0] <= value <= settings["pitches"][1]
                    notes.add((i, onset, value))
        low, high = load_style(name).register.melody
        assert low <= settings["pitches"][0] < settings["pitches"][1] <= high  # the picture's register inside
        lines[name] = notes
    names = sorted(lines)
    shares = {(a, b): len(lines[a] & lines[b]) / max(min(len(lines[a]), len(lines[b])), 1)
              for a in names for b in names[names.index(a) + 1:]}
    # measured on this steady grid: median 0.08, the closest pair (cinematic, pop) 0.61, where both put the
    # model's likeliest notes on the beats; on a 20 s sample clip every pair is below 0.3 (BENCHMARKS.md)
    assert sorted(shares.values())[len(shares) // 2] < 0.3 and max(shares.values()) < 0.75, shares


def test_diatonic_transposition_and_key():
    import numpy as np

    from v2m.stages.generate.motifs import key_of, transpose_diatonic

    # C major: a step up from C is D, from E is F (a semitone), from B is C; C# moves as C does (to D#)
    assert [transpose_diatonic(p, 1, 0, "major") for p in (60, 64, 71, 61)] == [62, 65, 72, 63]
    assert [transpose_diatonic(p, -1, 0, "major") for p in (60, 65)] == [59, 64]
    assert transpose_diatonic(69, 2, 9, "minor") == 72  # A minor: A → C, a third up
    counts = np.zeros(12)
    counts[[7, 11, 2, 7, 9, 11, 0, 2, 7, 4]] += 1  # G major's notes, G most often
    assert key_of(counts, "major") == 7 and key_of(np.zeros(12), "major") is None
    assert key_of(np.full(12, 2.0), "major") is None  # twelve equal counts: no key (not a NaN correlation)
