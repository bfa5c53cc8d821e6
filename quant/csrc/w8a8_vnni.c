/* W8A8 matrix products for the CPU (AVX-512 VNNI): per-token int8 activations × prepacked int8 weights.
   Built on first use by core/c_build.py; the ctypes side and the weight layout are in quant/vnni.py.

   y[m, n] = float(sum_k q[m, k] * W[n, k]) * xs[m] * ws[n] (+ bias[n]), q = round(x / xs) clamped to ±127,
   xs = max(absmax(x[m]) / 127, 1e-8): quant/kernels.py's per_token_int8 in the same float32 operations and
   order, so the result equals the `int-mm` kernel's. Weights in blocks [N/16][K/4][16][4]: one vpdpbusd
   multiplies 4 activation bytes (broadcast) by a 16 × 4 block and accumulates 16 outputs. vpdpbusd takes
   unsigned × signed bytes: activations are stored as q + 128 and comp[n] = 128 · sum_k W[n, k] is subtracted. */
#include <immintrin.h>
#include <pthread.h>
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

/* The epilogue a layer may ask for (EPILOGUE_GELU_TANH: the output passes through the tanh-approximated GELU,
   as a DiT's MLP does after its first Linear), applied to the finished float outputs before they are stored, so
   the activation costs no pass of its own over memory (the fusion every GEMM library offers for its epilogue).
   gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3); exp by range
   reduction to 2^n · p(f), p the degree-6 Taylor polynomial of exp on |f| <= ln2 / 2 (relative error < 2e-7),
   the argument clamped to ±88 so that exp stays finite. */
enum { EPILOGUE_NONE = 0, EPILOGUE_GELU_TANH = 1 };

static inline __m512 exp_ps(__m512 y)
{
    y = _mm512_min_ps(_mm512_max_ps(y, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(88.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693147180559945309f), y);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static inline __m512 gelu_tanh_ps(__m512 x)
{
    const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 u = _mm512_mul_ps(_mm512_set1_ps(0.7978845608028654f), _mm512_fmadd_ps(_mm512_set1_ps(0.044715f), x3, x));
    const __m512 e = exp_ps(_mm512_mul_ps(u, _mm512_set1_ps(-2.0f)));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static inline void store_out(float *y, __m512 r, int32_t epilogue)
{
    if (epilogue == EPILOGUE_GELU_TANH)
        r = gelu_tanh_ps(r);
    _mm512_storeu_ps(y, r);
}

/* y[m] = W · dequant(q[m]) for M rows quantized already (xu [M][K] as q + 128, xs [M]). Block rows outer,
   token rows inner (in tiles of 32 rows, ≤ 53 KB of activations): a 16 × K weight block (5–27 KB) is read
   from memory once per tile and from L1 for its other rows. */
static inline void store_block(__m512i acc, __m512i cb, float xs, __m512 wsb, const float *bias, float *y, int32_t epilogue)
{
    __m512 r = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(acc, cb)), _mm512_set1_ps(xs)), wsb);
    if (bias)
        r = _mm512_add_ps(r, _mm512_loadu_ps(bias));
    store_out(y, r, epilogue);
}

static inline __m512i row_offset(const int32_t *comp, int32_t zero)
{
    __m512i cb = _mm512_loadu_si512(comp);
    if (zero != 128) /* comp = 128 · row sum exactly: the row sum times this zero point */
        cb = _mm512_mullo_epi32(_mm512_srai_epi32(cb, 7), _mm512_set1_epi32(zero));
    return cb;
}

/* Many rows (a diffusion window): 4 token rows × 2 weight blocks (32 outputs) at once, 8 independent
   accumulators; each weight load feeds 4 products and each activation broadcast 2, where the one-row loop below
   loads a weight vector per product. Rows from `m0` in steps of 4 and block pairs from 0; returns rows done. */
static int64_t w8a8_tile4x2(const uint8_t *xu, const float *xs, int64_t M, int64_t K, const int8_t *wb,
                            const int32_t *comp, const float *ws, const float *bias, int64_t N, float *y, int32_t zero,
                            int32_t ep)
{
    const int64_t groups = K / 4, M4 = M / 4 * 4;
    for (int64_t nb = 0; nb + 2 <= N / 16; nb += 2) {
        const int8_t *w0 = wb + nb * 16 * K, *w1 = w0 + 16 * K;
        const __m512i cb0 = row_offset(comp + nb * 16, zero), cb1 = row_offset(comp + nb * 16 + 16, zero);
        const __m512 ws0 = _mm512_loadu_ps(ws + nb * 16), ws1 = _mm512_loadu_ps(ws + nb * 16 + 16);
        for (int64_t m = 0; m < M4; m += 4) {
            const uint32_t *x0 = (const uint32_t *)(xu + m * K), *x1 = (const uint32_t *)(xu + (m + 1) * K);
            const uint32_t *x2 = (const uint32_t *)(xu + (m + 2) * K), *x3 = (const uint32_t *)(xu + (m + 3) * K);
            __m512i a00 = _mm512_setzero_si512(), a01 = a00, a10 = a00, a11 = a00, a20 = a00, a21 = a00, a30 = a00, a31 = a00;
            for (int64_t g = 0; g < groups; g++) {
                const __m512i v0 = _mm512_loadu_si512(w0 + g * 64), v1 = _mm512_loadu_si512(w1 + g * 64);
                __m512i b = _mm512_set1_epi32(x0[g]);
                a00 = _mm512_dpbusd_epi32(a00, b, v0);
                a01 = _mm512_dpbusd_epi32(a01, b, v1);
                b = _mm512_set1_epi32(x1[g]);
                a10 = _mm512_dpbusd_epi32(a10, b, v0);
                a11 = _mm512_dpbusd_epi32(a11, b, v1);
                b = _mm512_set1_epi32(x2[g]);
                a20 = _mm512_dpbusd_epi32(a20, b, v0);
                a21 = _mm512_dpbusd_epi32(a21, b, v1);
                b = _mm512_set1_epi32(x3[g]);
                a30 = _mm512_dpbusd_epi32(a30, b, v0);
                a31 = _mm512_dpbusd_epi32(a31, b, v1);
            }
            const float *bb = bias ? bias + nb * 16 : NULL;
            float *yr = y + m * N + nb * 16;
            store_block(a00, cb0, xs[m], ws0, bb, yr, ep);
            store_block(a01, cb1, xs[m], ws1, bb ? bb + 16 : NULL, yr + 16, ep);
            store_block(a10, cb0, xs[m + 1], ws0, bb, yr + N, ep);
            store_block(a11, cb1, xs[m + 1], ws1, bb ? bb + 16 : NULL, yr + N + 16, ep);
            store_block(a20, cb0, xs[m + 2], ws0, bb, yr + 2 * N, ep);
            store_block(a21, cb1, xs[m + 2], ws1, bb ? bb + 16 : NULL, yr + 2 * N + 16, ep);
            store_block(a30, cb0, xs[m + 3], ws0, bb, yr + 3 * N, ep);
            store_block(a31, cb1, xs[m + 3], ws1, bb ? bb + 16 : NULL, yr + 3 * N + 16, ep);
        }
    }
    return M4;
}

static void w8a8_tile(const uint8_t *xu, const float *xs, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp,
                      const float *ws, const float *bias, int64_t N, float *y, int32_t zero, int32_t ep)
{
    const int64_t groups = K / 4;
    /* rows 0..M4 of the even block pairs are done by the 4 × 2 kernel; the rest (an odd last block, the last
       rows) by the one-row loop */
    const int64_t M4 = M >= 4 ? w8a8_tile4x2(xu, xs, M, K, wb, comp, ws, bias, N, y, zero, ep) : 0;
    const int64_t paired = M4 ? (N / 16) / 2 * 2 : 0;
    for (int64_t nb = 0; nb < N / 16; nb++) {
        const int8_t *w = wb + nb * 16 * K;
        const __m512i cb = row_offset(comp + nb * 16, zero);
        const __m512 wsb = _mm512_loadu_ps(ws + nb * 16);
        for (int64_t m = nb < paired ? M4 : 0; m < M; m++) {
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
            store_out(y + m * N + nb * 16, r, ep);
        }
    }
}

static void w8a8_rows(const uint8_t *xu, const float *xs, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp,
                      const float *ws, const float *bias, int64_t N, float *y, int32_t zero, int32_t ep)
{
    for (int64_t m = 0; m < M; m += 32)
        w8a8_tile(xu + m * K, xs + m, M - m < 32 ? M - m : 32, K, wb, comp, ws, bias, N, y + m * N, zero, ep);
}

/* x [M, K] float32 → y [M, N]: quantize each row (per token), then the product. xu: M·K bytes of scratch. */
static void w8a8_gemm(const float *x, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp, const float *ws,
                      const float *bias, int64_t N, float *y, uint8_t *xu, float *xs)
{
    for (int64_t m = 0; m < M; m++)
        xs[m] = quantize_row(x + m * K, K, xu + m * K);
    w8a8_rows(xu, xs, M, K, wb, comp, ws, bias, N, y, 128, EPILOGUE_NONE);
}

int v2m_w8a8_act(const float *x, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp, const float *ws,
                 const float *bias, int64_t N, float *y, float scale, int32_t zero, int32_t levels, int64_t threads,
                 int32_t epilogue);

/* Per-token activations on one thread. Returns 0, or -1 (nothing written) when the activation scratch cannot be
   allocated. */
int v2m_w8a8_gemv(const float *x, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp, const float *ws,
                  const float *bias, int64_t N, float *y)
{
    return v2m_w8a8_act(x, M, K, wb, comp, ws, bias, N, y, 1.0f, 0, 0, 1, EPILOGUE_NONE);
}

/* The same product with the caller's scratch (xu: M·K + 64 bytes, xs: M floats): the v2m_gemm_fn a fused C step
   calls through the pointer a cpu-vnni layer hands it (core/csrc/v2m_matrix.h). */
int v2m_w8a8_gemm(const float *x, int64_t M, int64_t K, const void *wb, const int32_t *comp, const float *ws,
                  const float *bias, int64_t N, float *y, uint8_t *xu, float *xs)
{
    w8a8_gemm(x, M, K, (const int8_t *)wb, comp, ws, bias, N, y, xu, xs);
    return 0;
}

/* Static asymmetric activations (a diffusion model's range for the current timestep group, quant/timestep.py):
   q = clamp(round(x / scale) + zero, 0, levels) as unsigned bytes — quant/timestep.py's fake_quant_static in the
   same float32 operations — so that x ≈ (q − zero) · scale and y = scale · ws · (Σ q·W − zero · Σ W): the offset
   vpdpbusd needs is the zero point itself, and no per-token pass over x is left. */
static void quantize_static(const float *x, int64_t M, int64_t K, float scale, int32_t zero, int32_t levels, uint8_t *xu)
{
    const __m512 vs = _mm512_set1_ps(scale);
    const __m512i lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(levels), vz = _mm512_set1_epi32(zero);
    for (int64_t m = 0; m < M; m++) {
        const float *xr = x + m * K;
        uint8_t *qr = xu + m * K;
        int64_t k = 0;
        for (; k + 16 <= K; k += 16) {
            __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(_mm512_div_ps(_mm512_loadu_ps(xr + k), vs)), vz);
            q = _mm512_min_epi32(_mm512_max_epi32(q, lo), hi);
            _mm_storeu_si128((__m128i *)(qr + k), _mm512_cvtepi32_epi8(q));
        }
        for (; k < K; k++) {
            int v = _mm_cvtss_si32(_mm_set_ss(xr[k] / scale)) + zero;
            qr[k] = (uint8_t)(v < 0 ? 0 : v > levels ? levels : v);
        }
    }
}

struct act_job {
    const float *x;
    int64_t M, K, N;
    const int8_t *wb;
    const int32_t *comp;
    const float *ws, *bias;
    float *y, scale;
    int32_t zero, levels, epilogue;
    uint8_t *xu;
    float *xs;
};

static void *act_run(void *arg)
{
    struct act_job *j = arg;
    if (j->levels) {
        quantize_static(j->x, j->M, j->K, j->scale, j->zero, j->levels, j->xu);
        for (int64_t m = 0; m < j->M; m++)
            j->xs[m] = j->scale;
    } else {
        for (int64_t m = 0; m < j->M; m++)
            j->xs[m] = quantize_row(j->x + m * j->K, j->K, j->xu + m * j->K);
    }
    w8a8_rows(j->xu, j->xs, j->M, j->K, j->wb, j->comp, j->ws, j->bias, j->N, j->y, j->levels ? j->zero : 128, j->epilogue);
    return NULL;
}

/* x [M, K] float32 → y [M, N] with static activations (levels > 0: scale, zero, levels as above) or per-token
   int8 ones (levels 0, as v2m_w8a8_gemv), the rows split over `threads` threads (the caller's thread count:
   torch's own float matmuls use as many), the outputs through `epilogue` (EPILOGUE_*). Returns 0, or -1 when
   scratch or a thread cannot be had. */
int v2m_w8a8_act(const float *x, int64_t M, int64_t K, const int8_t *wb, const int32_t *comp, const float *ws,
                 const float *bias, int64_t N, float *y, float scale, int32_t zero, int32_t levels, int64_t threads,
                 int32_t epilogue)
{
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    if (threads > (M + 31) / 32) /* a thread gets whole tiles of 32 rows */
        threads = (M + 31) / 32 > 0 ? (M + 31) / 32 : 1;
    uint8_t *xu = malloc(M * K + 64);
    float *xs = malloc((M > 0 ? M : 1) * sizeof(float));
    if (!xu || !xs) {
        free(xu);
        free(xs);
        return -1;
    }
    struct act_job jobs[64];
    pthread_t ids[64];
    const int64_t tiles = (M + 31) / 32;
    int64_t start = 0, rc = 0, started = 0;
    for (int64_t t = 0; t < threads; t++) {
        int64_t stop = (tiles * (t + 1) / threads) * 32;
        if (stop > M)
            stop = M;
        jobs[t] = (struct act_job){x + start * K, stop - start, K, N, wb, comp, ws, bias, y + start * N, scale, zero,
                                   levels, epilogue, xu + start * K, xs + start};
        start = stop;
    }
    for (int64_t t = 1; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, act_run, &jobs[t])) {
            rc = -1;
            break;
        }
        started = t;
    }
    if (rc == 0)
        act_run(&jobs[0]);
    for (int64_t t = 1; t <= started; t++)
        pthread_join(ids[t], NULL);
    free(xu);
    free(xs);
    return (int)rc;
}

static const v2m_gemm_fn v2m_w8a8_gemm_is_a_gemm_fn __attribute__((unused)) = v2m_w8a8_gemm;
