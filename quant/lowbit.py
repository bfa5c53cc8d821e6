"""A weight-only 2/3/4-bit CPU kernel that reads the packed codes as stored (AVX-512), built on first use.

The `reference` kernel dequantizes a layer once into float32 and multiplies in float: its speed is float
speed and its memory float memory, whatever the bits. This kernel keeps the checkpoint's packed codes (a 2-bit
layer is 1/16 of its float32 bytes) and unpacks 16 codes per AVX-512 FMA inside the product; the per-group
scale and (integer or float) zero point are folded out of the inner loop (quant/csrc/lowbit_gemv.c says how).
The layer also offers the product to the fused CPU decode step (`native_matrix()`, core/csrc/v2m_matrix.h), so
a quantized model decodes in one C call per token as the float model does.
Activations stay float32, so the result equals `reference` up to float summation order.

Built by core/c_build.py with the system C compiler, cached in ~/.cache/v2m; without AVX-512 or a compiler the
kernel says so (`unavailable`) and `auto` passes it over.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch

from v2m.c_build import NativeMatrix, address, build, needs

from .vnni import build_error

SOURCES = (Path(__file__).resolve().parent / "csrc" / "lowbit_gemv.c",)
FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-shared", "-fPIC"]
BITS = (2, 3, 4)
LANES = 16  # codes per FMA: K and the group must be multiples


def unavailable() -> str | None:
    """Why the kernel cannot run here (None = it can): CPU features, a C compiler, a successful build."""
    return needs({"avx512f", "avx512bw", "avx512dq"}) or build_error(library)


@functools.cache
def library() -> ctypes.CDLL:
    lib = build("v2m-lowbit", SOURCES, tuple(FLAGS))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.v2m_lowbit_gemm.argtypes = [p, i64, i64, p, i64, ctypes.c_int, p, p, i64, p, i64, p, p]
    lib.v2m_lowbit_gemm.restype = None
    return lib


class _Layer(ctypes.Structure):
    """csrc/lowbit_gemv.c's v2m_lowbit_layer: what the fused step's `w` pointer points to."""

    _fields_ = [("codes", ctypes.c_void_p), ("row_bytes", ctypes.c_int64), ("bits", ctypes.c_int64),
                ("group", ctypes.c_int64), ("sz", ctypes.c_void_p)]


def unsupported(bits: int, group: int, shape: tuple[int, int]) -> str | None:
    n, k = shape
    if bits not in BITS:
        return f"runs {'/'.join(map(str, BITS))}-bit integer weights only"
    if k % LANES or (group or k) % LANES:
        return f"needs in_features and the group divisible by {LANES}, not {shape} g{group}"
    return None


class LowBit:
    """A layer's packed codes (rows padded by 4 bytes), float scales and scale × zero, made once."""

    def __init__(self, layer):
        n, k = layer.out_features, layer.in_features
        scheme = layer.scheme
        self.bits, self.group, self.n, self.k = scheme.bits, scheme.group or k, n, k
        packed = layer.packed.cpu()
        self.codes = torch.nn.functional.pad(packed, (0, 4)).contiguous()
        self.scale = layer.scale.float().cpu().contiguous()
        zero = layer.zero.float().cpu() if layer.zero is not None else torch.full_like(self.scale, float(2 ** (scheme.bits - 1)))
        self.sz = (self.scale * zero).contiguous()
        self.bias = None if layer.bias is None else layer.bias.float().cpu().contiguous()
        lib = library()
        self.fn = lib.v2m_lowbit_gemm
        # the same product for the fused CPU decode step (models/engines/native.py), through v2m_matrix.h
        self.layer = _Layer(self.codes.data_ptr(), self.codes.shape[1], self.bits, self.group, self.sz.data_ptr())
        self.matrix = NativeMatrix(n, k, ctypes.addressof(self.layer), 0, self.scale.data_ptr(),
                                   0 if self.bias is None else self.bias.data_ptr(), address(lib.v2m_lowbit_matrix),
                                   owner=self)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, K] → y [M, N] float32."""
        if x.dtype != torch.float32 or not x.is_contiguous():
            x = x.float().contiguous()
        m = x.shape[0]
        y = torch.empty(m, self.n, dtype=torch.float32)
        xsum = torch.empty(self.k // self.group, dtype=torch.float32)
        self.fn(x.data_ptr(), m, self.k, self.codes.data_ptr(), self.codes.shape[1], self.bits, self.scale.data_ptr(),
                self.sz.data_ptr(), self.group, None if self.bias is None else self.bias.data_ptr(), self.n,
                xsum.data_ptr(), y.data_ptr())
        return y
