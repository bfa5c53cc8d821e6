/* The CPU decode step in C: the transformer's layers over a static KV cache, with no operator dispatch.
   Built on first use by core/c_build.py; the ctypes side (structs, the plan of pointers) is
   models/engines/native.py, and which decode form runs when is in models/engines/README.md.

   - v2m_add_rmsnorm: x += delta (the residual), out = x · rsqrt(mean(x²) + eps) · w;
   - v2m_rope_attend: RoPE on q and k, K/V written at `pos` into the static cache, softmax(q·Kᵀ/√D)·V over
     slots 0..pos (Attention.forward_cached's math, float32 sums in another order);
   - v2m_swiglu: silu(gate) · value;
   - v2m_forward: the whole model for T new tokens of B sequences in one call — embedding rows, every layer,
     final norm, logits — over a v2m_plan of pointers into the model's own tensors. Float32 matrices go
     through f32_gemm here; a quantized matrix through its kernel's v2m_gemm_fn (core/csrc/v2m_matrix.h),
     e.g. quant's W8A8 VNNI product, so this file needs no quantization code.

   Compiled with -ffast-math (vectorized expf from glibc's libmvec, reassociated sums): results differ from
   PyTorch's by float32 round-off (tests/models/test_lean_step.py bounds it and checks greedy tokens). */
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "v2m_matrix.h"

static inline float dot(const float *a, const float *b, int64_t n)
{
    __m512 acc = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    float s = _mm512_reduce_add_ps(acc);
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

void v2m_add_rmsnorm(float *x, const float *delta, const float *w, float eps, int64_t B, int64_t C, float *out)
{
    for (int64_t b = 0; b < B; b++) {
        float *xb = x + b * C, *ob = out + b * C;
        if (delta)
            for (int64_t c = 0; c < C; c++)
                xb[c] += delta[b * C + c];
        const float r = 1.0f / sqrtf(dot(xb, xb, C) / (float)C + eps);
        for (int64_t c = 0; c < C; c++)
            ob[c] = xb[c] * r * w[c];
    }
}

void v2m_swiglu(const float *h, int64_t B, int64_t F, float *out)
{
    for (int64_t b = 0; b < B; b++) {
        const float *g = h + b * 2 * F, *v = g + F;
        float *o = out + b * F;
        for (int64_t i = 0; i < F; i++)
            o[i] = g[i] / (1.0f + expf(-g[i])) * v[i];
    }
}

/* yo = softmax(q·Kᵀ · scale) · V over `span` cached rows of width D. n16 = D / 16 when the caller passes it as a
   constant (the loops unroll and the output row lives in registers), else 0 (plain loops). */
static inline __attribute__((always_inline)) void attend(const float *q, const float *K, const float *V, int64_t span,
                                                         int64_t D, float scale, float *p, float *yo, const int n16)
{
    int64_t t = 0;
    if (n16) {  /* four keys at a time: four independent dot products in flight */
        for (; t + 4 <= span; t += 4) {
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            const float *k0 = K + t * D;
            for (int i = 0; i < n16; i++) {
                const __m512 qv = _mm512_loadu_ps(q + 16 * i);
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(k0 + 16 * i), qv, a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(k0 + D + 16 * i), qv, a1);
                a2 = _mm512_fmadd_ps(_mm512_loadu_ps(k0 + 2 * D + 16 * i), qv, a2);
                a3 = _mm512_fmadd_ps(_mm512_loadu_ps(k0 + 3 * D + 16 * i), qv, a3);
            }
            p[t] = _mm512_reduce_add_ps(a0) * scale;
            p[t + 1] = _mm512_reduce_add_ps(a1) * scale;
            p[t + 2] = _mm512_reduce_add_ps(a2) * scale;
            p[t + 3] = _mm512_reduce_add_ps(a3) * scale;
        }
    }
    for (; t < span; t++)
        p[t] = dot(q, K + t * D, D) * scale;
    float m = -INFINITY;
    for (t = 0; t < span; t++)
        m = p[t] > m ? p[t] : m;
    float sum = 0.0f;
    for (t = 0; t < span; t++) {
        p[t] = expf(p[t] - m);
        sum += p[t];
    }
    const float inv = 1.0f / sum;
    if (n16) {
        __m512 acc[n16 ? n16 : 1];
        for (int i = 0; i < n16; i++)
            acc[i] = _mm512_setzero_ps();
        for (t = 0; t < span; t++) {
            const __m512 a = _mm512_set1_ps(p[t] * inv);
            for (int i = 0; i < n16; i++)
                acc[i] = _mm512_fmadd_ps(a, _mm512_loadu_ps(V + t * D + 16 * i), acc[i]);
        }
        for (int i = 0; i < n16; i++)
            _mm512_storeu_ps(yo + 16 * i, acc[i]);
        return;
    }
    memset(yo, 0, D * sizeof(float));
    for (t = 0; t < span; t++) {
        const float a = p[t] * inv, *vt = V + t * D;
        for (int64_t d = 0; d < D; d++)
            yo[d] += a * vt[d];
    }
}

void v2m_rope_attend(const float *qkv, int64_t B, int64_t H, int64_t D, int64_t pos, const float *cs, const float *sn,
                     float *kc, float *vc, int64_t max_len, float *y)
{
    const int64_t C = H * D, half = D / 2, span = pos + 1;
    const float scale = 1.0f / sqrtf((float)D);
    float q[D], p[span];
    for (int64_t b = 0; b < B; b++) {
        for (int64_t h = 0; h < H; h++) {
            const float *qs = qkv + b * 3 * C + h * D, *ks = qs + C, *vs = qs + 2 * C;
            float *K = kc + (b * H + h) * max_len * D, *V = vc + (b * H + h) * max_len * D;
            float *kd = K + pos * D;
            for (int64_t i = 0; i < half; i++) {
                q[i] = qs[i] * cs[i] - qs[i + half] * sn[i];
                q[i + half] = qs[i + half] * cs[i] + qs[i] * sn[i];
                kd[i] = ks[i] * cs[i] - ks[i + half] * sn[i];
                kd[i + half] = ks[i + half] * cs[i] + ks[i] * sn[i];
            }
            memcpy(V + pos * D, vs, D * sizeof(float));
            float *yo = y + b * C + h * D;
            switch (D) {  /* head widths of whole vectors: the output row stays in registers (n16 constant) */
            case 32: attend(q, K, V, span, 32, scale, p, yo, 2); break;
            case 64: attend(q, K, V, span, 64, scale, p, yo, 4); break;
            case 128: attend(q, K, V, span, 128, scale, p, yo, 8); break;
            default: attend(q, K, V, span, D, scale, p, yo, 0);
            }
        }
    }
}

/* A matrix of the plan: float32 weights [n, k] row-major (gemm NULL), or a kernel's packed layout and its
   product (gemm set; comp and scale are the kernel's own buffers). */
typedef struct {
    int64_t n, k;
    const void *w;
    const int32_t *comp;
    const float *scale, *bias;
    v2m_gemm_fn gemm;
} v2m_matrix;
typedef struct {
    const float *norm1, *norm2;
    float eps1, eps2;
    v2m_matrix qkv, out, up, down;
    float *k, *v;
} v2m_layer;
typedef struct {
    int64_t n_layers, n_heads, head_dim, d_model, d_ff, max_len;
    const float *embed, *rope_cos, *rope_sin, *final_norm;
    float final_eps;
    v2m_matrix head;
    const v2m_layer *layers;
} v2m_plan;

/* 4 weight rows × 4 token rows: 16 accumulators, 8 loads per 16 FMAs (y rows at stride N). */
static void f32_block4x4(const float *x, int64_t K, const float *w, const float *bias, int64_t N, float *y)
{
    const __mmask16 tail = (__mmask16)((1u << (K % 16)) - 1);
    const int64_t body = K - K % 16;
    __m512 acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k <= body; k += 16) {
        const __mmask16 mask = k < body ? (__mmask16)0xFFFF : tail;
        if (!mask)
            break;
        __m512 wv[4], xv[4];
        for (int i = 0; i < 4; i++) {
            wv[i] = _mm512_maskz_loadu_ps(mask, w + i * K + k);
            xv[i] = _mm512_maskz_loadu_ps(mask, x + i * K + k);
        }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++)
                acc[i][j] = _mm512_fmadd_ps(wv[i], xv[j], acc[i][j]);
    }
    for (int j = 0; j < 4; j++)
        for (int i = 0; i < 4; i++)
            y[j * N + i] = _mm512_reduce_add_ps(acc[i][j]) + (bias ? bias[i] : 0.0f);
}

/* y [B, N] = x [B, K] · Wᵀ (+ bias) for float32 W [N, K] row-major: 4 weight rows at a time, shared by
   the B token rows (the 4 rows stay in L1 while the token rows go by; B ≤ 32, a tile of f32_gemm); token
   rows in fours where there are four. */
static void f32_tile(const float *x, int64_t B, int64_t K, const float *W, const float *bias, int64_t N, float *y)
{
    const __mmask16 tail = (__mmask16)((1u << (K % 16)) - 1);
    const int64_t body = K - K % 16, B4 = B - B % 4;
    int64_t n = 0;
    for (; n + 4 <= N; n += 4) {
        const float *w0 = W + n * K, *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        for (int64_t b = 0; b < B4; b += 4)
            f32_block4x4(x + b * K, K, w0, bias ? bias + n : 0, N, y + b * N + n);
        for (int64_t b = B4; b < B; b++) {
            const float *xb = x + b * K;
            __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
            for (int64_t k = 0; k < body; k += 16) {
                const __m512 xv = _mm512_loadu_ps(xb + k);
                a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xv, a0);
                a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xv, a1);
                a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xv, a2);
                a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xv, a3);
            }
            if (tail) {
                const __m512 xv = _mm512_maskz_loadu_ps(tail, xb + body);
                a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + body), xv, a0);
                a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w1 + body), xv, a1);
                a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w2 + body), xv, a2);
                a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w3 + body), xv, a3);
            }
            float *yb = y + b * N + n;
            yb[0] = _mm512_reduce_add_ps(a0) + (bias ? bias[n] : 0.0f);
            yb[1] = _mm512_reduce_add_ps(a1) + (bias ? bias[n + 1] : 0.0f);
            yb[2] = _mm512_reduce_add_ps(a2) + (bias ? bias[n + 2] : 0.0f);
            yb[3] = _mm512_reduce_add_ps(a3) + (bias ? bias[n + 3] : 0.0f);
        }
    }
    for (; n < N; n++)
        for (int64_t b = 0; b < B; b++)
            y[b * N + n] = dot(x + b * K, W + n * K, K) + (bias ? bias[n] : 0.0f);
}

static void f32_gemm(const float *x, int64_t R, int64_t K, const float *W, const float *bias, int64_t N, float *y)
{
    for (int64_t r = 0; r < R; r += 32)
        f32_tile(x + r * K, R - r < 32 ? R - r : 32, K, W, bias, N, y + r * N);
}

static void matmul(const v2m_matrix *m, const float *x, int64_t B, float *y, uint8_t *xu, float *xs)
{
    if (m->gemm) {
        m->gemm(x, B, m->k, m->w, m->comp, m->scale, m->bias, m->n, y, xu, xs);
        return;
    }
    f32_gemm(x, B, m->k, (const float *)m->w, m->bias, m->n, y);
}

/* The whole model over T new tokens of each of B sequences at positions pos0..pos0+T-1 (a decode step is
   T = 1; a short prefill is pos0 = 0): ids [B, T] → logits [B, vocab] of each sequence's last token, K/V
   written into the layers' caches. All B·T rows go through each matrix together (its weights read once).
   scratch: scratch_floats(plan, B·T) floats (models/engines/native.py). Returns 0, or -1 for an id outside the
   vocabulary and -2 for positions outside the cache (then nothing is written). */
int v2m_forward(const v2m_plan *p, const int64_t *ids, int64_t B, int64_t T, int64_t pos0, float *scratch,
                float *logits)
{
    const int64_t R = B * T;
    for (int64_t r = 0; r < R; r++)
        if (ids[r] < 0 || ids[r] >= p->head.n)
            return -1;
    if (pos0 < 0 || T < 1 || pos0 + T > p->max_len)
        return -2;
    const int64_t C = p->d_model, F = p->d_ff, H = p->n_heads, D = p->head_dim, half = D / 2, S = H * p->max_len * D;
    const int64_t wide = 3 * C > 2 * F ? 3 * C : 2 * F;
    float *x = scratch, *normed = x + R * C, *h = normed + R * C, *att = h + R * wide, *delta = att + R * C;
    float *gated = delta + R * C, *xs = gated + R * F;
    uint8_t *xu = (uint8_t *)(((uintptr_t)(xs + R) + 63) & ~(uintptr_t)63);
    /* flush-to-zero and denormals-are-zero for this call only (softmax tails underflow into subnormals, which
       cost ~100 cycles each), restored before returning: the caller's floating-point state is its own */
    const unsigned int csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
    for (int64_t r = 0; r < R; r++)
        memcpy(x + r * C, p->embed + ids[r] * C, C * sizeof(float));
    for (int64_t i = 0; i < p->n_layers; i++) {
        const v2m_layer *L = p->layers + i;
        v2m_add_rmsnorm(x, i ? delta : 0, L->norm1, L->eps1, R, C, normed);
        matmul(&L->qkv, normed, R, h, xu, xs);
        for (int64_t b = 0; b < B; b++)  /* token by token: each sees the K/V its predecessors wrote */
            for (int64_t t = 0; t < T; t++) {
                const int64_t r = b * T + t, pos = pos0 + t;
                v2m_rope_attend(h + r * 3 * C, 1, H, D, pos, p->rope_cos + pos * half, p->rope_sin + pos * half,
                                L->k + b * S, L->v + b * S, p->max_len, att + r * C);
            }
        matmul(&L->out, att, R, delta, xu, xs);
        v2m_add_rmsnorm(x, delta, L->norm2, L->eps2, R, C, normed);
        matmul(&L->up, normed, R, h, xu, xs);
        v2m_swiglu(h, R, F, gated);
        matmul(&L->down, gated, R, delta, xu, xs);
    }
    for (int64_t b = 0; b < B; b++) {  /* the last token of each sequence only */
        const int64_t r = b * T + T - 1;
        v2m_add_rmsnorm(x + r * C, p->n_layers ? delta + r * C : 0, p->final_norm, p->final_eps, 1, C, normed + b * C);
    }
    matmul(&p->head, normed, B, logits, xu, xs);
    _mm_setcsr(csr);
    return 0;
}

/* One matrix over B rows: the per-layer step calls a kernel's product through it (xu: B·K + 64 bytes, xs: B
   floats of scratch). */
void v2m_matrix_product(const v2m_matrix *m, const float *x, int64_t B, float *y, uint8_t *xu, float *xs)
{
    matmul(m, x, B, y, xu, xs);
}
