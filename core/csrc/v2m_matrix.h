/* The contract between a fused C step (models/engines/csrc/decode_step.c) and a C kernel that multiplies by a
   quantized matrix (quant/csrc/w8a8_vnni.c): the kernel's function, called through a pointer the layer hands
   over (core/c_build.py NativeMatrix), so the step's library is built without the kernel's source and models
   never need quant's code.

   y [M, N] = x [M, K] · Wᵀ (+ bias), x and y float32 row-major. `w`, `comp`, `scale`, `bias` are the layer's
   prepacked buffers in the kernel's own layout; `xu` (M·K + 64 bytes) and `xs` (M floats) are scratch the
   caller owns, so the kernel allocates nothing. Returns 0. */
#ifndef V2M_MATRIX_H
#define V2M_MATRIX_H
#include <stdint.h>

typedef int (*v2m_gemm_fn)(const float *x, int64_t M, int64_t K, const void *w, const int32_t *comp,
                           const float *scale, const float *bias, int64_t N, float *y, uint8_t *xu, float *xs);

#endif
