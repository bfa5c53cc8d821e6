"""sample_next: greedy, top-k, top-p, temperature, determinism through the generator."""

import torch

from v2m.models.sampling import sample_next


def draws(logits, n=400, **kw):
    g = torch.Generator().manual_seed(0)
    return torch.stack([sample_next(logits, generator=g, **kw) for _ in range(n)])


def test_greedy_is_argmax_batched():
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 1.0]])
    assert sample_next(logits, temperature=0).tolist() == [1, 0]


def test_top_k_keeps_only_k_best():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 2.5]]).repeat(2, 1)
    seen = set(draws(logits, top_k=2).flatten().tolist())
    assert seen == {3, 4}


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    seen = set(draws(probs.log(), top_p=0.7).flatten().tolist())
    assert seen == {0, 1}  # 0.5 < 0.7, so the second token is needed; 0.8 ≥ 0.7 stops there
    assert set(draws(probs.log(), top_p=0.4).flatten().tolist()) == {0}


def test_temperature_sharpens_and_frequencies_follow_probabilities():
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    counts = torch.bincount(draws(probs.log(), n=3000).flatten(), minlength=3).float() / 3000
    assert torch.allclose(counts, probs[0], atol=0.04)
    cold = torch.bincount(draws(probs.log(), n=1000, temperature=0.2).flatten(), minlength=3).float() / 1000
    assert cold[0] > 0.95


def test_same_generator_seed_same_tokens():
    logits = torch.randn(8, 50)
    a = draws(logits, n=20, top_k=10, top_p=0.9)
    b = draws(logits, n=20, top_k=10, top_p=0.9)
    assert torch.equal(a, b)
