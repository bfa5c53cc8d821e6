"""generate --backend diffusion: windows with known context, roll → tokens for every role, same seed → same ids,
the parts through decode and the arranger (which fills only the roles the model left empty), and the bad inputs
(a transformer checkpoint for --backend diffusion and back, --steps 0) as one line each."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.models.test_diffusion import shared_folder, trained


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return trained(shared_folder(tmp_path_factory))[0]


def controls_for(vocab, bars: int = 6, meter: int = 4, pickup: bool = True) -> dict:
    """A controls payload on a 100 bpm grid (a 2-beat pickup bar first), with an onset envelope."""
    beats, bar_list, t = [], [], 0.0
    for i in range(bars):
        n = 2 if pickup and i == 0 else meter
        bar_list.append({"start": round(t, 3), "beats": n, "density": 1 + i % 3, "strength": [2] + [1] * (n - 1),
                         "phrase": i in (0, 1, 5), "velocity": 80})
        beats += [round(t + 0.6 * k, 3) for k in range(n)]
        t += 0.6 * n
    rate = 50.0
    envelope = np.zeros(int(t * rate) + 1)
    envelope[[int(b * rate) for b in beats]] = 1.0
    return {"tokenizer_hash": vocab.hash, "meter": meter, "tempo_bpm": 100.0, "tempo_class": 2, "mode": "minor",
            "register": "mid", "duration": round(t, 3), "beat_times": beats, "downbeats": [b["start"] for b in bar_list],
            "bars": bar_list, "rhythm": {"envelope": envelope.tolist(), "frame_rate": rate, "cuts": []}}


def test_windows_cover_the_piece_with_context():
    from v2m.stages.generate.diffusion import windows

    bar_step = np.arange(0, 40 * 16, 16)
    plan = windows(bar_step, 40 * 16, 128)
    assert plan[0] == (0, 0, 128)
    assert plan[-1][2] == 640
    for (s0, k0, e0), (s1, k1, e1) in zip(plan, plan[1:]):
        assert s1 + k1 == e0 and 0 < k1 <= 64 and s1 % 16 == 0  # the next window starts on a bar, in the previous
        assert e1 - s1 <= 128


def test_last_window_ends_at_the_piece_end_with_context():
    """A rest shorter than half a window costs no window of its own: 14 bars of 4/4 (224 steps) are 2 windows of
    128, the second with 2 bars of context; with less than a quarter window of context the usual overlap stays."""
    from v2m.stages.generate.diffusion import windows

    assert windows(np.arange(0, 224, 16), 224, 128) == [(0, 0, 128), (96, 32, 224)]
    assert windows(np.arange(0, 144, 16), 144, 128) == [(0, 0, 128), (64, 64, 144)]
    assert windows(np.arange(0, 256, 16), 256, 128) == [(0, 0, 128), (64, 64, 192), (128, 64, 256)]


def test_rhythm_condition_puts_peaks_on_the_grid():
    from v2m.stages.generate.diffusion import grid_steps, rhythm_condition
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer()
    controls = controls_for(vocab)
    _, beats, step_times = grid_steps(controls)
    assert len(step_times) == 4 * int(beats.sum()) + 1
    onsets = rhythm_condition(controls, step_times, vocab.stats)
    assert onsets[::4].min() > 0.4  # every beat has a peak
    assert onsets[2::4].max() == 0.0  # nothing half-way between beats


def test_generate_writes_every_role_on_the_bars_and_is_deterministic(model_path):
    from v2m.models.loading import load_model
    from v2m.stages.generate.diffusion import DiffusionSettings, generate_diffusion
    from v2m.stages.tokens.vocab import load_tokenizer

    loaded = load_model(model_path)
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    controls = controls_for(vocab, bars=12)  # 46 beats: two windows of the debug model's 32 steps are not enough
    settings = DiffusionSettings(steps=3, guidance=2.0)
    data = generate_diffusion(loaded.model, vocab, json.loads(json.dumps(controls)), settings, seed=5)
    again = generate_diffusion(loaded.model, vocab, json.loads(json.dumps(controls)), settings, seed=5)
    other = generate_diffusion(loaded.model, vocab, json.loads(json.dumps(controls)), settings, seed=6)
    assert data["ids"] == again["ids"] and data["parts"] == again["parts"]
    assert (data["ids"], data["parts"]) != (other["ids"], other["parts"])
    assert data["diffusion"]["windows"] > 2
    names = vocab.token_names()
    for ids in [data["ids"], *data["parts"].values()]:
        assert ids.count(vocab.bar_id) == 12 and ids[0] == vocab.bos and ids[-1] == vocab.eos
        # the scale constraint: every pitch in the minor mode's scale (A minor with G#)
        assert {int(names[i][6:]) % 12 for i in ids if names[i].startswith("Pitch_")} <= {9, 11, 0, 2, 4, 5, 7, 8}


def test_constraints_keep_the_scale_and_the_eighth_grid_unless_the_video_has_a_peak():
    from v2m.models.diffusion import N_PITCH, PITCH_LOW
    from v2m.stages.generate.diffusion import DiffusionSettings, constraints, piece_conditions
    from v2m.stages.generate.diffusion_structure import Ending
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer()
    controls = controls_for(vocab, bars=4)  # peaks on the beats
    features, _, _ = piece_conditions(controls, vocab.stats["n_density"], vocab.stats)
    features[9, 0] = 1.0  # a full peak of the video's own on a sixteenth off the eighth grid
    ends = [Ending(24, 16, 4, True, True, False)]  # bar 2 cadences
    allowed = constraints(controls, features, ends, DiffusionSettings()).view(len(features), 3, 2, N_PITCH)
    g_sharp, g = 68 - PITCH_LOW, 67 - PITCH_LOW  # controls_for is in minor: A natural minor, G# in cadences only
    frames = allowed[:, :, 1]  # (the scale: frames are free of the meter)
    assert frames[..., g].all() and not frames[:24, :, g_sharp].any() and frames[24:40, :, g_sharp].all()
    assert not allowed[:24, :, 0, g_sharp].any()
    a = 69 - PITCH_LOW
    onsets = allowed[:, :, 0, a]
    assert onsets[::2].all() and onsets[9].all()  # the eighth grid, and the video's own peak
    assert not onsets[[1, 3, 5, 7, 11, 13]].any()
    assert allowed[:, :, 1, a].all()  # frames anywhere: a note is held through any sixteenth
    assert constraints(controls, features, ends, DiffusionSettings(scale=False, meter=False)) is None


def test_time_path_is_computed_once_per_piece_and_reused(model_path, monkeypatch):
    """The time path (the timestep embedding's adaLN modulation) of every DDIM step is computed in one batch before
    the first window and reused by every window; the rolls are those of a sampler where every window computes its
    own at every step (up to float round-off of the batched matmul: the same notes)."""
    import v2m.stages.generate.diffusion as sampler
    from v2m.models.diffusion import roll_to_notes
    from v2m.models.loading import load_model
    from v2m.stages.tokens.structure import plan_structure
    from v2m.stages.tokens.vocab import load_tokenizer

    loaded = load_model(model_path)
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    controls = controls_for(vocab, bars=12)
    controls["structure"] = plan_structure(controls)
    settings = sampler.DiffusionSettings(steps=3, guidance=2.0)
    n_windows = len(sampler.windows(sampler.grid_steps(controls)[0], 46 * 4, loaded.config.window))
    assert n_windows > 2 and not loaded.model.time_path_per_step()
    calls = []
    original = type(loaded.model).modulation
    monkeypatch.setattr(type(loaded.model), "modulation", lambda self, t, a: calls.append(len(t)) or original(self, t, a))
    cached = sampler.sample_rolls(loaded.model, controls, vocab.stats, settings, seed=5)
    assert calls == [settings.steps * 2]  # one batch: every step's conditional and unconditional row
    calls.clear()
    real = sampler.ddim_sample
    monkeypatch.setattr(sampler, "ddim_sample", lambda *a, **k: real(*a, **{**k, "time_cache": None}))
    each = sampler.sample_rolls(loaded.model, controls, vocab.stats, settings, seed=5)
    assert calls == [2] * (settings.steps * n_windows)
    assert np.allclose(cached, each, atol=1e-4)
    assert np.array_equal(roll_to_notes(cached[0]), roll_to_notes(each[0]))


def test_notes_are_held_legato_to_the_next_onset_but_not_into_a_rest():
    from v2m.models.diffusion import notes_to_roll, roll_to_notes

    notes = np.array([[0, 1, 72, 0], [6, 1, 74, 0], [20, 1, 76, 0], [40, 1, 77, 0],  # staccato melody
                      [0, 10, 48, 1],                                                  # a long bass note
                      [8, 1, 55, 2], [8, 1, 60, 2], [12, 2, 62, 2]])                   # a chord, then a note
    roll = notes_to_roll(notes, 48)
    assert np.array_equal(roll_to_notes(roll), notes[np.lexsort((notes[:, 2], notes[:, 0], notes[:, 3]))])
    held = {(int(s), int(r), int(p)): int(d) for s, d, p, r in roll_to_notes(roll, hold=12, rests={0: [(16, 20)]})}
    assert held[(0, 0, 72)] == 6  # to the next onset
    assert held[(6, 0, 74)] == 10  # to the rest at step 16, not on to step 20
    assert held[(20, 0, 76)] == 12  # at most `hold` steps
    assert held[(40, 0, 77)] == 8  # to the piece's end
    assert held[(0, 1, 48)] == 12  # a note longer by its frames keeps its frames' length, up to the hold
    assert held[(8, 2, 55)] == held[(8, 2, 60)] == 4  # the chord to the part's next onset
    assert held[(12, 2, 62)] == 12


def test_roll_to_tokens_to_roll(model_path):
    """A roll on a controls grid → ids per role → decoded notes on the grid → the roll's notes (held legato, as
    roll_ids writes them)."""
    from v2m.models.diffusion import notes_to_roll, roll_to_notes
    from v2m.stages.generate.diffusion import HOLD, grid_steps, roll_ids
    from v2m.stages.tokens.convert import decode_ids
    from v2m.stages.tokens.vocab import load_tokenizer

    vocab = load_tokenizer()
    controls = controls_for(vocab, bars=4, pickup=True)
    bar_step, beats, _ = grid_steps(controls)
    steps = int(beats.sum()) * 4
    notes = np.array([[0, 4, 72, 0], [4, 2, 74, 0], [8, 12, 76, 0], [0, 8, 36, 1], [8, 16, 43, 1],
                      [8, 8, 55, 2], [8, 8, 60, 2], [24, 4, 59, 2]])
    roll = notes_to_roll(notes, steps)
    ids = roll_ids(roll, controls, vocab)
    tpq = vocab.miditok.time_division
    for role, r in (("melody", 0), ("bass", 1), ("accompaniment", 2)):
        score = decode_ids(ids[role], vocab)  # ticks: a 16th is tpq / 4
        got = [(n.time * 4 // tpq, n.duration * 4 // tpq, n.pitch) for t in score.tracks for n in t.notes]
        held = roll_to_notes(roll, hold=HOLD)
        mine = held[held[:, 3] == r]
        # bar 0 is a 2-beat pickup: the decoded score's bars follow the time signatures the ids carry
        assert sorted(got) == sorted((int(s), int(d), int(p)) for s, d, p, _ in mine)


def test_arranger_fills_only_the_empty_roles():
    import symusic

    from v2m.stages.arrange.arranger import arrange
    from v2m.stages.tokens.vocab import load_tokenizer

    controls = controls_for(load_tokenizer(), bars=4, pickup=False)

    def score(notes):
        s = symusic.Score(480, ttype="second")
        track = symusic.Track("x", 0, False, ttype="second")
        for t, d, p in notes:
            track.notes.append(symusic.Note(t, d, p, 80, ttype="second"))
        s.tracks.append(track)
        return s

    melody = score([(0.0, 0.6, 72), (0.6, 0.6, 74), (1.2, 1.2, 76)])
    bass = score([(0.0, 2.4, 36), (2.4, 2.4, 43)])
    out = arrange(melody, controls, "pop", seed=0, given={"bass": bass, "accompaniment": score([])})
    tracks = {t.name: t for t in out.tracks}
    assert [(round(n.time, 3), n.pitch) for n in tracks["bass"].notes] == [(0.0, 36), (2.4, 43)]
    assert len(tracks["harmony"].notes) > 0 and len(tracks["drums"].notes) > 0  # the empty role is filled by rule
    ruled = {t.name: t for t in arrange(melody, controls, "pop", seed=0).tracks}
    assert [n.pitch for n in ruled["bass"].notes] != [36, 43]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "v2m", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_inputs_are_one_line(model_path, tmp_path):
    from v2m.config import presets_dir
    from v2m.stages.tokens.vocab import load_tokenizer

    controls = tmp_path / "c.json"
    from v2m import artifacts

    artifacts.write_artifact(artifacts.make_artifact("v2m.controls", controls_for(load_tokenizer()), stage="test",
                                                     config={}, seed=0), str(controls), True)
    empty = tmp_path / "no-controls"
    empty.mkdir()
    cases = [
        (["generate", str(controls), "--model", str(model_path), "--steps", "0"], "--steps 0"),
        (["generate", str(controls), "--backend", "diffusion", "--model", str(presets_dir() / "default.safetensors")],
         "a 'transformer' checkpoint, but --backend diffusion"),
        (["generate", str(controls), "--backend", "transformer", "--model", str(model_path)],
         "a 'diffusion' checkpoint, but --backend transformer"),
        (["generate", str(controls), "--model", str(model_path), "--rerank", "-n", "2"], "transformer backend only"),
        (["train", str(controls), "--backend", "diffusion", "-o", str(tmp_path / "m.safetensors")],
         "not a v2m roll set"),
        # evaluate --model on a diffusion checkpoint scores it on controls (issue 21): a folder without any is one line
        (["evaluate", "--model", str(model_path), "--corpus", str(empty)], "no controls files"),
    ]
    for args, expected in cases:
        result = _cli(*args, "-o", str(tmp_path / "out.json"), cwd=tmp_path) if args[0] == "generate" \
            else _cli(*args, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert expected in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_generate_and_decode_through_the_cli(model_path, tmp_path):
    import symusic

    from v2m import artifacts
    from v2m.stages.tokens.vocab import load_tokenizer

    controls = tmp_path / "c.json"
    artifacts.write_artifact(artifacts.make_artifact("v2m.controls", controls_for(load_tokenizer()), stage="test",
                                                     config={}, seed=0), str(controls), True)
    tokens = tmp_path / "t.json"
    result = _cli("generate", str(controls), "--model", str(model_path), "--steps", "2", "-o", str(tokens), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(tokens.read_text())
    assert data["created_by"]["config"]["steps"] == 2 and data["created_by"]["config"]["backend"] == "diffusion"
    assert set(data["data"]["parts"]) == {"bass", "accompaniment"}
    result = _cli("decode", str(tokens), "-o", str(tmp_path / "t.mid"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    names = {t.name for t in symusic.Score(str(tmp_path / "t.mid")).tracks}
    assert {"melody", "drums"} <= names
