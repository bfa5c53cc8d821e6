"""The CUDA-graph decode step's logic, checked eagerly on CPU (the body that gets captured), and on a GPU when present.

- filter_scores + gumbel_argmax draw from the same distribution as sample_next (same support, same frequencies);
- StepBody (the captured function) produces the eager step's logits and the tokens its sampling formula says;
- Decoder.step_draw == draw(step(...)) on the eager engine, and greedy step_draw == the full-forward reference.
"""

import pytest
import torch

from tests.models.corpus import VOCAB
from tests.models.helpers import tiny_model
from v2m.models.engines.decoder import Decoder
from v2m.models.engines.graph import CacheView, StepBody, cache_spans
from v2m.models.engines.loop import reference_greedy
from v2m.models.sampling import Sampling, filter_scores, gumbel_argmax, sample_next

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (none here)")


def test_filter_scores_is_sample_nexts_filter():
    """Same support as sample_next for top-k, top-p and a banned mask (banned tokens never drawn)."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 40, generator=g)
    banned = torch.zeros(40, dtype=torch.bool)
    banned[[0, 5, 7]] = True
    scores = filter_scores(logits, 0.8, 10, 0.9, banned)
    allowed = torch.isfinite(scores)
    masked = logits.masked_fill(banned, float("-inf"))
    seen = torch.zeros_like(allowed)
    for _ in range(300):
        seen[torch.arange(3), sample_next(masked, 0.8, 10, 0.9, g)] = True
    assert not (seen & ~allowed).any() and not allowed[:, [0, 5, 7]].any()
    assert (allowed.sum(-1) <= 10).all()


def test_gumbel_argmax_frequencies_follow_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, 0.5]])
    scores = filter_scores(logits, 1.3, 0, 0.9)
    probs = torch.softmax(scores, -1)[0]
    g = torch.Generator().manual_seed(0)
    uniform = torch.rand(6000, 5, generator=g)
    counts = torch.bincount(gumbel_argmax(scores.expand(6000, 5), uniform), minlength=5).float() / 6000
    assert torch.allclose(counts, probs, atol=0.02)
    assert counts[probs == 0].sum() == 0  # the top-p tail is never drawn


def _prefilled(model, batch, prompt_len=6, max_len=64, seed=0):
    decoder = Decoder(model, batch, max_len)
    prompt = torch.randint(3, VOCAB, (batch, prompt_len), generator=torch.Generator().manual_seed(seed))
    return decoder, prompt


def test_step_body_equals_eager_step_without_capture():
    model = tiny_model(seed=2)
    eager, prompt = _prefilled(model, 2)
    graphy, _ = _prefilled(model, 2)
    body = StepBody(graphy.step_module, 2, VOCAB, torch.device("cpu"), rows=8)
    body.banned[:, [1, 2]] = True
    body.banned[1, 3:VOCAB // 2] = True  # one mask per row: generate constrains each sample by its own plan
    eager.prefill(prompt)
    graphy.prefill(prompt)
    ids = torch.tensor([4, 9])
    for pos in range(6, 14):
        body.io[:2], body.io[2] = ids, pos
        t = int(body.t)
        logits = body.draw(0.9, 5, 0.95)
        want = eager.step(ids, pos)
        torch.testing.assert_close(logits, want, atol=1e-5, rtol=1e-5)
        expect = gumbel_argmax(filter_scores(want, 0.9, 5, 0.95, body.banned), body.noise[t])
        assert torch.equal(body.drawn, expect) and int(body.t) == t + 1
        assert not body.banned.gather(1, body.drawn[:, None]).any()
        ids = body.drawn.clone()
    # greedy through the body (temperature 0) on a fresh decoder equals the reference full forward
    fresh, _ = _prefilled(model, 2)
    body = StepBody(fresh.step_module, 2, VOCAB, torch.device("cpu"), rows=4)
    out = [fresh.prefill(prompt).argmax(-1)]
    for pos in range(6, 30):
        body.io[:2], body.io[2] = out[-1], pos
        body.draw(0.0, 0, 1.0)
        out.append(body.drawn.clone())
    assert torch.equal(torch.cat([prompt, torch.stack(out, 1)], 1), reference_greedy(model, prompt, 25))


def test_span_bucket_step_equals_the_whole_cache_step():
    """The half-cache graph's step (attention over a view of the first `span` slots) gives the whole-cache
    step's logits and writes the same cache slots, for every position inside the bucket."""
    assert cache_spans(1024) == [512, 1024] and cache_spans(256) == [256]
    model = tiny_model(seed=3)
    whole, prompt = _prefilled(model, 2, max_len=64)
    half, _ = _prefilled(model, 2, max_len=64)
    view_step = type(half.step_module)(half.model, CacheView(half.cache, 32))
    assert view_step.cache.k.data_ptr() == half.cache.k.data_ptr()  # a view, not a copy
    body_whole = StepBody(whole.step_module, 2, VOCAB, torch.device("cpu"), rows=4)
    body_half = StepBody(half.step_module, 2, VOCAB, torch.device("cpu"), rows=4)
    whole.prefill(prompt), half.prefill(prompt)
    ids = torch.tensor([4, 9])
    for pos in range(6, 32):
        for body in (body_whole, body_half):
            body.io[:2], body.io[2] = ids, pos
        want = body_whole.logits()
        got = body_half.logits(view_step)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        ids = want.argmax(-1)
    torch.testing.assert_close(half.cache.k[:, :, :, :32], whole.cache.k[:, :, :, :32])


def test_step_draw_is_draw_of_step_on_the_eager_engine():
    model = tiny_model(seed=4)
    a, prompt = _prefilled(model, 2)
    b, _ = _prefilled(model, 2)
    sampling = Sampling(1.0, 0, 0.95)
    ga, gb = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    ids_a = a.draw(a.prefill(prompt), sampling, None, ga)
    ids_b = b.draw(b.prefill(prompt), sampling, None, gb)
    for pos in range(6, 30):
        ids_a = a.step_draw(ids_a, pos, sampling, None, ga)  # a host list in, a host list out
        ids_b = b.draw(b.step(torch.tensor(ids_b), pos), sampling, None, gb)
        assert ids_a == ids_b


def _greedy_run(decoder, prompt, steps):
    greedy = Sampling(0.0)
    ids = decoder.draw(decoder.prefill(prompt), greedy)
    seq = [ids]
    for pos in range(prompt.shape[1], prompt.shape[1] + steps):
        ids = decoder.step_draw(ids, pos, greedy)
        seq.append(ids)
    return seq


@cuda
def test_cuda_graph_replays_the_eager_body_exactly():
    """The captured graph runs the same kernels as StepBody called eagerly: the same greedy tokens (bf16)."""
    model = tiny_model(seed=5).cuda()
    prompt = torch.randint(3, VOCAB, (2, 6), device="cuda")
    graphed = Decoder(model, 2, 64, compile="graph")
    assert graphed.model.embed.weight.dtype == torch.bfloat16 and graphed.cache.k.dtype == torch.bfloat16
    got = _greedy_run(graphed, prompt, 30)
    eager = Decoder(model, 2, 64, dtype=torch.bfloat16)
    body = StepBody(eager.step_module, 2, VOCAB, torch.device("cuda"), rows=4)
    ids = eager.prefill(prompt).float().argmax(-1)
    want = [ids.tolist()]
    for pos in range(6, 36):
        body.io[:2], body.io[2] = ids, pos
        body.draw(0.0, 0, 1.0)
        ids = body.drawn.clone()
        want.append(ids.tolist())
    assert got == want


@cuda
def test_cuda_graph_with_inductor_kernels_matches_eager_logits():
    model = tiny_model(seed=5).cuda()
    prompt = torch.randint(3, VOCAB, (2, 6), device="cuda")
    fast = Decoder(model, 2, 64, compile=True)
    eager = Decoder(model, 2, 64, dtype=torch.bfloat16)
    fast.prefill(prompt), eager.prefill(prompt)
    for pos in range(6, 20):
        ids = torch.tensor([pos % 7 + 3, pos % 5 + 3], device="cuda")
        torch.testing.assert_close(fast.step(ids, pos).float(), eager.step(ids, pos).float(), atol=3e-2, rtol=3e-2)


@cuda
def test_cuda_graph_sampling_is_deterministic_per_seed():
    model = tiny_model(seed=6).cuda()
    decoder = Decoder(model, 1, 64, compile="graph")
    prompt = torch.randint(3, VOCAB, (1, 4), device="cuda")

    def run(seed):
        g = torch.Generator(device="cuda").manual_seed(seed)
        ids = decoder.draw(decoder.prefill(prompt), Sampling(1.0, 0, 0.9), None, g)
        seq = [ids]
        for pos in range(4, 30):
            ids = decoder.step_draw(ids, pos, Sampling(1.0, 0, 0.9), None, g)
            seq.append(ids)
        return seq

    assert run(1) == run(1) and run(1) != run(2)


@cuda
def test_a_capture_late_in_the_noise_buffer_does_not_index_past_it():
    """Issue 18's crash at length: a graph captured when the noise counter is near the end of its buffer (a new
    sampling setting, or a new span bucket after generate's window slides) ran its warm-up draws past the last row
    — `index_select` out of range, a device-side assert. Now the warm-up starts at row 0 and the stream goes on."""
    from v2m.models.engines.graph import NOISE_ROWS

    model = tiny_model(seed=7).cuda()
    decoder = Decoder(model, 2, 64, compile="graph")
    prompt = torch.randint(3, VOCAB, (2, 4), device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    ids = decoder.draw(decoder.prefill(prompt), Sampling(1.0, 0, 0.9), None, g)
    for step in range(NOISE_ROWS + 40):
        pos = 4 + step % 60  # positions reused: only the noise counter has to run on
        sampling = Sampling(1.0, 0, 0.9) if step < NOISE_ROWS - 2 else Sampling(0.8, 0, 0.9)  # a new capture at t 254
        ids = decoder.step_draw(ids, pos, sampling, None, g)
    torch.cuda.synchronize()
    assert len(ids) == 2 and all(0 <= i < VOCAB for i in ids)
