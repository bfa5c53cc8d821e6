"""The transformer and its static KV cache: cached forward == full forward, greedy fast path == reference."""

import pytest
import torch

from tests.models.corpus import VOCAB
from tests.models.helpers import tiny_model
from v2m.errors import V2MError
from v2m.models.config import ModelConfig, load_model_preset
from v2m.models.engines.decoder import Decoder, DecoderPool
from v2m.models.engines.loop import generate, reference_greedy
from v2m.models.registry import BACKENDS, build_model


def test_forward_shapes_and_causality():
    model = tiny_model()
    ids = torch.randint(0, VOCAB, (2, 20))
    logits = model(ids)
    assert logits.shape == (2, 20, VOCAB)
    changed = ids.clone()
    changed[:, 10:] = (changed[:, 10:] + 1) % VOCAB
    # changing the future must not change the past
    torch.testing.assert_close(model(changed)[:, :10], logits[:, :10])
    assert not torch.allclose(model(changed)[:, 10:], logits[:, 10:])


@pytest.mark.parametrize("norm,mlp", [("rms", "swiglu"), ("layer", "gelu")])
def test_cached_forward_matches_full_forward(norm, mlp):
    model = tiny_model(norm=norm, mlp=mlp)
    ids = torch.randint(0, VOCAB, (3, 40))
    full = model(ids)
    cache = model.new_cache(3, 64)
    parts = [model.forward_cached(ids[:, :17], cache, 0)]
    for pos in range(17, 40):  # one token at a time, the decode path
        parts.append(model.forward_cached(ids[:, pos:pos + 1], cache, pos))
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)


def test_tensor_position_attends_full_cache_with_mask():
    """The compiled path passes pos as a tensor: all slots, masked by position; stale slots are hidden."""
    model = tiny_model()
    ids = torch.randint(0, VOCAB, (2, 30))
    full = model(ids)
    cache = model.new_cache(2, 64)
    cache.k.normal_()  # garbage from an 'earlier, longer sequence'
    cache.v.normal_()
    model.forward_cached(ids[:, :20], cache, 0)
    for pos in range(20, 30):
        out = model.forward_cached(ids[:, pos:pos + 1], cache, torch.tensor(pos))
        torch.testing.assert_close(out[:, 0], full[:, pos], atol=1e-5, rtol=1e-5)


def test_cache_is_preallocated_and_written_in_place():
    model = tiny_model()
    decoder = Decoder(model, batch=1, max_len=64)
    k_ptr, shape = decoder.cache.k.data_ptr(), tuple(decoder.cache.k.shape)
    decoder.prefill(torch.tensor([[1, 3, 10]]))
    for pos in range(3, 20):
        decoder.step(torch.tensor([7]), pos)
    assert decoder.cache.k.data_ptr() == k_ptr and tuple(decoder.cache.k.shape) == shape == (2, 1, 4, 64, 8)
    assert decoder.cache.k[:, :, :, 19].abs().sum() > 0 and decoder.cache.k[:, :, :, 20:].abs().sum() == 0


def test_greedy_fast_path_equals_reference_token_for_token():
    model = tiny_model(seed=3)
    prompt = torch.randint(0, VOCAB, (2, 7))
    pool = DecoderPool()
    fast = generate(model, prompt, 60, temperature=0.0, decoders=pool)
    assert torch.equal(fast, reference_greedy(model, prompt, 60))
    # a second generation reuses the pool's decoder (and its stale cache) and is still exact
    assert pool.get(model, 2, model.config.max_len) is pool.get(model, 2, model.config.max_len)
    prompt2 = torch.randint(0, VOCAB, (2, 3))
    assert torch.equal(generate(model, prompt2, 40, temperature=0.0, decoders=pool), reference_greedy(model, prompt2, 40))


def test_generate_stops_at_eos_and_respects_max_len():
    model = tiny_model()
    eos = 2
    out = generate(model, torch.tensor([[1, 3]]), 50, temperature=0.0,
                   on_step=lambda pos, ids, nxt: torch.full_like(nxt, eos) if pos == 10 else nxt, eos_id=eos)
    assert out.shape == (1, 11) and out[0, -1] == eos
    with pytest.raises(ValueError):
        generate(model, torch.tensor([[1, 3]]), 500)


def test_registry_and_presets():
    assert "transformer" in BACKENDS.names()
    with pytest.raises(V2MError, match="available: diffusion, transformer"):
        BACKENDS.get("nope")
    small = load_model_preset("small")
    model = build_model(small.model.with_vocab(512))
    params = model.num_params()
    assert 5e6 <= params <= 12e6, params
    assert params * 2 <= 25e6  # ≤ 25 MB as bf16
    with pytest.raises(V2MError):
        load_model_preset("huge")
    with pytest.raises(ValueError):
        ModelConfig(vocab_size=10, d_model=30, n_heads=4)
