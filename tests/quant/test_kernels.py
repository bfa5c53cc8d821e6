"""Each fast kernel against the `reference` kernel (dequantize + matmul), with the SQNR bound stated."""

import pytest
import torch

from v2m.errors import V2MError
from v2m.quant.formats import make_scheme, quantize_tensor, sqnr_db
from v2m.quant.kernels import KERNELS, auto_kernel
from v2m.quant.linear import QuantLinear, set_kernels

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="GPU kernel: no CUDA device on this machine (run on the GPU box)")


def quant_layer(scheme_name, k=256, n=192, group=None, asym=False, bias=True, device="cpu"):
    torch.manual_seed(0)
    linear = torch.nn.Linear(k, n, bias=bias)
    qt = quantize_tensor(linear.weight.detach(), make_scheme(scheme_name, group, asym))
    return linear, QuantLinear.from_qtensor(qt, linear.bias.detach() if bias else None).to(device)


def outputs(layer, x, kernel):
    layer.set_kernel(kernel)
    with torch.no_grad():
        return layer(x)


def test_reference_is_dequantize_then_matmul():
    linear, layer = quant_layer("w4", group=64, asym=True)
    x = torch.randn(3, 256)
    expected = x @ layer.qtensor().dequantize().T + linear.bias
    assert torch.allclose(outputs(layer, x, "reference"), expected, atol=1e-5)
    assert sqnr_db(linear(x), expected) > 15  # w4 g64 asym on a random layer: ~20 dB


# W8A8 on CPU. int-mm and inductor compute exactly what reference emulates (per-token symmetric int8
# activations, int32 accumulation), so the bound is float round-off: ≥ 60 dB. cpu-int8 (fbgemm)
# quantizes each (pre-scaled) row asymmetrically to uint8: a different rounding of the same per-token
# range, so it must agree with reference to ≥ 25 dB (two independent int8 roundings of an input with
# a 20× outlier channel) and be no further from the float layer than reference is (−1 dB).
# cpu-vnni (quant/vnni.py) is int-mm's arithmetic in C: ≥ 60 dB against reference, and equal to int-mm.
VNNI = KERNELS.get("cpu-vnni")().unavailable(torch.device("cpu"))
needs_vnni = pytest.mark.skipif(VNNI is not None, reason=f"cpu-vnni {VNNI}")


@pytest.mark.parametrize("kernel,rows,bound", [("int-mm", 1, 60), ("int-mm", 37, 60), ("cpu-int8", 1, 25),
                                               ("cpu-int8", 37, 25), ("inductor", 5, 60),
                                               pytest.param("cpu-vnni", 1, 60, marks=needs_vnni),
                                               pytest.param("cpu-vnni", 37, 60, marks=needs_vnni)])
def test_cpu_w8a8_kernels_match_reference(kernel, rows, bound):
    linear, layer = quant_layer("w8a8")
    x = torch.randn(rows, 256)
    x[:, 3] *= 20  # an outlier channel
    reference = outputs(layer, x, "reference")
    fast = outputs(layer, x, kernel)
    assert sqnr_db(reference, fast) >= bound
    with torch.no_grad():
        exact = linear(x)
    assert sqnr_db(exact, fast) >= sqnr_db(exact, reference) - 1.0


@needs_vnni
@pytest.mark.parametrize("k,n,rows", [(256, 192, 1), (320, 960, 1), (832, 320, 3), (100, 48, 17)])
def test_cpu_vnni_equals_int_mm_exactly(k, n, rows):
    """Same per-token quantization, same int32 sums, same float epilogue in the same order: bit-equal."""
    _, layer = quant_layer("w8a8", k=k, n=n)
    x = torch.randn(rows, k) * 3
    x[:, 1] *= 30
    assert torch.equal(outputs(layer, x, "cpu-vnni"), outputs(layer, x, "int-mm"))
    assert torch.equal(outputs(layer, x.reshape(rows, 1, k), "cpu-vnni").reshape(rows, n), outputs(layer, x, "int-mm"))


@needs_vnni
@pytest.mark.parametrize("bits,rows", [(8, 70), (6, 9)])
def test_cpu_vnni_static_activations_equal_fake_quant_then_matmul(bits, rows):
    """The static asymmetric path (a diffusion layer's per-timestep-group range, quant/timestep.py): the kernel's
    unsigned codes minus the zero point, times the weights, equal fake_quant_static's grid times the dequantized
    weights up to float round-off (≥ 100 dB); the rows split over 3 threads give the same bits as 1 thread; levels
    0 is the per-token path, bit-equal to int-mm."""
    from v2m.quant.timestep import fake_quant_static, static_grid

    _, layer = quant_layer("w8a8", k=256, n=208)  # 13 blocks of 16: the 4 × 2 kernel and the one-block tail
    x = torch.randn(rows, 256) * 2
    lo, hi = -3.0, 5.0  # some inputs clip
    layer.set_kernel("cpu-vnni")
    packed = layer._state
    scale, zero, levels = static_grid(lo, hi, bits)
    fast = packed.static(x, scale, zero, levels, 1)
    expected = fake_quant_static(x, lo, hi, bits) @ layer.qtensor().dequantize().T + layer.bias
    assert sqnr_db(expected, fast) >= 100
    assert torch.equal(packed.static(x, scale, zero, levels, 3), fast)
    assert torch.equal(packed.static(x, 1.0, 0, 0, 2), outputs(layer, x, "int-mm"))


@needs_vnni
@pytest.mark.parametrize("rows", [1, 5, 70])
def test_cpu_vnni_gelu_epilogue_equals_gelu_after_the_product(rows):
    """The fused epilogue (a DiT MLP's first Linear + tanh-GELU, quant/timestep.py fuse_activations): the kernel's
    outputs through its own GELU equal torch's F.gelu(approximate="tanh") of the plain outputs to float round-off,
    on the 4 × 2 tiles, the one-row tail and the odd last block, out to where exp would overflow."""
    import torch.nn.functional as F

    from v2m.quant.timestep import static_grid

    _, layer = quant_layer("w8a8", k=256, n=208)
    x = torch.randn(rows, 256) * 40  # outputs far into both flat ends of the GELU
    layer.set_kernel("cpu-vnni")
    scale, zero, levels = static_grid(-100.0, 100.0, 8)
    plain = layer._state.static(x, scale, zero, levels, 1)
    fused = layer._state.static(x, scale, zero, levels, 1, "gelu_tanh")
    expected = F.gelu(plain, approximate="tanh")
    assert plain.max() > 10 and plain.min() < -10  # the test reaches the saturated ends
    assert torch.allclose(fused, expected, rtol=2e-6, atol=2e-6), float((fused - expected).abs().max())


def test_cpu_vnni_refuses_widths_off_its_blocks():
    assert "out % 16" in KERNELS.get("cpu-vnni")().unsupported(make_scheme("w8a8"), (40, 256))
    assert "runs w8a8" in KERNELS.get("cpu-vnni")().unsupported(make_scheme("w4", 64), (192, 256))


# Weight-only low-bit on CPU: cpu-lowbit multiplies the packed codes by float activations, the reference's
# arithmetic in another summation order (the zero point folded out): float round-off only, ≥ 100 dB.
LOWBIT = KERNELS.get("cpu-lowbit")().unavailable(torch.device("cpu"))
needs_lowbit = pytest.mark.skipif(LOWBIT is not None, reason=f"cpu-lowbit {LOWBIT}")


@needs_lowbit
@pytest.mark.parametrize("scheme,group,asym,float_zero,k,n,rows", [
    ("w2", 32, True, False, 256, 192, 1), ("w2", 64, True, True, 320, 960, 3), ("w3", 64, True, True, 832, 320, 1),
    ("w3", 0, False, False, 128, 48, 17), ("w4", 64, False, False, 320, 64, 2), ("w4", 16, True, True, 64, 16, 1)])
def test_cpu_lowbit_matches_reference(scheme, group, asym, float_zero, k, n, rows):
    from v2m.quant.decoupleq import float_zero_scheme

    torch.manual_seed(0)
    linear = torch.nn.Linear(k, n)
    sch = make_scheme(scheme, group, asym)
    sch = float_zero_scheme(sch) if float_zero else sch
    w = linear.weight.detach()
    params = None
    if float_zero:  # a fractional zero point, as decoupleQ stores
        from v2m.quant.formats import params_for

        params = params_for(w, make_scheme(scheme, group, True))
        params.zero = (params.zero + 0.37).half().float()
    layer = QuantLinear.from_qtensor(quantize_tensor(w, sch, params), linear.bias.detach())
    assert layer.zero is None or layer.zero.dtype == (torch.float16 if float_zero else torch.uint8)
    x = torch.randn(rows, k)
    assert sqnr_db(outputs(layer, x, "reference"), outputs(layer, x, "cpu-lowbit")) >= 100
    assert layer.native_matrix() is not None and layer.native_matrix() is layer.native  # the fused step can call it


def test_cpu_lowbit_refuses_what_it_cannot_run():
    kernel = KERNELS.get("cpu-lowbit")()
    assert "weight-only integer" in kernel.unsupported(make_scheme("w8a8"), (64, 64))
    assert "runs 2/3/4-bit" in kernel.unsupported(make_scheme("w8", 0), (64, 64))
    assert "divisible by 16" in kernel.unsupported(make_scheme("w4", 8), (64, 64))


def test_batched_shapes_pass_through():
    _, layer = quant_layer("w8a8")
    x = torch.randn(2, 7, 256)
    assert outputs(layer, x, "cpu-int8").shape == (2, 7, 192)


def test_auto_picks_by_capability_and_logs(capsys):
    cpu = torch.device("cpu")
    w8a8, w4 = make_scheme("w8a8"), make_scheme("w4", 64)
    has_int8 = KERNELS.get("cpu-int8")().unavailable(cpu) is None
    expected = "cpu-vnni" if VNNI is None else "cpu-int8" if has_int8 else "reference"
    assert auto_kernel(w8a8, (192, 256), cpu) == expected
    assert auto_kernel(w8a8, (40, 256), cpu) == ("cpu-int8" if has_int8 else "reference")  # 40 rows: not 16-blocks
    lowbit = "cpu-lowbit" if LOWBIT is None else "reference"
    assert auto_kernel(w4, (192, 256), cpu) == lowbit
    assert auto_kernel(make_scheme("w4", 24), (192, 264), cpu) == "reference"  # groups off its 16 lanes
    model = torch.nn.Sequential(quant_layer("w8a8")[1], torch.nn.ReLU(), quant_layer("w4", k=192, n=64, group=64)[1])
    chosen = set_kernels(model, "auto")
    assert chosen["2"] == lowbit
    assert "kernels (CPU" in capsys.readouterr().err


def test_kernel_that_cannot_run_the_scheme_is_one_line():
    model = torch.nn.Sequential(quant_layer("w4", group=64)[1])
    with pytest.raises(V2MError, match=r"kernel 'cpu-int8' cannot run layer 0 \(w4 g64\): it runs w8a8"):
        set_kernels(model, "cpu-int8")


@pytest.mark.skipif(CUDA, reason="checks the message on a machine without CUDA")
def test_unavailable_kernel_by_name_is_one_line():
    model = torch.nn.Sequential(quant_layer("fp8")[1])
    with pytest.raises(V2MError, match="kernel 'cuda-fp8' is not available here: it needs a CUDA device"):
        set_kernels(model, "cuda-fp8")
    with pytest.raises(V2MError, match="unknown kernel 'turbo'"):
        set_kernels(model, "turbo")


# GPU kernels. Bounds: cuda-int-mm is exact int8 math (≥ 50 dB after its fp32 epilogue); cuda-fp8 runs
# E4M3 activations the reference emulates in fp32 but outputs bf16 (≥ 35 dB); cuda-int4 dequantizes
# through bf16 scales and computes in bf16 (≥ 30 dB against the fp32 reference).
@needs_cuda
@pytest.mark.parametrize("scheme,group,kernel,bound", [("w8a8", None, "cuda-int-mm", 50), ("fp8", None, "cuda-fp8", 35),
                                                       ("w4", 128, "cuda-int4", 30), ("w4", 64, "cuda-int4", 30)])
def test_gpu_kernels_match_reference(scheme, group, kernel, bound):
    if kernel == "cuda-fp8" and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 needs compute capability ≥ 8.9")
    _, layer = quant_layer(scheme, k=512, n=256, group=group, asym=scheme == "w4", device="cuda")
    for rows in (1, 16, 33):
        x = torch.randn(rows, 512, device="cuda")
        reference = outputs(layer, x, "reference")
        assert sqnr_db(reference, outputs(layer, x, kernel)) >= bound, rows


def test_cpu_int8_scales_per_token_not_per_batch():
    # a quiet row next to a loud one: a per-batch activation scale would round the quiet row to ~0
    _, layer = quant_layer("w8a8")
    x = torch.randn(2, 256)
    x[1] *= 1000
    quiet_reference = outputs(layer, x, "reference")[0]
    assert sqnr_db(quiet_reference, outputs(layer, x, "cpu-int8")[0]) >= 25


def test_moving_or_casting_keeps_the_kernel_and_the_scales():
    _, layer = quant_layer("w8a8")
    layer.set_kernel("cpu-int8")
    scale = layer.scale.clone()
    layer.to(torch.bfloat16)
    y = layer(torch.randn(2, 256, dtype=torch.bfloat16))
    assert layer.kernel_name == "cpu-int8" and y.dtype == torch.bfloat16
    assert layer.scale.dtype == torch.float16 and torch.equal(layer.scale, scale)


# dequant-bf16: the reference's arithmetic with bf16 weights and a bf16 matmul (≥ 35 dB against the fp32 reference
# for every scheme: bf16 keeps 8 significant bits of a product of dequantized weights and quantized activations)
@pytest.mark.parametrize("scheme,group", [("w8a8", None), ("w4", 64), ("fp8", None)])
def test_dequant_bf16_matches_reference(scheme, group):
    _, layer = quant_layer(scheme, group=group, asym=scheme == "w4", device="cuda" if CUDA else "cpu")
    x = torch.randn(5, 256, device=layer.packed.device)
    assert sqnr_db(outputs(layer, x, "reference"), outputs(layer, x, "dequant-bf16")) >= 35


def test_measured_choice_takes_the_fastest_and_restores_the_layer():
    from v2m.quant import kernels

    _, layer = quant_layer("w8a8")
    layer.set_kernel("cpu-int8")
    seen = []

    def timer(fn, calls):  # a stated cost per kernel, read off the layer being timed (each must really run)
        fn()
        seen.append(layer.kernel_name)
        return {"cpu-int8": 3e-5, "int-mm": 1e-5, "dequant-bf16": 2e-5}[layer.kernel_name]

    kernels._MEASURED.clear()
    chosen, times = kernels.measured_choice(layer, ["cpu-int8", "int-mm", "dequant-bf16"], timer=timer)
    assert chosen == "int-mm" and seen == ["cpu-int8", "int-mm", "dequant-bf16"] and times["int-mm"] == 1e-5
    assert layer.kernel_name == "cpu-int8"
    again = kernels.measured_choice(layer, ["cpu-int8", "int-mm", "dequant-bf16"], timer=timer)
    assert again[0] == "int-mm" and len(seen) == 3  # once per (device, scheme, shape, rows) in a process


def test_measured_choice_passes_over_a_kernel_that_fails_on_the_shape():
    """A library that refuses a shape on this machine (cuBLASLt's int8 matmul refused 17 rows of a 32-wide layer on
    an H200) costs that kernel its place in the race, not the command."""
    from v2m.quant import kernels

    _, layer = quant_layer("w8a8")
    layer.set_kernel("cpu-int8")

    def timer(fn, calls):
        if layer.kernel_name == "int-mm":
            raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul")
        fn()
        return {"cpu-int8": 3e-5, "dequant-bf16": 2e-5}[layer.kernel_name]

    kernels._MEASURED.clear()
    chosen, times = kernels.measured_choice(layer, ["cpu-int8", "int-mm", "dequant-bf16"], rows=7, timer=timer)
    assert chosen == "dequant-bf16" and set(times) == {"cpu-int8", "dequant-bf16"} and layer.kernel_name == "cpu-int8"


def test_many_rows_take_their_own_kernel():
    _, layer = quant_layer("w8a8")
    layer.set_kernel("cpu-int8", many=("reference", 16))
    few, many = torch.randn(3, 256), torch.randn(2, 8, 256)  # 16 rows: the second kernel
    assert torch.equal(layer(few), outputs(layer, few, "cpu-int8"))
    layer.set_kernel("cpu-int8", many=("reference", 16))
    assert torch.equal(layer(many), outputs(layer, many, "reference"))
    layer.set_kernel("cpu-int8", many=("reference", 16))
    assert layer.kernel_label() == "cpu-int8 (< 16 rows), reference"
    layer.to("cpu")  # a move prepares both again on the next call
    assert torch.equal(layer(many), outputs(layer, many, "reference"))


@needs_cuda
def test_auto_on_the_gpu_is_never_slower_than_bf16():
    from v2m.quant import kernels

    model = torch.nn.Sequential()
    for scheme, group in (("w8a8", None), ("w4", 64), ("fp8", None)):
        _, layer = quant_layer(scheme, k=512, n=256, group=group, asym=scheme == "w4", device="cuda")
        model.add_module(scheme, layer)
    kernels._MEASURED.clear()
    set_kernels(model, "auto", log_choice=False)
    for name, layer in model.named_children():
        for rows in kernels.MEASURE_ROWS:
            key = next(k for k in kernels._MEASURED if k[2] == layer.scheme.label() and k[5] == rows)
            times = kernels._MEASURED[key][1]
            runs = layer.kernel_name if rows < kernels.MANY_ROWS or layer.many is None else layer.many[0]
            assert times[runs] <= times["dequant-bf16"], (name, rows, times)
