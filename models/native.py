"""C helpers for the CPU decode step, and the builder that compiles C kernels on first use.

Why C: after the lean step (models/lean_step.py) the float32 matrix-vector products of a decode step are
MKL's and near the memory limit, but RMSNorm, RoPE, the K/V cache writes, attention over the cache and the
SwiGLU gate are still ~15 PyTorch operator calls per layer, each a few microseconds of dispatch for a few
hundred floats of work. Three C functions do them per layer with no dispatch at all:

- `v2m_add_rmsnorm`: x += delta (the residual), out = x · rsqrt(mean(x²) + eps) · w;
- `v2m_rope_attend`: RoPE on q and k, K/V written at `pos` into the static cache, softmax(q·Kᵀ/√D)·V over
  slots 0..pos (the same math as Attention.forward_cached, with float32 sums in another order);
- `v2m_swiglu`: silu(gate) · value.

Built like Inductor builds its CPU kernels: the system C compiler (`cc`, or $CC) into ~/.cache/v2m (or
$XDG_CACHE_HOME/v2m), keyed by a hash of source, flags and compiler, written atomically, loaded with
ctypes. No compiler or no AVX-512: `unavailable()` says why and the lean step keeps its PyTorch ops.
Compiled with -ffast-math (vectorized expf from glibc's libmvec, reassociated sums): results differ from
PyTorch's by float32 round-off (tests/models/test_lean_step.py bounds it and checks greedy tokens).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"]
FLAGS = ["-O3", "-ffast-math", *AVX512, "-shared", "-fPIC"]


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")


def needs(features: set[str]) -> str | None:
    """Why C kernels using `features` (cpuinfo flag names) cannot run here, or None."""
    missing = features - cpu_flags()
    if missing:
        return f"needs a CPU with {', '.join(sorted(missing))}"
    if compiler() is None:
        return "needs a C compiler (cc/gcc/clang, or $CC) to build it on first use"
    return None


@functools.cache
def build(name: str, source: str, flags: tuple[str, ...], libs: tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile `source` into a shared library (once: cached on disk by content) and load it.

    RuntimeError with the compiler's message if the build fails.
    """
    from v2m.config import user_cache_dir

    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc/gcc/clang, or $CC)")
    key = hashlib.sha256("\0".join([source, *flags, *libs, cc]).encode()).hexdigest()[:16]
    path = user_cache_dir() / f"{name}-{key}.so"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            src, out = Path(tmp) / f"{name}.c", Path(tmp) / f"{name}.so"
            src.write_text(source)
            run = subprocess.run([cc, *flags, str(src), "-o", str(out), *libs], capture_output=True, text=True)
            if run.returncode != 0:
                raise RuntimeError(f"building {name} failed: {run.stderr.strip()[:300]}")
            os.replace(out, path)
    return ctypes.CDLL(str(path))


@functools.cache
def step_library() -> ctypes.CDLL | None:
    """The decode-step helpers, or None when they cannot be built or run here (then: PyTorch ops)."""
    if needs({"avx512f", "avx512bw", "avx512vl", "fma"}) is not None:
        return None
    try:
        lib = build("v2m-step", SOURCE, tuple(FLAGS), ("-lm",))
    except (RuntimeError, OSError):
        return None
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.v2m_add_rmsnorm.argtypes = [p, p, p, f32, i64, i64, p]
    lib.v2m_swiglu.argtypes = [p, i64, i64, p]
    lib.v2m_rope_attend.argtypes = [p, i64, i64, i64, i64, p, p, p, p, i64, p]
    for fn in (lib.v2m_add_rmsnorm, lib.v2m_swiglu, lib.v2m_rope_attend):
        fn.restype = None
    return lib


SOURCE = r"""#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

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
            float m = -INFINITY;
            for (int64_t t = 0; t < span; t++) {
                p[t] = dot(q, K + t * D, D) * scale;
                m = p[t] > m ? p[t] : m;
            }
            float sum = 0.0f;
            for (int64_t t = 0; t < span; t++) {
                p[t] = expf(p[t] - m);
                sum += p[t];
            }
            const float inv = 1.0f / sum;
            float *yo = y + b * C + h * D;
            memset(yo, 0, D * sizeof(float));
            for (int64_t t = 0; t < span; t++) {
                const float a = p[t] * inv, *vt = V + t * D;
                for (int64_t d = 0; d < D; d++)
                    yo[d] += a * vt[d];
            }
        }
    }
}
"""
