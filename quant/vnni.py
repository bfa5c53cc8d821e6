"""A hand-written W8A8 matrix-vector kernel for the CPU decode step (AVX-512 VNNI), built on first use.

Why not fbgemm alone: at one token per call fbgemm's dynamic int8 Linear spends most of its time around the
product (activation range, quantization, requantization, packing), so on this model's layers it was 0.5–2.8×
float32 per layer and 1.87× over a whole step's layers (bench/quant_kernels.py). The product itself is small:
a 320 → 960 layer is 4,800 VNNI instructions. This kernel does the per-token quantization and the product
in one C function over weights prepacked once.

The C is quant/csrc/w8a8_vnni.c, built on first use by core/c_build.py (the system C compiler, cached in
~/.cache/v2m, loaded with ctypes — the way Inductor builds its CPU kernels). No compiler, or a CPU without
AVX-512 VNNI: the kernel says so (`unavailable`) and `auto` picks fbgemm.

The C function:
y[m, n] = float(sum_k q[m, k] * W[n, k]) * xs[m] * ws[n] (+ bias[n]), where q = round(x / xs) clamped to
±127 and xs = max(absmax(x[m]) / 127, 1e-8): the per-token dynamic int8 quantization of quant/kernels.py
(per_token_int8), in the same float32 operations and order, so the result equals the `int-mm` kernel's.

Weights are prepacked in blocks of 16 output rows × 4 input columns, [N/16][K/4][16][4] int8: one
vpdpbusd multiplies 4 activation bytes (broadcast) by the 16 × 4 block and accumulates 16 outputs,
so no horizontal sums are needed. vpdpbusd multiplies unsigned by signed bytes: activations are stored
as q + 128 and comp[n] = 128 · sum_k W[n, k] is subtracted afterwards (exact in int32). Several rows (a
prefill) go through each weight block in tiles of 32: the block is read from memory once per tile. The fused
CPU decode step (models/engines/native.py) calls the same product, `v2m_w8a8_gemm`, through the pointer a
layer's `native_matrix()` hands it (core/csrc/v2m_matrix.h): one compiled copy of the kernel for both.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from v2m.c_build import NativeMatrix, address, build, needs

SOURCES = (Path(__file__).resolve().parent / "csrc" / "w8a8_vnni.c",)
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-ffp-contract=off", "-shared", "-fPIC", "-pthread"]
BLOCK_N, BLOCK_K = 16, 4  # weight block: 16 output rows × 4 input columns (one vpdpbusd)
EPILOGUES = {None: 0, "gelu_tanh": 1}  # what the kernel applies to its outputs before storing them (w8a8_vnni.c)


def unavailable() -> str | None:
    """Why the kernel cannot run here (None = it can): CPU features, a C compiler, a successful build."""
    reason = needs({"avx512f", "avx512bw", "avx512_vnni"})
    return reason or build_error(library)


@functools.cache
def build_error(load) -> str | None:
    """Build (or load the cached build) of a kernel library once per process (`load`: its `library`); why it
    failed, or None."""
    try:
        load()
    except (RuntimeError, OSError) as e:
        return f"could not be built here ({e})"
    return None


@functools.cache
def library() -> ctypes.CDLL:
    """Build (once per source/flags, cached on disk) and load the kernel (core/c_build.py)."""
    lib = build("v2m-vnni", SOURCES, tuple(FLAGS))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.v2m_w8a8_gemv.argtypes = [p, i64, i64, p, p, p, p, i64, p]
    lib.v2m_w8a8_gemv.restype = ctypes.c_int
    lib.v2m_w8a8_gemm.restype = ctypes.c_int
    lib.v2m_w8a8_act.argtypes = [p, i64, i64, p, p, p, p, i64, p, ctypes.c_float, ctypes.c_int32, ctypes.c_int32, i64,
                                 ctypes.c_int32]
    lib.v2m_w8a8_act.restype = ctypes.c_int
    return lib


def pack(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 weight [N, K] → (blocks [N/16, K/4, 16, 4] int8, comp [N] int32 = 128 · row sums)."""
    n, k = weight.shape
    blocks = weight.reshape(n // BLOCK_N, BLOCK_N, k // BLOCK_K, BLOCK_K).permute(0, 2, 1, 3).contiguous()
    comp = (weight.to(torch.int32).sum(1) * 128).to(torch.int32).contiguous()
    return blocks, comp


class Packed:
    """A layer's weights in the kernel's layout, with the raw pointers the C call takes (made once)."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        self.blocks, self.comp = pack(weight)
        self.scale = scale.float().contiguous()
        self.bias = None if bias is None else bias.float().contiguous()
        self.n = weight.shape[0]
        lib = library()
        self.fn = lib.v2m_w8a8_gemv
        self.act_fn = lib.v2m_w8a8_act
        self.pointers = (self.blocks.data_ptr(), self.comp.data_ptr(), self.scale.data_ptr(),
                         None if self.bias is None else self.bias.data_ptr(), self.n)
        # what a fused C step needs to call the same product on these buffers (made once: its identity says
        # to the step that this state is still the layer's)
        self.matrix = NativeMatrix(self.n, weight.shape[1], self.pointers[0], self.pointers[1], self.pointers[2],
                                   self.pointers[3] or 0, address(lib.v2m_w8a8_gemm), owner=self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] float32 → y [M, N] float32 (see the module docstring)."""
        if x.dtype != torch.float32 or not x.is_contiguous():
            x = x.float().contiguous()
        m, k = x.shape
        y = torch.empty(m, self.n, dtype=torch.float32)
        blocks, comp, scale, bias, n = self.pointers
        if self.fn(x.data_ptr(), m, k, blocks, comp, scale, bias, n, y.data_ptr()):
            raise MemoryError(f"cpu-vnni: no memory for {m}x{k} activation scratch")
        return y

    def static(self, x: torch.Tensor, scale: float, zero: int, levels: int, threads: int = 1,
               epilogue: str | None = None) -> torch.Tensor:
        """x [M, K] float32 → y [M, N] with static asymmetric activations: q = clamp(round(x / scale) + zero, 0,
        levels) (levels ≤ 255; levels 0 = per-token dynamic int8 as `__call__`), rows split over `threads`, the
        outputs through `epilogue` (None, or "gelu_tanh": F.gelu(y, approximate="tanh") in the kernel)."""
        if x.dtype != torch.float32 or not x.is_contiguous():
            x = x.float().contiguous()
        m, k = x.shape
        y = torch.empty(m, self.n, dtype=torch.float32)
        blocks, comp, wscale, bias, n = self.pointers
        if self.act_fn(x.data_ptr(), m, k, blocks, comp, wscale, bias, n, y.data_ptr(), scale, zero, levels, threads,
                       EPILOGUES[epilogue]):
            raise MemoryError(f"cpu-vnni: no memory or thread for {m}x{k} activations")
        return y
