"""The lean CPU decode step (models/engines/lean.py): with PyTorch ops exactly what forward_cached computes;
with the C helpers (models/engines/native.py) the same up to float32 round-off, and the same greedy tokens."""

import pytest
import torch

from tests.models.corpus import VOCAB
from tests.models.helpers import tiny_model
from v2m.models.config import ModelConfig
from v2m.models.engines.decoder import Decoder
from v2m.models.engines.lean import LeanStep
from v2m.models.engines.loop import generate, reference_greedy
from v2m.models.engines.native import NativeStep, step_library
from v2m.models.registry import build_model

needs_native = pytest.mark.skipif(step_library() is None, reason="no AVX-512 CPU or C compiler: the C helpers are off")


@pytest.mark.parametrize("norm,mlp,batch", [("rms", "swiglu", 1), ("rms", "swiglu", 3), ("layer", "gelu", 2)])
def test_lean_step_is_bit_identical_to_forward_cached(norm, mlp, batch):
    model = tiny_model(seed=1, norm=norm, mlp=mlp)
    ids = torch.randint(0, VOCAB, (batch, 50))
    reference_cache, lean_cache = model.new_cache(batch, 64), model.new_cache(batch, 64)
    with torch.no_grad():
        model.forward_cached(ids[:, :9], reference_cache, 0)
        model.forward_cached(ids[:, :9], lean_cache, 0)
        step = LeanStep(model, lean_cache, native=False)
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
        expected = model.forward_cached(torch.tensor([[4], [7]]), cache, 5)[:, -1]
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


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
        step = LeanStep(model, lean_cache, native=False)
        native = NativeStep.build(model, model.new_cache(1, 32))
        if native is not None:
            native.cache.k.copy_(lean_cache.k)
            native.cache.v.copy_(lean_cache.v)
        for pos in range(4, 20):
            expected = model.forward_cached(ids[:, pos:pos + 1], reference_cache, pos)[:, -1]
            assert torch.equal(step(ids[:, pos:pos + 1], pos), expected)
            if native is not None:
                torch.testing.assert_close(native(ids[:, pos:pos + 1], pos), expected, atol=1e-4, rtol=1e-4)


def _model(d_model, n_heads, d_ff, seed=0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(vocab_size=VOCAB, d_model=d_model, n_layers=2, n_heads=n_heads, d_ff=d_ff,
                                   max_len=160)).eval()


# float32 round-off only: the C helpers sum in another order (and use glibc's vectorized expf), so logits
# of a random model (|logit| ≲ 1) agree with forward_cached to ~1e-6; the bound leaves 10×.
@needs_native
@pytest.mark.parametrize("d_model,n_heads,d_ff,batch", [(32, 4, 64, 1), (128, 2, 160, 2), (96, 3, 80, 3), (256, 2, 96, 1)])
def test_native_step_matches_forward_cached(d_model, n_heads, d_ff, batch):
    model = _model(d_model, n_heads, d_ff)
    ids = torch.randint(0, VOCAB, (batch, 150))
    reference_cache, native_cache = model.new_cache(batch, 160), model.new_cache(batch, 160)
    with torch.no_grad():
        model.forward_cached(ids[:, :7], reference_cache, 0)
        model.forward_cached(ids[:, :7], native_cache, 0)
        steps_match(model, LeanStep(model, native_cache, native=True), ids, 7, reference_cache, native_cache, 1e-6)


def steps_match(model, step, ids, start, reference_cache, native_cache, cache_atol):
    """Decode ids[:, start:] through `step` and forward_cached side by side: logits and caches agree."""
    for pos in range(start, ids.shape[1]):
        expected = model.forward_cached(ids[:, pos:pos + 1], reference_cache, pos)[:, -1]
        torch.testing.assert_close(step(ids[:, pos:pos + 1], pos), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(native_cache.k, reference_cache.k, atol=cache_atol, rtol=1e-5)
    torch.testing.assert_close(native_cache.v, reference_cache.v, atol=cache_atol, rtol=1e-5)


@needs_native
def test_native_greedy_tokens_equal_the_reference_path():
    model = _model(128, 2, 160, seed=5)
    prompt = torch.randint(0, VOCAB, (2, 9))
    assert Decoder(model, 2, 160)._lean.native is not None
    assert torch.equal(generate(model, prompt, 100, temperature=0.0), reference_greedy(model, prompt, 100))


def test_native_step_declines_what_it_does_not_implement():
    assert NativeStep.build(tiny_model(norm="layer"), tiny_model().new_cache(1, 8)) is None
    assert NativeStep.build(tiny_model(mlp="gelu"), tiny_model().new_cache(1, 8)) is None


@needs_native
def test_changing_a_layers_kernel_after_the_decoder_was_built_is_followed():
    from v2m.quant.kernels import KERNELS
    from v2m.quant.linear import set_kernels
    from v2m.quant.pipeline import QuantizeConfig, quantize_model

    if KERNELS.get("cpu-int8")().unavailable(torch.device("cpu")) or KERNELS.get("cpu-vnni")().unavailable(torch.device("cpu")):
        pytest.skip("needs both cpu-vnni and cpu-int8 here")
    model = _model(64, 2, 96, seed=4)
    quantize_model(model, QuantizeConfig(scheme="w8a8", method="rtn"), None)
    prompt = torch.tensor([[1, 2, 3]])

    def step_with(kernel):  # prefill under cpu-vnni, then one step under `kernel`
        set_kernels(model, "cpu-vnni", log_choice=False)
        cache = model.new_cache(1, 32)
        with torch.no_grad():
            model.forward_cached(prompt, cache, 0)
            set_kernels(model, kernel, log_choice=False)
            return model.forward_cached(torch.tensor([[5]]), cache, 3)[:, -1]

    vnni, fbgemm = step_with("cpu-vnni"), step_with("cpu-int8")
    assert (vnni - fbgemm).abs().max() > 1e-4  # the two kernels round activations differently
    set_kernels(model, "cpu-vnni", log_choice=False)
    decoder = Decoder(model, 1, 32)
    decoder.prefill(prompt)
    set_kernels(model, "cpu-int8", log_choice=False)  # after the decoder (and its native step) was built
    torch.testing.assert_close(decoder.step([5], 3), fbgemm, atol=1e-5, rtol=1e-5)


def _odd_model(vocab=51, seed=6):
    """Widths off every vector width the C code uses (K % 16 ≠ 0, vocab % 4 ≠ 0): its tails are exercised."""
    torch.manual_seed(seed)
    return build_model(ModelConfig(vocab_size=vocab, d_model=40, n_layers=2, n_heads=2, d_ff=52, max_len=96)).eval()


@needs_native
@pytest.mark.parametrize("one_call", [True, False])
@pytest.mark.parametrize("batch", [1, 5])
def test_one_call_and_per_layer_steps_match_forward_cached(one_call, batch):
    model = _odd_model()
    ids = torch.randint(0, 51, (batch, 60))
    reference_cache, native_cache = model.new_cache(batch, 96), model.new_cache(batch, 96)
    step = NativeStep.build(model, native_cache, one_call=one_call)
    assert (step.plan is not None) == one_call
    with torch.no_grad():
        expected = model.forward_cached(ids[:, :11], reference_cache, 0)[:, -1]
        prefilled = step.prefill(ids[:, :11])
        if one_call:  # the prompt went through the same C call, all 11 · batch rows at once
            torch.testing.assert_close(prefilled, expected, atol=1e-5, rtol=1e-5)
        else:
            assert prefilled is None
            model.forward_cached(ids[:, :11], native_cache, 0)
        steps_match(model, step, ids, 11, reference_cache, native_cache, 1e-5)


@needs_native
def test_quantized_model_runs_as_one_call_and_long_prompts_fall_back():
    from v2m.quant.kernels import KERNELS
    from v2m.quant.linear import set_kernels
    from v2m.quant.pipeline import QuantizeConfig, quantize_model

    if KERNELS.get("cpu-vnni")().unavailable(torch.device("cpu")):
        pytest.skip("needs cpu-vnni here")
    model = _model(64, 2, 96, seed=7)
    quantize_model(model, QuantizeConfig(scheme="w8a8", method="rtn"), None)
    set_kernels(model, "cpu-vnni", log_choice=False)
    decoder = Decoder(model, 1, 160)
    assert decoder._lean.native.plan is not None
    prompt = torch.randint(0, VOCAB, (1, 100))  # over PREFILL_ROWS: forward_cached
    assert decoder._lean.prefill(prompt) is None
    with torch.no_grad():
        for length in (9, 100):
            cache = model.new_cache(1, 160)
            expected = model.forward_cached(prompt[:, :length], cache, 0)[:, -1]
            torch.testing.assert_close(decoder.prefill(prompt[:, :length]), expected, atol=1e-4, rtol=1e-4)
            step = model.forward_cached(torch.tensor([[3]]), cache, length)[:, -1]
            torch.testing.assert_close(decoder.step([3], length), step, atol=1e-4, rtol=1e-4)
    assert torch.equal(generate(model, prompt[:, :9], 40, temperature=0.0), reference_greedy(model, prompt[:, :9], 40))


@needs_native
def test_one_call_plan_follows_replaced_weights_and_refuses_bad_ids():
    model = _odd_model(seed=8)
    decoder = Decoder(model, 1, 96)
    prompt = torch.randint(0, 51, (1, 6))
    first = decoder.prefill(prompt)
    with torch.no_grad():  # new storage under the same Parameter object: seen at the next prefill
        model.blocks[0].mlp.up.weight.data = model.blocks[0].mlp.up.weight.data * 2
        model.embed.weight = torch.nn.Parameter(model.embed.weight * 0.5)  # a new object: seen at the next step
        again = decoder.prefill(prompt)
        expected = model.forward_cached(prompt, model.new_cache(1, 96), 0)[:, -1]
    assert not torch.allclose(first, again)
    torch.testing.assert_close(again, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(IndexError):
        decoder.step([51], 6)
    with pytest.raises(IndexError):
        decoder._lean.native.plan(torch.tensor([[1]]), 96)


def test_why_the_c_step_is_off_is_said_at_v(monkeypatch, capsys):
    """No AVX-512 (or no compiler): the lean PyTorch step runs, and -v (V2M_VERBOSE=1) says why."""
    from v2m.models.engines import native

    monkeypatch.setenv("V2M_VERBOSE", "1")
    monkeypatch.setattr(native, "needs", lambda features: "needs a CPU with avx512f")
    native.step_library.cache_clear()
    try:
        decoder = Decoder(tiny_model(), 1, 32)
        assert decoder._lean is not None and decoder._lean.native is None and decoder.describe() == "lean"
        err = capsys.readouterr().err
        assert "the C step is off, it needs a CPU with avx512f; the lean PyTorch step runs instead" in err
        assert "decode: engine lean" in err
    finally:
        native.step_library.cache_clear()
