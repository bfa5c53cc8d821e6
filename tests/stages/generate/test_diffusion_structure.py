"""The structure plan heard in the diffusion backend (stages/generate/diffusion_structure.py): a restated bar comes
out as its source — exact, transposed by scale steps, or varied (same rhythm, bass and accompaniment) — whether its
source is in the same window or an earlier one, and the result stays deterministic."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.models.test_diffusion import shared_folder, trained
from tests.stages.generate.test_diffusion import controls_for


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return trained(shared_folder(tmp_path_factory))[0]


def test_transposition_moves_by_scale_steps():
    from v2m.models.diffusion import N_PITCH, PITCH_LOW
    from v2m.stages.generate.diffusion_structure import transposition

    up = transposition((0, 2, 4, 5, 7, 9, 11), 1)
    for pitch, moved in ((60, 62), (64, 65), (71, 72), (61, 63)):  # C→D, E→F, B→C, C# moves as C does
        assert up[pitch - PITCH_LOW] == moved - PITCH_LOW
    assert up[N_PITCH - 1] == -1  # past the roll's top
    down = transposition((0, 2, 4, 5, 7, 9, 11), -2)
    assert down[60 - PITCH_LOW] == 57 - PITCH_LOW  # C → A, two steps down


def test_restated_bars_come_out_as_their_sources(model_path):
    from v2m.models.diffusion import STEPS_PER_BEAT
    from v2m.models.loading import load_model
    from v2m.stages.generate.diffusion import SCALES, DiffusionSettings, grid_steps, sample_rolls, windows
    from v2m.stages.generate.diffusion_structure import transposition
    from v2m.stages.tokens.structure import check_structure, plan_structure
    from v2m.stages.tokens.vocab import load_tokenizer

    loaded = load_model(model_path)
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    controls = controls_for(vocab, bars=8)  # a 2-beat pickup, then 4/4 bars; the debug model's window is 2 bars
    plan = plan_structure(controls)
    rows = [{"section": "A", "role": "free", "cadence": False, "breath": False} for _ in range(8)]
    restate = {2: (1, "exact", 0), 3: (2, "transpose", 1), 5: (1, "exact", 0), 6: (1, "vary", 0),
               7: (4, "transpose", -1)}
    for i, (source, kind, steps) in restate.items():
        rows[i].update(role="restate", source=source, kind=kind, steps=steps)
    controls["structure"] = check_structure({**plan, "bars": rows}, 8, [2] + [4] * 7)
    bar_step, beats, _ = grid_steps(controls)
    starts = [s for s, _, _ in windows(bar_step, int(beats.sum()) * STEPS_PER_BEAT, loaded.config.window)]
    assert bar_step[2] in starts and bar_step[5] in starts  # bar 2's source in its window, bar 5's in an earlier one

    settings = DiffusionSettings(steps=3, guidance=2.0)
    roll = sample_rolls(loaded.model, controls, vocab.stats, settings, seed=3)[0]  # [steps, roles, planes, pitches]
    assert np.array_equal(roll, sample_rolls(loaded.model, controls, vocab.stats, settings, seed=3)[0])
    bar = {i: roll[bar_step[i]:bar_step[i] + 16] > 0 for i in range(1, 8)}
    assert bar[1].any() and bar[4].any()  # the sources have notes: the copies below are not trivially equal
    assert np.array_equal(bar[2], bar[1]) and np.array_equal(bar[5], bar[1])
    for target, source, steps in ((3, 2, 1), (7, 4, -1)):
        up, down = (transposition(SCALES["minor"], s) for s in (steps, -steps))
        index = up if not (bar[source].any(axis=(0, 1, 2)) & (up < 0)).any() else down
        moved = np.zeros_like(bar[source])
        moved[..., index[index >= 0]] = bar[source][..., np.flatnonzero(index >= 0)]
        assert np.array_equal(bar[target], moved)
    varied, source = bar[6], bar[1]
    assert np.array_equal(varied[:, 1:], source[:, 1:])  # bass and accompaniment kept
    assert np.array_equal(varied[:8, 0], source[:8, 0])  # the melody's first half kept
    # the second half's melody: the source's onset steps (the rhythm), pitches of the model's choice
    assert np.array_equal(varied[8:, 0, 0].any(-1), source[8:, 0, 0].any(-1))

    free = sample_rolls(loaded.model, controls, vocab.stats, DiffusionSettings(3, 2.0, structure=False), seed=3)[0]
    assert not np.array_equal(free[bar_step[2]:bar_step[2] + 16] > 0, free[bar_step[1]:bar_step[1] + 16] > 0)


def test_generated_piece_repeats_bars_of_the_plan(model_path):
    """Through generate_diffusion (the plan made from the controls): the melody's exact restatements are heard."""
    from v2m.models.loading import load_model
    from v2m.stages.evaluate.inputs import music_from_tokens
    from v2m.stages.evaluate.structure import structure_metrics
    from v2m.stages.generate.diffusion import DiffusionSettings, generate_diffusion
    from v2m.stages.tokens.vocab import load_tokenizer

    loaded = load_model(model_path)
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    controls = controls_for(vocab, bars=10, pickup=False)
    for bar in controls["bars"]:
        bar["phrase"] = False
    data = generate_diffusion(loaded.model, vocab, json.loads(json.dumps(controls)), DiffusionSettings(3, 2.0), seed=1)
    rows = data["controls"]["structure"]["bars"]
    assert any(r.get("kind") == "exact" for r in rows)
    metrics, _ = structure_metrics(music_from_tokens(data).score, data["controls"]["bars"])
    assert metrics["bar_repeat_exact"] > 0


def test_phrase_endings_breathe_cadence_and_end_on_the_tonic(model_path):
    from v2m.models.diffusion import PITCH_LOW, STEPS_PER_BEAT
    from v2m.models.loading import load_model
    from v2m.stages.generate.diffusion import TRIADS, DiffusionSettings, grid_steps, sample_rolls
    from v2m.stages.tokens.structure import check_structure
    from v2m.stages.tokens.vocab import load_tokenizer

    loaded = load_model(model_path)
    vocab = load_tokenizer(loaded.meta["tokenizer"])
    controls = controls_for(vocab, bars=6, pickup=False)  # A minor
    rows = [{"section": "A", "role": "free", "cadence": i == 2, "breath": i in (1, 2)} for i in range(6)]
    rows[-1].update(role="final", cadence=True)
    controls["structure"] = check_structure({"phrase_bars": 4, "sections": [], "phrases": [], "bars": rows}, 6, [4] * 6)
    bar_step, _, _ = grid_steps(controls)
    roll = sample_rolls(loaded.model, controls, vocab.stats, DiffusionSettings(3, 2.0), seed=2)[0] > 0
    for i in (1, 2):  # no melody note starts or sounds in a breath bar's last beat
        assert not roll[bar_step[i] + 3 * STEPS_PER_BEAT:bar_step[i] + 4 * STEPS_PER_BEAT, 0].any()
    cadence = roll[bar_step[2] + 8:bar_step[2] + 16, 0, 0]  # the cadence bar's second half: onsets on A C E only
    assert all((PITCH_LOW + p) % 12 in TRIADS["minor"] for p in np.flatnonzero(cadence.any(0)))
    last = roll[bar_step[5]:]
    for role, classes in ((0, {9}), (1, {9}), (2, {9, 0, 4})):  # held from the downbeat to the end
        pitches = np.flatnonzero(last[0, role, 0])
        assert {(PITCH_LOW + p) % 12 for p in pitches} == classes and last[:, role, 1][:, pitches].all()
        assert not last[1:, role, 0].any()
