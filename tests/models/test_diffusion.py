"""The diffusion backend (models/diffusion.py, models/diffusion_train.py, stages/tokens/rolls.py): the roll ↔ notes
round trip, a tiny DiT trained a few steps on CPU (its loss falls), the DDIM sampler's determinism, the roll set.

`roll_set` and `trained` are shared with tests/stages/generate/test_diffusion.py.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest

SCALE = [0, 2, 4, 5, 7, 9, 11]


def part_song(seed: int, bars: int = 8, tpq: int = 480):
    """A constructed three-part piece in 4/4: a melody of quarters and eighths, an inner part of half-note chord
    tones and a bass of half notes (roles by register: melody on top, bass lowest)."""
    import symusic

    rng = np.random.default_rng(seed)
    score = symusic.Score(tpq)
    score.tempos.append(symusic.Tempo(0, 100.0))
    score.time_signatures.append(symusic.TimeSignature(0, 4, 4))
    tracks = [symusic.Track(name, 0, False) for name in ("soprano", "alto", "bass")]
    tonic = 60 + int(rng.integers(-2, 3))
    t, degree = 0, 2
    for bar in range(bars):
        root = [0, 3, 4, 0][bar % 4]
        for half in range(2):
            tracks[1].notes.append(symusic.Note(t + half * 2 * tpq, 2 * tpq, tonic - 5 + SCALE[(root + 2) % 7], 70))
            tracks[2].notes.append(symusic.Note(t + half * 2 * tpq, 2 * tpq, tonic - 24 + SCALE[root], 70))
        at = t
        while at < t + 4 * tpq:
            length = tpq if rng.random() < 0.6 else tpq // 2
            degree = int(np.clip(degree + rng.integers(-2, 3), 0, 9))
            octave, pc = divmod(degree, 7)
            tracks[0].notes.append(symusic.Note(at, length, tonic + 12 * octave + SCALE[pc], 80))
            at += length
        t += 4 * tpq
    score.tracks.extend(tracks)
    return score


@functools.lru_cache(maxsize=1)
def roll_set(folder: str) -> Path:
    """A roll set of six constructed three-part pieces (MIDI files in `folder`), made by the real builder."""
    from v2m.stages.tokens.rolls import build_roll_set
    from v2m.stages.tokens.vocab import load_tokenizer

    root = Path(folder)
    (root / "scores").mkdir(parents=True, exist_ok=True)
    sources = []
    for seed in range(6):
        path = root / "scores" / f"piece{seed}.mid"
        path.write_bytes(bytes(part_song(seed, bars=8 + seed).dumps_midi()))
        sources.append((path.name, path))
    out = root / "rolls.safetensors"
    build_roll_set(sources, out, load_tokenizer(), jobs=1, force=True)
    return out


@functools.lru_cache(maxsize=1)
def trained(folder: str) -> tuple[Path, dict]:
    """The diffusion-debug preset trained 40 steps on CPU on `roll_set` → (checkpoint, summary)."""
    import torch

    from v2m.models.diffusion_train import train_diffusion

    torch.set_num_threads(1)
    out = Path(folder) / "diffusion-debug.safetensors"
    summary = train_diffusion(str(roll_set(folder)), str(out), preset="diffusion-debug", device="cpu", force=True,
                              overrides={"steps": 40, "eval_every": 20})
    return out, summary


def shared_folder(tmp_path_factory) -> str:
    """One folder per test process for the roll set and the trained model (both cached by folder)."""
    folder = tmp_path_factory.getbasetemp() / "diffusion-shared"
    folder.mkdir(exist_ok=True)
    return str(folder)


@pytest.fixture(scope="session")
def diffusion_folder(tmp_path_factory) -> str:
    return shared_folder(tmp_path_factory)


def test_notes_roll_round_trip():
    from v2m.models.diffusion import notes_to_roll, roll_to_notes

    notes = np.array([[0, 4, 72, 0], [4, 2, 74, 0], [6, 10, 76, 0],   # a melody
                      [0, 8, 36, 1], [8, 8, 43, 1],                    # a bass
                      [0, 8, 55, 2], [0, 8, 60, 2], [8, 4, 59, 2], [8, 8, 62, 2], [12, 4, 59, 2]])  # accompaniment
    roll = notes_to_roll(notes, 16)
    assert roll.shape == (16, 3, 2, 72) and set(np.unique(roll)) == {-1.0, 1.0}
    back = roll_to_notes(roll)
    assert sorted(map(tuple, back.tolist())) == sorted(map(tuple, notes.tolist()))
    assert np.array_equal(notes_to_roll(back, 16), roll)


def test_roll_to_notes_keeps_single_lines():
    """Several onsets at one step of the melody keep the highest (skyline), of the bass the lowest."""
    from v2m.models.diffusion import notes_to_roll, roll_to_notes

    roll = notes_to_roll(np.array([[0, 4, 72, 0], [0, 4, 76, 0], [0, 4, 36, 1], [0, 4, 40, 1]]), 8)
    assert sorted(map(tuple, roll_to_notes(roll).tolist())) == [(0, 4, 36, 1), (0, 4, 76, 0)]


def test_roll_set_from_multipart_scores(diffusion_folder):
    from safetensors import safe_open
    from safetensors.numpy import load_file

    path = roll_set(diffusion_folder)
    arrays = load_file(str(path))
    with safe_open(str(path), "np") as f:
        meta = json.loads(f.metadata()["v2m"])
    assert meta["format"] == "v2m.rolls" and meta["summary"]["pieces"] == 6
    notes = arrays["notes"]
    assert set(np.unique(notes[:, 3])) == {0, 1, 2}  # all three roles
    melody, bass = notes[notes[:, 3] == 0], notes[notes[:, 3] == 1]
    assert melody[:, 2].mean() > bass[:, 2].mean() + 12
    assert set(np.unique(bass[:, 1])) == {8}  # half notes: 8 steps of a 16th
    assert arrays["bar_step"][:3].tolist() == [0, 16, 32]


def test_tiny_model_trains_and_loss_falls(diffusion_folder):
    path, summary = trained(diffusion_folder)
    assert summary["steps"] == 40
    assert summary["best_val_loss"] < 0.9 * summary["first_loss"]
    from v2m.models.loading import load_model

    loaded = load_model(path)
    assert loaded.backend == "diffusion" and loaded.config.window == 32


def test_ddim_sampler_is_deterministic(diffusion_folder):
    import torch

    from v2m.models.diffusion import CHANNELS, ddim_sample
    from v2m.models.loading import load_model

    model = load_model(trained(diffusion_folder)[0]).model
    W, F = model.config.window, model.config.n_features
    known = -torch.ones(2, W, CHANNELS)
    mask = torch.zeros(2, W)
    mask[:, :8] = 1
    features = torch.rand(2, W, F, generator=torch.Generator().manual_seed(0))
    affect = torch.tensor([[0, 1, 2], [1, 0, 3]])

    def run(seed, guidance=2.0):
        return ddim_sample(model, known, mask, features, affect, steps=4, guidance=guidance,
                           generator=torch.Generator().manual_seed(seed))

    first = run(3)
    assert torch.equal(first, run(3))
    assert not torch.equal(first, run(4))
    assert torch.equal(first[:, :8], known[:, :8])  # the known context is kept
    assert not torch.equal(run(3, guidance=1.0), first)


def test_learning_rate_decays_to_the_end_by_steps_or_by_time():
    from v2m.models.diffusion_train import DiffusionTrainConfig, learning_rate

    cfg = DiffusionTrainConfig(steps=1000, lr=1e-3, warmup=100)
    assert learning_rate(cfg, 0, 0.0, None)[0] == pytest.approx(1e-5)  # warm-up
    assert learning_rate(cfg, 100, 0.0, None)[0] == pytest.approx(1e-3)  # the cosine's top
    lr_end, progress = learning_rate(cfg, 999, 0.0, None)
    assert lr_end == pytest.approx(1e-4, rel=1e-3) and progress < 1.0
    assert learning_rate(cfg, 1000, 0.0, None)[1] >= 1.0  # the steps are over
    # a time limit that runs out first: at step 300 of 1000 but 90 % of the time, the rate is nearly down
    lr_time, progress = learning_rate(cfg, 300, 90.0, 100.0)
    assert progress == pytest.approx(0.9) and lr_time < 0.15e-3
    assert learning_rate(cfg, 300, 100.0, 100.0)[1] >= 1.0
    rates = [learning_rate(cfg, s, 0.0, None)[0] for s in range(100, 1000, 50)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # monotone decay after the warm-up


def test_moving_average_weights_are_validated_and_saved(diffusion_folder, tmp_path):
    import torch

    from v2m.models.diffusion_train import train_diffusion

    torch.set_num_threads(1)
    out = tmp_path / "ema.safetensors"
    summary = train_diffusion(str(roll_set(diffusion_folder)), str(out), preset="diffusion-debug", device="cpu",
                              force=True, overrides={"steps": 40, "eval_every": 20, "ema": 0.9})
    assert summary["weights"] == "moving average" and summary["train_config"]["ema"] == 0.9
    assert summary["best_val_loss"] < 0.9 * summary["first_loss"]
    assert "moving average, decay 0.9" in out.with_suffix(".md").read_text()


def test_self_conditioned_model_trains_and_samples_from_its_own_estimates(diffusion_folder, tmp_path):
    """Self-conditioning (Analog Bits): training feeds half of the windows the model's own estimate; the sampler
    gives every step after the first the previous step's clean estimate; the same seed gives the same roll."""
    import torch

    from v2m.models.diffusion import CHANNELS, Diffusion, ddim_sample, null_affect
    from v2m.models.diffusion_train import train_diffusion
    from v2m.models.loading import load_model

    preset = tmp_path / "sc.toml"
    debug = (Path(__file__).resolve().parents[2] / "presets" / "models" / "diffusion-debug.toml").read_text()
    preset.write_text(debug.replace("cond_dropout = 0.1", "cond_dropout = 0.1\nself_cond = true"))
    torch.set_num_threads(1)
    out = tmp_path / "sc.safetensors"
    summary = train_diffusion(str(roll_set(diffusion_folder)), str(out), preset=str(preset), device="cpu", force=True,
                              overrides={"steps": 40, "eval_every": 20})
    assert summary["best_val_loss"] < 0.9 * summary["first_loss"]
    model = load_model(out).model
    assert model.config.self_cond and model.inp.in_features == 3 * CHANNELS + 1
    seen = []
    real = Diffusion.forward

    def spy(self, *args, x0_prev=None, **kwargs):
        seen.append(x0_prev)
        return real(self, *args, x0_prev=x0_prev, **kwargs)

    W = model.config.window
    inputs = (-torch.ones(1, W, CHANNELS), torch.zeros(1, W), torch.rand(1, W, model.config.n_features),
              null_affect(1))
    Diffusion.forward = spy
    try:
        first = ddim_sample(model, *inputs, steps=4, guidance=2.0, generator=torch.Generator().manual_seed(3),
                            clamp_binary=True)
    finally:
        Diffusion.forward = real
    again = ddim_sample(model, *inputs, steps=4, guidance=2.0, generator=torch.Generator().manual_seed(3),
                        clamp_binary=True)
    assert seen[0] is None and all(p is not None and p.shape == (2, W, CHANNELS) for p in seen[1:]) and len(seen) == 4
    assert torch.equal(first, again)
