"""Kernels that run a quantized Linear: a registry, capability checks and `auto` selection.

`reference` is the oracle (dequantize + float matmul, activations fake-quantized the same way the
fast kernels quantize them); every fast kernel is tested against it. The CPU int8 path was chosen
by measuring the candidates on the development machine (bench/quant_kernels.py): fbgemm's
prepacked dynamic int8 Linear (torch.ops.quantized.linear_dynamic, x86 engine) wins at decode
(one row, and for many rows once each row is pre-scaled so its per-call activation scale acts per
token); torch._int_mm with per-token scales and Inductor (torch.compile of that path) are
registered as the measured alternatives. GPU paths: torch._int_mm (W8A8), torch._scaled_mm (FP8 E4M3,
row-wise scales) and tinygemm int4 weight-only (torch.ops.aten._weight_int4pack_mm, the kernel
torchao's int4 weight-only uses; torchao itself is not a dependency).
"""

from __future__ import annotations

import abc
import functools
import time
import warnings

import torch
import torch.nn.functional as F

from v2m import log
from v2m.errors import V2MError
from v2m.registry import Registry

from . import vnni
from .formats import FP8_MAX, Scheme, unpack
from .vnni import BLOCK_K, BLOCK_N, Packed

KERNELS = Registry("kernel")


def per_token_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric dynamic int8 quantization of each row of x [M, K] → (int8 codes, float scale [M, 1])."""
    scale = (x.abs().amax(-1, keepdim=True).float() / 127.0).clamp(min=1e-8)
    return torch.round(x.float() / scale).clamp(-127, 127).to(torch.int8), scale


def per_token_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic E4M3 quantization of each row of x [M, K] → (float8 codes, float scale [M, 1])."""
    scale = (x.abs().amax(-1, keepdim=True).float() / FP8_MAX).clamp(min=1e-12)
    return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def fake_quant_activations(x: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """What the fast kernels do to activations, in float (for the reference kernel)."""
    if scheme.act == "int8":
        q, s = per_token_int8(x)
        return q.float() * s
    if scheme.act == "fp8":
        q, s = per_token_fp8(x)
        return q.float() * s
    return x


def _rows(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1])


class Kernel(abc.ABC):
    """A way to run QuantLinear layers. Subclasses override the checks, `prepare` and `forward`."""

    name = "?"
    description = ""

    def unavailable(self, device: torch.device) -> str | None:
        """Why this kernel cannot run on `device` here (None = it can)."""
        return None

    def unsupported(self, scheme: Scheme, shape: tuple[int, int]) -> str | None:
        """Why this kernel cannot run a layer of `scheme` and weight `shape` [N, K] (None = it can)."""
        return None

    @abc.abstractmethod
    def prepare(self, layer) -> object:
        """Per-layer state made once at load (packed weights in the kernel's layout, scales)."""

    @abc.abstractmethod
    def forward(self, state: object, x: torch.Tensor, layer) -> torch.Tensor:
        """y = x · Wᵀ (+ bias) for x [..., K] with the layer's quantized weight."""


@KERNELS.register("reference")
class Reference(Kernel):
    description = "dequantize + float matmul (the oracle; any scheme, any device)"

    def prepare(self, layer):
        # dequantized once and cached: the oracle's speed is float speed, its memory is float memory
        return layer.qtensor().dequantize()

    def forward(self, weight, x, layer):
        x = fake_quant_activations(x, layer.scheme)
        return F.linear(x.to(weight.dtype), weight, layer.bias).to(x.dtype)


@KERNELS.register("dequant-bf16")
class DequantBF16(Reference):
    description = ("weights dequantized to bf16 once at load, activations quantized as the scheme says; a bf16 "
                   "matmul (the GPU's fallback where the integer/FP8 kernels are slower; any scheme)")

    def prepare(self, layer):
        bias = None if layer.bias is None else layer.bias.to(torch.bfloat16)
        return layer.qtensor().dequantize().to(torch.bfloat16), bias

    def forward(self, state, x, layer):
        weight, bias = state
        return F.linear(fake_quant_activations(x, layer.scheme).to(torch.bfloat16), weight, bias).to(x.dtype)


def _int8_weight(layer) -> tuple[torch.Tensor, torch.Tensor]:
    """Signed int8 weight [N, K] and float32 per-channel scale [N] of a symmetric per-channel int8 layer."""
    codes = layer.packed.to(torch.int16) - 128
    return codes.to(torch.int8), layer.scale.float().reshape(-1)


def _needs_w8a8(scheme: Scheme) -> str | None:
    if scheme.kind == "int" and scheme.bits == 8 and scheme.act == "int8" and scheme.symmetric and not scheme.group:
        return None
    return f"runs w8a8 (int8 per-channel symmetric weights, int8 activations) only, not {scheme.label()}"


@KERNELS.register("int-mm")
class IntMM(Kernel):
    description = "torch._int_mm with per-token activation scales (CPU and CUDA, W8A8)"

    def unsupported(self, scheme, shape):
        return _needs_w8a8(scheme)

    def prepare(self, layer):
        weight, scale = _int8_weight(layer)
        return weight.t().contiguous(), scale, layer.bias

    def forward(self, state, x, layer):
        weight_t, scale, bias = state
        rows = _rows(x)
        m = rows.shape[0]
        xq, xs = per_token_int8(rows)
        if xq.is_cuda:  # cuBLASLt int8 needs more than 16 rows; 17 rows of a 32-wide layer were refused on an H200
            padded = max(24, -(-m // 8) * 8)  # (CUBLAS_STATUS_NOT_SUPPORTED): rows padded to a multiple of 8
            if padded != m:
                xq = F.pad(xq, (0, 0, 0, padded - m))
        acc = torch._int_mm(xq, weight_t)[:m]
        y = acc.float() * xs * scale
        if bias is not None:
            y = y + bias
        return y.to(x.dtype).reshape(*x.shape[:-1], -1)


@functools.cache
def _cpu_has_vnni() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
        return "avx512_vnni" in flags or "avx_vnni" in flags
    except OSError:
        return False


@KERNELS.register("cpu-int8")
class CpuInt8(Kernel):
    description = "fbgemm prepacked dynamic int8 Linear (x86 engine, AVX2/AVX-512 VNNI), per-token activation scales (CPU, W8A8)"

    def unavailable(self, device):
        if device.type != "cpu":
            return "is a CPU kernel"
        if "x86" not in torch.backends.quantized.supported_engines:
            return "needs PyTorch's x86/fbgemm quantized engine, which this build lacks"
        if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
            return f"needs an AVX2 or AVX-512 CPU (this one: {torch.backends.cpu.get_cpu_capability()})"
        return None

    def unsupported(self, scheme, shape):
        return _needs_w8a8(scheme)

    def prepare(self, layer):
        torch.backends.quantized.engine = "x86"
        weight, scale = _int8_weight(layer)
        with warnings.catch_warnings():  # the quantized-tensor constructors warn that they are deprecated
            warnings.simplefilter("ignore")
            qweight = torch._make_per_channel_quantized_tensor(weight, scale.double(), torch.zeros_like(scale, dtype=torch.long), 0)
            packed = torch.ops.quantized.linear_prepack(qweight, None)
        # without VNNI, u8*s8 pairs are summed in saturating 16 bits: reduce_range keeps them from overflowing
        return packed, not _cpu_has_vnni(), layer.bias

    def forward(self, state, x, layer):
        # the decode step is a handful of microseconds of work per layer: keep the Python path short
        packed, reduce_range, bias = state
        xf = x if x.dtype == torch.float32 else x.float()
        if xf.numel() == xf.shape[-1]:
            # one row (a decode step): fbgemm's dynamic per-call activation scale is a per-token scale
            y = torch.ops.quantized.linear_dynamic(xf, packed, reduce_range)
        else:
            # fbgemm's dynamic scale is per call (per tensor); dividing each row by its absmax first makes
            # every row span the same range, so the shared scale acts as a per-token scale, as in reference
            row_scale = xf.abs().amax(-1, keepdim=True).clamp(min=1e-8)
            y = torch.ops.quantized.linear_dynamic(xf / row_scale, packed, reduce_range) * row_scale
        if bias is not None:
            y = y + bias
        return y if y.dtype == x.dtype else y.to(x.dtype)


@KERNELS.register("cpu-vnni")
class CpuVnni(Kernel):
    description = ("hand-written AVX-512 VNNI int8 matrix-vector product, per-token activation scales, built on "
                   "first use with the system C compiler (quant/vnni.py; CPU, W8A8; equals int-mm exactly)")

    def unavailable(self, device):
        return "is a CPU kernel" if device.type != "cpu" else vnni.unavailable()

    def unsupported(self, scheme, shape):
        n, k = shape
        if n % BLOCK_N or k % BLOCK_K:
            return f"needs out % {BLOCK_N} == 0 and in % {BLOCK_K} == 0, not {shape}"
        return _needs_w8a8(scheme)

    def prepare(self, layer):
        weight, scale = _int8_weight(layer)
        return Packed(weight, scale, layer.bias)

    def forward(self, packed, x, layer):
        y = packed(_rows(x))
        return (y if y.dtype == x.dtype else y.to(x.dtype)).reshape(*x.shape[:-1], -1)


@KERNELS.register("inductor")
class Inductor(IntMM):
    description = "the int-mm path compiled by Inductor (torch.compile; CPU, W8A8; compiles on first call)"

    def forward(self, state, x, layer):
        return _compiled_int_mm()(x, *state)


def _int_mm_core(x, weight_t, scale, bias):
    return IntMM().forward((weight_t, scale, bias), x, None)


@functools.cache
def _compiled_int_mm():
    import torch._dynamo

    # one graph per (rows, in, out) shape: a model has a handful of Linear shapes × decode/prefill
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(_int_mm_core, dynamic=False)


def _cuda_capability(device: torch.device) -> tuple[int, int] | None:
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def _cuda_unavailable(device: torch.device, minimum: tuple[int, int] = (0, 0), need: str = "") -> str | None:
    """Why a CUDA kernel can't run on `device`: no CUDA device, or a compute capability below `minimum`
    (`need` says what is missing, with {have} standing for this GPU's capability)."""
    cap = _cuda_capability(device)
    if cap is None:
        return "needs a CUDA device"
    if cap < minimum:
        return need.format(have=f"{cap[0]}.{cap[1]}")
    return None


@KERNELS.register("cuda-int-mm")
class CudaIntMM(IntMM):
    description = "torch._int_mm on CUDA (cuBLASLt int8, W8A8)"

    def unavailable(self, device):
        return _cuda_unavailable(device)

    def unsupported(self, scheme, shape):
        n, k = shape
        return _needs_w8a8(scheme) or (None if n % 8 == 0 and k % 8 == 0 else f"needs both dims divisible by 8, not {shape}")


@KERNELS.register("cuda-fp8")
class CudaFP8(Kernel):
    description = "torch._scaled_mm FP8 E4M3 with row-wise scales (CUDA compute capability ≥ 8.9)"

    def unavailable(self, device):
        return _cuda_unavailable(device, (8, 9), "needs FP8 tensor cores (compute capability ≥ 8.9, this GPU has {have})")

    def unsupported(self, scheme, shape):
        n, k = shape
        if scheme.kind != "fp8" or scheme.group:
            return f"runs fp8 per-channel only, not {scheme.label()}"
        return None if n % 16 == 0 and k % 16 == 0 else f"needs both dims divisible by 16, not {shape}"

    def prepare(self, layer):
        weight = layer.packed.view(torch.float8_e4m3fn)  # [N, K] row-major → .t() is column-major [K, N]
        return weight, layer.scale.float().reshape(1, -1), None if layer.bias is None else layer.bias.to(torch.bfloat16)

    def forward(self, state, x, layer):
        weight, scale, bias = state
        rows = _rows(x)
        m = rows.shape[0]
        xq, xs = per_token_fp8(rows)
        pad = (-m) % 16
        if pad:
            xq, xs = F.pad(xq.view(torch.uint8), (0, 0, 0, pad)).view(torch.float8_e4m3fn), F.pad(xs, (0, 0, 0, pad), value=1.0)
        y = torch._scaled_mm(xq, weight.t(), scale_a=xs, scale_b=scale, bias=bias, out_dtype=torch.bfloat16)[:m]
        return y.to(x.dtype).reshape(*x.shape[:-1], -1)


@KERNELS.register("cuda-int4")
class CudaInt4(Kernel):
    description = "tinygemm int4 weight-only (torch.ops.aten._weight_int4pack_mm, bf16; CUDA ≥ 8.0)"

    def unavailable(self, device):
        return _cuda_unavailable(device, (8, 0), "needs compute capability ≥ 8.0 (this GPU has {have})")

    def unsupported(self, scheme, shape):
        n, k = shape
        if scheme.kind != "int" or scheme.bits != 4 or scheme.group not in (32, 64, 128, 256):
            return f"runs w4 with group 32/64/128/256 only, not {scheme.label()}"
        return None if n % 8 == 0 and k % 32 == 0 else f"needs out % 8 == 0 and in % 32 == 0, not {shape}"

    def prepare(self, layer):
        k = layer.in_features
        codes = unpack(layer.packed, 4, k).to(torch.int32)
        inner_k_tiles = next(t for t in (8, 4, 2) if k % (16 * t) == 0)
        high_first = ((codes[:, ::2] << 4) | codes[:, 1::2]).to(torch.uint8)
        packed = torch.ops.aten._convert_weight_to_int4pack(high_first, inner_k_tiles)
        scale = layer.scale.float()  # [N, G]
        zero = layer.zero.float() if layer.zero is not None else torch.full_like(scale, 8.0)
        # tinygemm dequantizes (q - 8) * s + z; ours is (q - zero) * s, so z = (8 - zero) * s
        scales_and_zeros = torch.stack([scale.t(), ((8 - zero) * scale).t()], -1).contiguous().to(torch.bfloat16)
        return packed, scales_and_zeros, layer.scheme.group

    def forward(self, state, x, layer):
        packed, scales_and_zeros, group = state
        rows = _rows(x).to(torch.bfloat16)
        y = torch.ops.aten._weight_int4pack_mm(rows, packed, group, scales_and_zeros)
        if layer.bias is not None:
            y = y + layer.bias.to(y.dtype)
        return y.to(x.dtype).reshape(*x.shape[:-1], -1)


@KERNELS.register("cpu-lowbit")
class CpuLowBit(Kernel):
    description = ("weight-only 2/3/4-bit integer product on the packed codes (AVX-512, float activations, integer "
                   "or float zero points), built on first use with the system C compiler (quant/lowbit.py; CPU)")

    def unavailable(self, device):
        from . import lowbit

        return "is a CPU kernel" if device.type != "cpu" else lowbit.unavailable()

    def unsupported(self, scheme, shape):
        from . import lowbit

        if scheme.kind != "int" or scheme.act != "none":
            return f"runs weight-only integer schemes only, not {scheme.label()}"
        return lowbit.unsupported(scheme.bits, scheme.group, shape)

    def prepare(self, layer):
        from .lowbit import LowBit

        return LowBit(layer)

    def forward(self, state, x, layer):
        y = state(_rows(x))
        return (y if y.dtype == x.dtype else y.to(x.dtype)).reshape(*x.shape[:-1], -1)


# ---------------------------------------------------------------- selection

AUTO_PREFERENCES = {"cpu": ("cpu-vnni", "cpu-int8", "cpu-lowbit"), "cuda": ("cuda-fp8", "cuda-int-mm", "cuda-int4")}


def auto_kernel(scheme: Scheme, shape: tuple[int, int], device: torch.device) -> str:
    """The fastest kernel that can run this layer here, by capability; `reference` when none can."""
    for name in AUTO_PREFERENCES["cpu" if device.type == "cpu" else "cuda"]:
        if passed_over(name, scheme, shape, device) is None:
            return name
    return "reference"


# --kernel auto on a GPU is decided by a measurement, not by preference alone (issue 18): at a decode step's few
# rows a small layer is launch-bound, and the integer/FP8 kernels' extra work (quantizing the activations, scales)
# made the default model 0.42-0.51x as fast as bf16 (BENCHMARKS.md). So each capable kernel and the dequantized
# bf16 matmul (`dequant-bf16`) are timed on the layer itself, once per (GPU, scheme, shape) in a process.
MEASURE_ROWS = (1, 64)  # a decode step's rows, and a batch's or a prefill's
MANY_ROWS = 16          # calls of this many rows or more take the kernel measured fastest at 64 rows
_MEASURED: dict[tuple, tuple[str, dict[str, float]]] = {}


def measured_choice(layer, candidates: list[str], rows: int = 1, calls: int = 30,
                    timer=None) -> tuple[str, dict[str, float]]:
    """The fastest of `candidates` (kernel names that can run `layer`) on the layer itself at `rows` rows, and
    each one's time per call in seconds. `timer(fn, calls)` measures (default: CUDA-synchronised wall clock)."""
    device = layer.packed.device
    key = (str(device), torch.cuda.get_device_name(device) if device.type == "cuda" else "",
           layer.scheme.label(), layer.out_features, layer.in_features, rows, tuple(candidates))
    if key not in _MEASURED:
        timer = timer or _cuda_timer
        x = torch.randn(rows, layer.in_features, device=device, dtype=torch.bfloat16)
        before = layer.kernel_name, layer.many
        times = {}
        for name in candidates:
            layer.set_kernel(name)
            try:
                times[name] = timer(lambda: layer(x), calls)
            except RuntimeError as e:  # a library that refuses this shape here (e.g. cuBLASLt): not a candidate
                log.debug(f"kernel {name} failed on {layer.in_features}→{layer.out_features} at {rows} rows: "
                          f"{str(e).splitlines()[0][:160]}")
        layer.set_kernel(*before)
        if not times:
            raise V2MError(f"no kernel runs a {layer.in_features}→{layer.out_features} {layer.scheme.label()} layer "
                           f"on {device}", "try --device cpu")
        _MEASURED[key] = (min(times, key=times.get), times)
    return _MEASURED[key]


def graph_of(fn, calls: int):
    """`calls` calls of `fn` captured in one CUDA graph (after 3 warm-up calls on a side stream): its replay."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    return graph.replay


def _cuda_timer(fn, calls: int) -> float:
    """Seconds per call of `fn` as the decode engine runs it: `calls` calls captured in one CUDA graph and replayed
    (no launch overhead: the graph engine has none), best of 3; eager calls if the kernel will not capture."""
    with torch.no_grad():
        try:
            run = graph_of(fn, calls)
        except RuntimeError:
            def run():
                for _ in range(calls):
                    fn()
        best = float("inf")
        for _ in range(3):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            run()
            torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - t0) / calls)
    return best


def passed_over(name: str, scheme: Scheme, shape: tuple[int, int], device: torch.device) -> str | None:
    """Why `auto` does not pick kernel `name` for this layer here (None: it can run it)."""
    kernel = KERNELS.get(name)()
    return kernel.unavailable(device) or kernel.unsupported(scheme, shape)


def resolve(name: str, scheme: Scheme, shape: tuple[int, int], device: torch.device, layer_name: str) -> str:
    """The kernel a layer gets for `--kernel name`: auto picks; a named kernel that cannot run it is one clear line."""
    if name == "auto":
        return auto_kernel(scheme, shape, device)
    kernel = KERNELS.get(name)()
    reason = kernel.unavailable(device)
    if reason:
        raise V2MError(f"kernel '{name}' is not available here: it {reason}", "use --kernel auto or --kernel reference")
    reason = kernel.unsupported(scheme, shape)
    if reason:
        raise V2MError(f"kernel '{name}' cannot run layer {layer_name} ({scheme.label()}): it {reason}",
                       "use --kernel auto (picks per layer) or --kernel reference")
    return name


def describe_choice(chosen: dict[str, str], device: torch.device) -> str:
    """One log line: which kernel runs how many layers, and the capability it was chosen by."""
    counts: dict[str, int] = {}
    for name in chosen.values():
        counts[name] = counts.get(name, 0) + 1
    cap = _cuda_capability(device)
    where = f"CUDA {cap[0]}.{cap[1]}" if cap else f"CPU {torch.backends.cpu.get_cpu_capability()}"
    return f"kernels ({where}): " + ", ".join(f"{name} × {n} layers" for name, n in sorted(counts.items()))


def log_choice(chosen: dict[str, str], device: torch.device) -> None:
    log.info(describe_choice(chosen, device))
