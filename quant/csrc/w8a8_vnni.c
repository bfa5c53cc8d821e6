/* W8A8 matrix products for the CPU (AVX-512 VNNI): per-token int8 activations × prepacked int8 weights.
   Built on first use by core/c_build.py; the ctypes side and the weight layout are in quant/vnni.py.

   y[m, n] = float(sum_k q[m, k] * W[n, k]) * xs[m] * ws[n] (+ bias[n]), q = round(x / xs) clamped to ±127,
   xs = max(absmax(x[m]) / 127, 1e-8): quant/kernels.py's per_token_int8 in the same float32 operations and
   order, so the result equals the `int-mm` kernel's. Weights in blocks [N/16][K/4][16][4]: one vpdpbusd
   multiplies 4 activation bytes (broadcast) by a 16 × 4 block and accumulates 16 outputs. vpdpbusd takes
   unsigned × signed bytes: activations are stored as q + 128 and comp[n] = 128 · sum_k W[n, k] is subtracted. */
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include "v2m_matrix.h"

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

/* The same product with the caller's scratch (xu: M·K + 64 bytes, xs: M floats): the v2m_gemm_fn a fused C step
   calls through the pointer a cpu-vnni layer hands it (core/csrc/v2m_matrix.h). */
int v2m_w8a8_gemm(const float *x, int64_t M, int64_t K, const void *wb, const int32_t *comp, const float *ws,
                  const float *bias, int64_t N, float *y, uint8_t *xu, float *xs)
{
    w8a8_gemm(x, M, K, (const int8_t *)wb, comp, ws, bias, N, y, xu, xs);
    return 0;
}

static const v2m_gemm_fn v2m_w8a8_gemm_is_a_gemm_fn __attribute__((unused)) = v2m_w8a8_gemm;
