/* Weight-only 2/3/4-bit grouped matrix products for the CPU (AVX-512): codes stay packed, activations float.
   Built on first use by core/c_build.py; the ctypes side is quant/lowbit.py.

   y[m, n] = sum_g s[n, g] * (sum_{k in g} c[n, k] * x[m, k]) - sum_g sz[n, g] * xsum[m, g] (+ bias[n])
   with sz = s * zero and xsum[m, g] = sum_{k in g} x[m, k]: the dequantization (c - zero) * s of
   quant/formats.py folded out of the inner loop, so the loop is codes × activations only.

   Codes are packed as quant/formats.py packs them: along a row, low bits first, so 8 consecutive b-bit codes
   are the low 8b bits of the little-endian 32-bit word at their first byte (b = 2, 3, 4). Sixteen codes are two
   such words, broadcast into the two halves of a 512-bit register, shifted right by (0, b, ..., 7b) per lane,
   masked and converted to float: one FMA with 16 activations. Rows are padded by 4 bytes in prepare (the last
   word may read past a row's codes). K and the group must be multiples of 16. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

static inline __m512 codes16(const uint8_t *p, int bits, __m512i shifts, __m512i mask)
{
    uint32_t w0, w1;
    memcpy(&w0, p, 4);
    memcpy(&w1, p + bits, 4);
    __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi32((int)w0)), _mm256_set1_epi32((int)w1), 1);
    return _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(v, shifts), mask));
}

/* x [M][K] float, codes [N][row_bytes] (row_bytes = K * bits / 8 + 4 padding), scale and sz [N][G], bias [N] or
   NULL, xsum scratch [G] per call row, y [M][N]. */
void v2m_lowbit_gemm(const float *x, int64_t M, int64_t K, const uint8_t *codes, int64_t row_bytes, int bits,
                     const float *scale, const float *sz, int64_t group, const float *bias, int64_t N, float *xsum,
                     float *y)
{
    const int64_t G = K / group;
    int32_t sh[16];
    for (int i = 0; i < 16; i++)
        sh[i] = (i % 8) * bits;
    const __m512i shifts = _mm512_loadu_si512(sh), mask = _mm512_set1_epi32((1 << bits) - 1);
    const int64_t chunk_bytes = 2 * bits; /* bytes of 16 codes */
    for (int64_t m = 0; m < M; m++) {
        const float *xm = x + m * K;
        for (int64_t g = 0; g < G; g++) {
            __m512 s = _mm512_setzero_ps();
            for (int64_t k = g * group; k < (g + 1) * group; k += 16)
                s = _mm512_add_ps(s, _mm512_loadu_ps(xm + k));
            xsum[g] = _mm512_reduce_add_ps(s);
        }
        float *ym = y + m * N;
        for (int64_t n = 0; n < N; n++) {
            const uint8_t *c = codes + n * row_bytes;
            const float *sn = scale + n * G, *szn = sz + n * G;
            __m512 total = _mm512_setzero_ps();
            float offset = 0.0f;
            for (int64_t g = 0; g < G; g++) {
                __m512 acc = _mm512_setzero_ps();
                for (int64_t k = g * group; k < (g + 1) * group; k += 16)
                    acc = _mm512_fmadd_ps(codes16(c + (k / 16) * chunk_bytes, bits, shifts, mask),
                                          _mm512_loadu_ps(xm + k), acc);
                total = _mm512_fmadd_ps(_mm512_set1_ps(sn[g]), acc, total);
                offset += szn[g] * xsum[g];
            }
            ym[n] = _mm512_reduce_add_ps(total) - offset + (bias ? bias[n] : 0.0f);
        }
    }
}

/* The layer as a fused C step calls it (core/csrc/v2m_matrix.h's v2m_gemm_fn): `w` points to the descriptor
   below, `comp` is unused, `xu` (M·K + 64 bytes) is the scratch for the per-group activation sums. */
#include "v2m_matrix.h"

typedef struct {
    const uint8_t *codes;
    int64_t row_bytes, bits, group;
    const float *sz;
} v2m_lowbit_layer;

int v2m_lowbit_matrix(const float *x, int64_t M, int64_t K, const void *w, const int32_t *comp, const float *scale,
                      const float *bias, int64_t N, float *y, uint8_t *xu, float *xs)
{
    const v2m_lowbit_layer *d = (const v2m_lowbit_layer *)w;
    (void)comp;
    (void)xs;
    v2m_lowbit_gemm(x, M, K, d->codes, d->row_bytes, (int)d->bits, scale, d->sz, d->group, bias, N, (float *)xu, y);
    return 0;
}
