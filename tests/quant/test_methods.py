"""Rotation, SmoothQuant and mixed precision: function-preserving in float, and what each buys when quantized."""

import pytest
import torch

from tests.models.helpers import tiny_model
from tests.quant.helpers import correlated_inputs
from v2m.errors import V2MError
from v2m.quant import mixed, rotate, smoothquant, structure
from v2m.quant.calibrate import collect
from v2m.quant.formats import make_scheme, quantize_tensor, sqnr_db
from v2m.quant.pipeline import QuantizeConfig, quantize_model


def perturbed_model(seed=0, **overrides):
    model = tiny_model(seed, **overrides)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif p.dim() == 2:
                p.add_(0.02 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("n", [12, 20, 64, 320, 832])
def test_hadamard_orders(n):
    h = rotate.hadamard(n)
    assert h is not None and torch.equal(h @ h.T, n * torch.eye(n, dtype=h.dtype))
    q, kind = rotate.random_hadamard(n, seed=1)
    assert kind == "random Hadamard" and torch.allclose(q @ q.T, torch.eye(n, dtype=q.dtype), atol=1e-10)


def test_rotation_keeps_the_function_in_float_and_cached_decode():
    model = perturbed_model()
    ids = torch.randint(0, 48, (2, 20))
    with torch.no_grad():
        before = model(ids)
        rotate.rotate_model(model, seed=3)
        after = model(ids)
        cached = model.forward_cached(ids, model.new_cache(2, 32), 0)
    assert torch.allclose(before, after, atol=1e-4) and torch.allclose(before, cached, atol=1e-4)
    assert all(torch.all(p.norm1.weight == 1) for p in structure.blocks(model))


def test_rotation_refuses_layernorm():
    with pytest.raises(V2MError, match="needs RMSNorm"):
        rotate.rotate_model(tiny_model(norm="layer"))


def test_hadamard_spreads_outlier_columns_so_low_bits_quantize_better():
    torch.manual_seed(0)
    w = torch.randn(64, 64) * 0.02
    w[:, 7] *= 40  # one outlier input channel, as in trained transformers
    q, _ = rotate.random_hadamard(64, seed=0)
    q = q.float()
    scheme = make_scheme("w3", 0, True)  # per channel: the outlier sets every row's step
    ordinary = torch.arange(64) != 7
    plain = sqnr_db(w[:, ordinary], quantize_tensor(w, scheme).dequantize()[:, ordinary])
    rotated = sqnr_db(w[:, ordinary], (quantize_tensor(w @ q, scheme).dequantize() @ q.T)[:, ordinary])
    assert rotated > plain + 2.5  # dB on the ordinary weights; measured 1.0 → 4.6 dB


@pytest.mark.parametrize("mlp", ["swiglu", "gelu"])
def test_smoothquant_folds_without_changing_the_float_function(mlp):
    model = perturbed_model(mlp=mlp)
    ids = torch.randint(0, 48, (4, 24))
    layers = structure.target_linears(model)
    with torch.no_grad():
        before = model(ids)
        stats = collect(model, layers, ids, absmax=True)
        unfolded = smoothquant.smooth_model(model, stats, list(layers), alpha=0.5)
        for name, s in unfolded.items():  # what QuantLinear would divide its input by
            layer = model.get_submodule(name)
            layer.register_forward_pre_hook(lambda _m, a, s=s: (a[0] / s,))
        after = model(ids)
    assert torch.allclose(before, after, atol=1e-4)
    assert (len(unfolded) == 0) == (mlp == "swiglu")  # a GELU MLP's down projection has nothing to fold into


def test_smoothing_factors_flatten_activation_outliers():
    x = correlated_inputs(256, 64, outliers=2, outlier_scale=30)
    w = torch.randn(32, 64) * 0.05
    s = smoothquant.smoothing_factors(x.abs().amax(0), [w], alpha=0.5)
    ratio = lambda t: float(t.abs().amax(0).max() / t.abs().amax(0).median())
    assert ratio(x / s) < ratio(x) / 3
    assert torch.allclose((x / s) @ (w * s).T, x @ w.T, atol=1e-4)


def test_mixed_allocation_respects_budget_and_favours_sensitive_layers():
    schemes = {b: make_scheme(f"w{b}", 32, True) for b in mixed.CANDIDATE_BITS}
    sizes = {"a": (64, 64), "b": (64, 64), "c": (64, 64)}
    sensitivity = {"a": {2: 1.0, 3: 0.3, 4: 0.1, 8: 0.0}, "b": {2: 0.01, 3: 0.005, 4: 0.002, 8: 0.0},
                   "c": {2: 0.2, 3: 0.05, 4: 0.02, 8: 0.0}}
    bits, average = mixed.allocate(sizes, sensitivity, schemes, budget_bits=4.0)
    assert average <= 4.0
    assert bits["a"] >= bits["c"] >= bits["b"]
    with pytest.raises(V2MError, match="below the smallest scheme"):
        mixed.allocate(sizes, sensitivity, schemes, budget_bits=2.0)


def test_pipeline_mixed_and_errors():
    model = perturbed_model()
    from v2m.quant.calibrate import Calibration

    ids = torch.randint(0, 48, (4, 32))
    calib = Calibration(ids, "memory", "train", "x", 0)
    meta = quantize_model(model, QuantizeConfig("w4", "mixed+gptq", group=32, asym=True, budget_bits=3.3), calib)
    assert meta["mixed"]["average_bits"] <= 3.3 and meta["method"] == "mixed+gptq"
    assert {s["bits"] for s in meta["layers"].values()} <= {2, 3, 4}  # --scheme w4 is the widest a layer gets
    with pytest.raises(V2MError, match="already quantized"):
        quantize_model(model, QuantizeConfig("w4", "rtn", group=32))
    with pytest.raises(V2MError, match="needs calibration data"):
        quantize_model(perturbed_model(), QuantizeConfig("w8a8", "smoothquant"))
    with pytest.raises(V2MError, match="keeps activations in float"):
        quantize_model(perturbed_model(), QuantizeConfig("w4", "smoothquant", group=32), calib)
    with pytest.raises(V2MError, match="group size 128 does not divide layer blocks.0.attn.qkv"):
        quantize_model(perturbed_model(), QuantizeConfig("w4", "rtn", group=128))


def test_mixed_honours_the_scheme_and_combines_with_w8a8():
    from v2m.quant.calibrate import Calibration

    calib = Calibration(torch.randint(0, 48, (4, 32)), "memory", "train", "x", 0)
    # w8a8 is the widest: its layers stay per channel with int8 activations, --group groups the narrower widths
    meta = quantize_model(perturbed_model(), QuantizeConfig("w8a8", "mixed+gptq", group=32, budget_bits=6.0), calib)
    layers = meta["layers"].values()
    assert {s["bits"] for s in layers} <= {2, 3, 4, 8} and any(s["act"] == "int8" for s in layers)
    assert all(s["group"] == 0 for s in layers if s["bits"] == 8) and all(s["group"] == 32 for s in layers if s["bits"] < 8)
    meta = quantize_model(perturbed_model(), QuantizeConfig("w3", "mixed+rtn", group=32, budget_bits=3.0), calib)
    assert {s["bits"] for s in meta["layers"].values()} <= {2, 3}
    with pytest.raises(V2MError, match="not fp4.*v2m quantize --list"):
        quantize_model(perturbed_model(), QuantizeConfig("fp4", "mixed", group=32), calib)
    with pytest.raises(V2MError, match="not w2.*--list"):
        quantize_model(perturbed_model(), QuantizeConfig("w2", "mixed", group=32), calib)


def test_list_table_comes_from_the_same_checks_as_quantize():
    from v2m.quant.pipeline import combinations, valid_for
    from v2m.stages.quantize import capability_tables

    schemes, methods, kernels = capability_tables()
    table = dict(methods)
    assert table["smoothquant+rtn"][schemes.index("w8a8")] is None and "keeps activations in float" in table["smoothquant+rtn"][schemes.index("w4")]
    assert table["mixed+gptq"][schemes.index("w8a8")] is None and table["decoupleq"][schemes.index("w8a8")] is not None
    assert set(combinations()) == set(table)
    from v2m.quant.calibrate import Calibration

    calib = Calibration(torch.randint(0, 48, (2, 16)), "memory", "train", "x", 0)
    for method in ("rtn", "mixed+rtn", "smoothquant+rtn"):  # a ✓ in the table is a run that is not refused
        for scheme in schemes:
            if valid_for(scheme, method) is None:
                group = None if scheme in ("fp8", "nvfp4") or (scheme == "w8a8" and "mixed" not in method) else 32
                quantize_model(perturbed_model(), QuantizeConfig(scheme, method, group=group, budget_bits=9), calib)
    by_kernel = {name: refusals for name, _here, refusals in kernels}
    assert by_kernel["reference"] == [None] * len(schemes) and by_kernel["cpu-lowbit"][schemes.index("w2")] is None

