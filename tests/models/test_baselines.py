"""Baselines and the shuffled-controls control: exact values on hand-made data."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from tests.models.helpers import tiny_model
from v2m.models.baselines import bigram_nll, model_nll, swap_controls, unigram_nll


def test_unigram_and_bigram_on_known_counts():
    train = np.array([1, 3, 4, 3, 4, 2], dtype=np.int64)
    offsets = np.array([0, 6])
    piece = [np.array([1, 3, 4, 2])]
    # add-one unigram over V=5: counts 0:1 1:2 2:2 3:3 4:3 (total 11)
    expected = -(math.log(3 / 11) + math.log(3 / 11) + math.log(2 / 11)) / 3
    assert math.isclose(unigram_nll(train, piece, 5), expected)
    # a bigram with weight 1 sees 3→4 always and 1→3 always, 4→2 half the time
    assert math.isclose(bigram_nll(train, offsets, piece, 5, lam=1.0), -(0 + 0 + math.log(0.5)) / 3)


def test_swap_controls_moves_only_controls_kind_by_kind():
    kinds = np.zeros(20, dtype=np.int64)
    kinds[[10, 11]] = 1  # e.g. density tokens
    kinds[[12, 13]] = 2  # e.g. mode tokens
    pieces = [np.array([1, 12, 10, 5, 6, 10, 7, 2]), np.array([1, 13, 11, 8, 11, 9, 2]), np.array([1, 12, 11, 5, 2])]
    swapped = swap_controls(pieces, kinds, seed=3)
    for before, after in zip(pieces, swapped):
        music = kinds[before] == 0
        np.testing.assert_array_equal(before[music], after[music])
        np.testing.assert_array_equal(kinds[before], kinds[after])  # a density slot keeps a density token
    assert any(not np.array_equal(a, b) for a, b in zip(pieces, swapped))


def test_model_nll_equals_a_plain_forward_when_pieces_fit_the_window():
    model = tiny_model(seed=2)
    pieces = [np.random.default_rng(i).integers(3, 48, size=n) for i, n in enumerate((20, 33, 7))]
    total, count = 0.0, 0
    with torch.no_grad():
        for p in pieces:
            ids = torch.as_tensor(p)[None]
            total += F.cross_entropy(model(ids[:, :-1])[0], ids[0, 1:], reduction="sum").item()
            count += len(p) - 1
    assert math.isclose(model_nll(model, pieces, context=64, batch=2), total / count, rel_tol=1e-5)
    # sliding windows (stride 8) score every target once: close to the full-context value, not equal
    assert abs(model_nll(model, pieces, context=16) - total / count) < 0.2
