"""Pieces of several videos decoded as one batch (`run --batch`, issue 18): each piece's tokens are those it gets
in a batch of the same rows without the others, its own mask (register) holds in its rows, and a padded batch's
padding rows never leak into a piece. The CUDA case runs the same check on the graph engine."""

from __future__ import annotations

import pytest
import torch

from tests.stages.generate.test_generate import debug_model, grid_controls  # noqa: F401  (fixture)


def requests(vocab, config):
    from v2m.stages.generate.sampler import prepare

    a = prepare(vocab, grid_controls(vocab, bars=5, bpm=100.0, register="low"), config, style="pop")
    b = prepare(vocab, grid_controls(vocab, bars=8, bpm=132.0, meter=3, cuts=(4.0,), register="high"), config,
                style="folk")
    return a, b


def sample(debug_model, reqs, rows, seeds=(0,), compile=False):  # noqa: F811
    from v2m.stages.generate.sampler import GenerateConfig, sample_parts

    _, loaded, vocab = debug_model
    config = GenerateConfig(max_bar_tokens=24, window=48)  # a short window: the rows slide together
    parts = [request.part(config) for request in reqs]
    for part, seed in zip(parts, seeds * len(parts)):
        part.seed = seed
    return sample_parts(loaded.model, parts, vocab, config, window=config.window, rows=rows, compile=compile)


def test_a_piece_in_a_batch_is_the_piece_alone(debug_model):  # noqa: F811
    from v2m.stages.generate.sampler import GenerateConfig

    _, _, vocab = debug_model
    a, b = requests(vocab, GenerateConfig(max_bar_tokens=24))
    together = sample(debug_model, [a, b], rows=4, seeds=(3, 4))
    alone_a = sample(debug_model, [a], rows=4, seeds=(3,))
    alone_b = sample(debug_model, [b], rows=4, seeds=(4,))
    # one part alone (padded) and the part beside another: the same tokens, window slides included
    assert together[0] == alone_a[0] and together[1] == alone_b[0]
    assert together[0] != together[1]
    for piece, request in ((together[0][0], a), (together[1][0], b)):
        assert len(piece) > 60  # longer than the 48-token window: slid at least once
        assert piece.count(vocab.bar_id) == len(request.plan.bars)
        drawn = set(piece) - {t for bar in request.plan.bars for t in bar} - set(request.plan.head)
        assert not any(bool(request.banned[t]) for t in drawn)  # each piece's own register


def test_generate_many_keeps_order_and_batches_by_capacity(debug_model, monkeypatch):  # noqa: F811
    from v2m.stages.generate import sampler
    from v2m.stages.generate.sampler import GenerateConfig, generate_many

    _, loaded, vocab = debug_model
    config = GenerateConfig(max_bar_tokens=24, num_samples=2)
    a, b = requests(vocab, config)
    calls = []
    real = sampler.sample_parts

    def spy(model, parts, *args, **kwargs):
        calls.append((len(parts), kwargs["rows"]))
        return real(model, parts, *args, **kwargs)

    monkeypatch.setattr(sampler, "sample_parts", spy)
    got = generate_many(loaded.model, vocab, [a, b, a], config, rows=4)
    assert calls == [(2, 4), (1, 4)]  # 2 samples each: 2 requests fill 4 rows
    assert [len(samples) for samples in got] == [2, 2, 2]
    assert got[0] == got[2]  # the same request and seed, in another batch (and row): the same samples


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA graph engine needs a GPU")
def test_a_piece_in_a_batch_is_the_piece_alone_on_the_gpu(debug_model):  # noqa: F811
    from v2m.stages.generate.sampler import GenerateConfig

    path, _, vocab = debug_model
    from v2m.stages.session import open_model

    gpu = (path, open_model(path, device="cuda").loaded, vocab)
    a, b = requests(vocab, GenerateConfig(max_bar_tokens=24))
    together = sample(gpu, [a, b], rows=8, seeds=(3, 4), compile="graph")
    alone_b = sample(gpu, [b], rows=8, seeds=(4,), compile="graph")
    assert together[1] == alone_b[0]
