"""A hand-written W8A8 matrix-vector kernel for the CPU decode step (AVX-512 VNNI), built on first use.

Why not fbgemm alone: at one token per call fbgemm's dynamic int8 Linear spends most of its time around the
product (activation range, quantization, requantization, packing), so on this model's layers it was 0.5–2.8×
float32 per layer and 1.87× over a whole step's layers (bench/quant_kernels.py). The product itself is small:
a 320 → 960 layer is 4,800 VNNI instructions. This kernel does the per-token quantization and the product
in one C function over weights prepacked once.

Built on first use by models/c_build.py (the system C compiler, cached in ~/.cache/v2m, loaded with ctypes —
the way Inductor builds its CPU kernels). No compiler, or a CPU without AVX-512 VNNI: the kernel says so
(`unavailable`) and `auto` picks fbgemm.

The C function:
y[m, n] = float(sum_k q[m, k] * W[n, k]) * xs[m] * ws[n] (+ bias[n]), where q = round(x / xs) clamped to
±127 and xs = max(absmax(x[m]) / 127, 1e-8): the per-token dynamic int8 quantization of quant/kernels.py
(per_token_int8), in the same float32 operations and order, so the result equals the `int-mm` kernel's.

Weights are prepacked in blocks of 16 output rows × 4 input columns, [N/16][K/4][16][4] int8: one
vpdpbusd multiplies 4 activation bytes (broadcast) by the 16 × 4 block and accumulates 16 outputs,
so no horizontal sums are needed. vpdpbusd multiplies unsigned by signed bytes: activations are stored
as q + 128 and comp[n] = 128 · sum_k W[n, k] is subtracted afterwards (exact in int32). Several rows (a
prefill) go through each weight block in tiles of 32: the block is read from memory once per tile. The
same C (w8a8_gemm) is compiled into models/native.py's one-call decode step.
"""

from __future__ import annotations

import ctypes
import functools

import torch

FLAGS = ["-O3", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-shared", "-fPIC"]
BLOCK_N, BLOCK_K = 16, 4  # weight block: 16 output rows × 4 input columns (one vpdpbusd)

SOURCE = r"""#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

static float quantize_row(const float *x, int64_t K, uint8_t *xu)
{
    __m512 amax = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16)
        amax = _mm512_max_ps(amax, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
    float m = _mm512_reduce_max_ps(amax);
    for (; k < K; k++) {
        float a = x[k] < 0 ? -x[k] : x[k];
        m = a > m ? a : m;
    }
    float scale = m / 127.0f;
    if (scale < 1e-8f)
        scale = 1e-8f;
    const __m512 vs = _mm512_set1_ps(scale);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127), offset = _mm512_set1_epi32(128);
    for (k = 0; k + 16 <= K; k += 16) {
        __m512i q = _mm512_cvtps_epi32(_mm512_div_ps(_mm512_loadu_ps(x + k), vs)); /* round half to even */
        q = _mm512_add_epi32(_mm512_min_epi32(_mm512_max_epi32(q, lo), hi), offset);
        _mm_storeu_si128((__m128i *)(xu + k), _mm512_cvtepi32_epi8(q));
    }
    for (; k < K; k++) {
        __m128 q = _mm_set_ss(x[k] / scale);
        int v = _mm_cvtss_si32(q); /* round half to even, as above */
        v = v < -127 ? -127 : v > 127 ? 127 : v;
        xu[k] = (uint8_t)(v + 128);
    }
    return scale;
}

/* y[m] = W · dequant(q[m]) for M rows quantized already (xu [M][K] as q + 128, xs [M]). Block rows outer,
   token rows inner (in tiles of 32 rows, ≤ 53 KB of activations): a 16 × K weight block (5–27 KB) is read
   from memory once per tile and from L1 for its other rows. */
static void w8a8_tile(const uint8_t *xu, const float *xs, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp,
                      const float *ws, const float *bias, int64_t N, float *y)
{
    const int64_t groups = K / 4;
    for (int64_t nb = 0; nb < N / 16; nb++) {
        const int8_t *w = wb + nb * 16 * K;
        const __m512i cb = _mm512_loadu_si512(comp + nb * 16);
        const __m512 wsb = _mm512_loadu_ps(ws + nb * 16);
        for (int64_t m = 0; m < M; m++) {
            const uint32_t *x4 = (const uint32_t *)(xu + m * K);
            __m512i a0 = _mm512_setzero_si512(), a1 = _mm512_setzero_si512();
            __m512i a2 = _mm512_setzero_si512(), a3 = _mm512_setzero_si512();
            int64_t g = 0;
            for (; g + 4 <= groups; g += 4) {
                a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(x4[g]), _mm512_loadu_si512(w + g * 64));
                a1 = _mm512_dpbusd_epi32(a1, _mm512_set1_epi32(x4[g + 1]), _mm512_loadu_si512(w + (g + 1) * 64));
                a2 = _mm512_dpbusd_epi32(a2, _mm512_set1_epi32(x4[g + 2]), _mm512_loadu_si512(w + (g + 2) * 64));
                a3 = _mm512_dpbusd_epi32(a3, _mm512_set1_epi32(x4[g + 3]), _mm512_loadu_si512(w + (g + 3) * 64));
            }
            for (; g < groups; g++)
                a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(x4[g]), _mm512_loadu_si512(w + g * 64));
            __m512i acc = _mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3));
            acc = _mm512_sub_epi32(acc, cb);
            __m512 r = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_set1_ps(xs[m])), wsb);
            if (bias)
                r = _mm512_add_ps(r, _mm512_loadu_ps(bias + nb * 16));
            _mm512_storeu_ps(y + m * N + nb * 16, r);
        }
    }
}

static void w8a8_rows(const uint8_t *xu, const float *xs, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp,
                      const float *ws, const float *bias, int64_t N, float *y)
{
    for (int64_t m = 0; m < M; m += 32)
        w8a8_tile(xu + m * K, xs + m, M - m < 32 ? M - m : 32, K, wb, comp, ws, bias, N, y + m * N);
}

/* x [M, K] float32 → y [M, N]: quantize each row (per token), then the product. xu: M·K bytes of scratch. */
static void w8a8_gemm(const float *x, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp, const float *ws,
                      const float *bias, int64_t N, float *y, uint8_t *xu, float *xs)
{
    for (int64_t m = 0; m < M; m++)
        xs[m] = quantize_row(x + m * K, K, xu + m * K);
    w8a8_rows(xu, xs, M, K, wb, comp, ws, bias, N, y);
}

/* Returns 0, or -1 (nothing written) when the activation scratch cannot be allocated. */
int v2m_w8a8_gemv(const float *x, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp, const float *ws,
                  const float *bias, int64_t N, float *y)
{
    uint8_t *xu = malloc(M * K + 64);
    float *xs = malloc((M > 0 ? M : 1) * sizeof(float));
    if (!xu || !xs) {
        free(xu);
        free(xs);
        return -1;
    }
    w8a8_gemm(x, M, K, wb, comp, ws, bias, N, y, xu, xs);
    free(xu);
    free(xs);
    return 0;
}
"""


def unavailable() -> str | None:
    """Why the kernel cannot run here (None = it can): CPU features, a C compiler, a successful build."""
    from v2m.models.c_build import needs

    reason = needs({"avx512f", "avx512bw", "avx512_vnni"})
    return reason or _build_error()


@functools.cache
def _build_error() -> str | None:
    """Build (or load the cached build) once per process; why it failed, or None."""
    try:
        library()
    except (RuntimeError, OSError) as e:
        return f"could not be built here ({e})"
    return None


@functools.cache
def library() -> ctypes.CDLL:
    """Build (once per source/flags, cached on disk) and load the kernel (models/c_build.py)."""
    from v2m.models.c_build import build

    lib = build("v2m-vnni", SOURCE, tuple(FLAGS))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.v2m_w8a8_gemv.argtypes = [p, i64, i64, p, p, p, p, i64, p]
    lib.v2m_w8a8_gemv.restype = ctypes.c_int
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
        self.fn = library().v2m_w8a8_gemv
        self.pointers = (self.blocks.data_ptr(), self.comp.data_ptr(), self.scale.data_ptr(),
                         None if self.bias is None else self.bias.data_ptr(), self.n)

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
