"""The lean CPU decode step (models/lean_step.py) computes exactly what forward_cached computes."""

import pytest
import torch

from tests.models.corpus import VOCAB
from tests.models.helpers import tiny_model
from v2m.models.cache import Decoder
from v2m.models.lean_step import LeanStep


@pytest.mark.parametrize("norm,mlp,batch", [("rms", "swiglu", 1), ("rms", "swiglu", 3), ("layer", "gelu", 2)])
def test_lean_step_is_bit_identical_to_forward_cached(norm, mlp, batch):
    model = tiny_model(seed=1, norm=norm, mlp=mlp)
    ids = torch.randint(0, VOCAB, (batch, 50))
    reference_cache, lean_cache = model.new_cache(batch, 64), model.new_cache(batch, 64)
    with torch.no_grad():
        model.forward_cached(ids[:, :9], reference_cache, 0)
        model.forward_cached(ids[:, :9], lean_cache, 0)
        step = LeanStep(model, lean_cache)
        for pos in range(9, 50):
            expected = model.forward_cached(ids[:, pos:pos + 1], reference_cache, pos)[:, -1]
            assert torch.equal(step(ids[:, pos:pos + 1], pos), expected), pos
    assert torch.equal(lean_cache.k, reference_cache.k) and torch.equal(lean_cache.v, reference_cache.v)


def test_cpu_eager_decoder_steps_through_the_lean_step():
    model = tiny_model()
    decoder = Decoder(model, batch=2, max_len=32)
    assert decoder._lean is not None
    prompt = torch.randint(0, VOCAB, (2, 5))
    decoder.prefill(prompt)
    logits = decoder.step([4, 7], 5)
    cache = model.new_cache(2, 32)
    with torch.no_grad():
        model.forward_cached(prompt, cache, 0)
        assert torch.equal(logits, model.forward_cached(torch.tensor([[4], [7]]), cache, 5)[:, -1])


def test_quantized_model_steps_through_its_kernels():
    """A W8A8 model's lean step runs its QuantLinear kernels (the same calls forward_cached makes)."""
    from v2m.quant.linear import set_kernels
    from v2m.quant.pipeline import QuantizeConfig, quantize_model

    model = tiny_model(seed=2)
    quantize_model(model, QuantizeConfig(scheme="w8a8", method="rtn"), None)
    set_kernels(model, "auto", log_choice=False)
    ids = torch.randint(0, VOCAB, (1, 20))
    reference_cache, lean_cache = model.new_cache(1, 32), model.new_cache(1, 32)
    with torch.no_grad():
        model.forward_cached(ids[:, :4], reference_cache, 0)
        model.forward_cached(ids[:, :4], lean_cache, 0)
        step = LeanStep(model, lean_cache)
        for pos in range(4, 20):
            expected = model.forward_cached(ids[:, pos:pos + 1], reference_cache, pos)[:, -1]
            assert torch.equal(step(ids[:, pos:pos + 1], pos), expected)
