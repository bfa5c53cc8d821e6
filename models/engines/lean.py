"""The eager single-token decode step with as few operator calls as the math allows (the CPU fast path).

Why: at batch 1 on a CPU the decode step of a 6-layer, 320-wide model is ~25 matrix-vector products and,
through `Transformer.forward_cached`, about 60 other operator calls plus ~60 `nn.Module.__call__`s. Each
costs microseconds of dispatch whatever its size, so they add up to as much as the products themselves
(measured with torch.profiler, bench/decode.py). This step computes the same thing as
`forward_cached(ids, cache, pos)[:, -1]` for one token at an int position, with:

- the Linear weights called through `F.linear` (quantized layers through their kernel's `forward`) rather
  than module calls; RMSNorm through the fused `F.rms_norm` (the same fp32 arithmetic: bit-identical);
- RoPE on q and k together as `x·C + roll(x, D/2)·S` with C = [cos, cos], S = [−sin, sin] rows picked by
  the position (views, no gather) — the same products and sums as `apply_rope`;
- K/V written into the static cache by `select(pos).copy_`, attention over the first pos + 1 slots only;
- residual adds, SiLU and the gate product in place on the step's own temporaries;
- one intra-op thread (DECODE_THREADS, below), whatever torch's setting for the rest of the process.

Float32 logits are bit-identical to `forward_cached` (tests/models/engines/test_lean_native.py checks `torch.equal`).
Where it applies (float32 RMSNorm + SwiGLU model, AVX-512 CPU, a C compiler) the default is NativeStep
(engines/native.py) instead, equal to float32 round-off (same greedy tokens, tested): when every matrix is a
float32 Linear or a layer with a C product (cpu-vnni W8A8), the whole step is one C call over a plan of the
model's buffers (OneCallPlan, which also runs prompts of up to 64 tokens); otherwise three C helpers per
layer around the matrix products. Measured on the idle 2-core dev machine, default model,
batch 1, per step: fp32 MKL products + C helpers 2.1–2.8 ms → one call 1.3–1.6 ms; W8A8 (cpu-vnni)
0.71–0.75 → 0.40–0.47 ms. Longer prompts go through `forward_cached`. The CUDA engines do not use this
(they capture `forward_cached` in a graph, where dispatch costs nothing per replay).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..kv_cache import KVCache
from .calls import linear_call, norm_call, with_decode_threads
from .native import NativeStep


class LeanStep:
    """`step(ids, pos)`: ids [B, 1] (long) at int position `pos` → logits [B, V], K/V written into `cache`.

    Holds references to the model's own parameters and modules (no copies): a model trained or moved in
    place stays in step. Built for the v2m transformer (models/transformer.py) and its quantized variants.
    `native`: None = the C helpers (NativeStep) where they apply, else these PyTorch ops; False = PyTorch
    ops only (bit-identical to forward_cached); True = the C helpers or an error.
    """

    def __init__(self, model: nn.Module, cache: KVCache, native: bool | None = None):
        self.native = None if native is False else NativeStep.build(model, cache)
        if native and self.native is None:
            raise ValueError("the native decode step does not apply to this model or machine")
        config = model.config
        self.cache, self.n_heads, self.head_dim = cache, config.n_heads, config.head_dim
        self.d_model, self.swiglu, self.d_ff = config.d_model, config.mlp == "swiglu", config.d_ff
        self.embed_weight = model.embed.weight
        self.layers = [(norm_call(b.norm1), linear_call(b.attn.qkv), linear_call(b.attn.out),
                        norm_call(b.norm2), linear_call(b.mlp.up), linear_call(b.mlp.down)) for b in model.blocks]
        self.final_norm = norm_call(model.norm)
        cos, sin = model.rope_cos, model.rope_sin  # [max_len, D/2]
        self.rope_c = torch.cat((cos, cos), -1)    # x1·cos − x2·sin | x2·cos + x1·sin
        self.rope_s = torch.cat((-sin, sin), -1)   # = x·[cos, cos] + roll(x, D/2)·[−sin, sin]

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        return with_decode_threads(self._step, ids, pos)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor | None:
        """ids [B, T] from position 0 → logits [B, V] by the native one-call step where it applies, else None
        (the caller runs forward_cached)."""
        return None if self.native is None else with_decode_threads(self.native.prefill, ids)

    def _step(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        if self.native is not None:
            return self.native(ids, pos)
        B, H, D, C = ids.shape[0], self.n_heads, self.head_dim, self.d_model
        span = pos + 1
        c, s = self.rope_c[pos], self.rope_s[pos]
        if c.dtype != self.embed_weight.dtype:
            c, s = c.to(self.embed_weight.dtype), s.to(self.embed_weight.dtype)
        k_all, v_all = self.cache.k, self.cache.v
        x = F.embedding(ids, self.embed_weight)  # [B, 1, C], a fresh tensor: updated in place below
        for i, (norm1, qkv, out, norm2, up, down) in enumerate(self.layers):
            h = qkv(norm1(x)).view(B, 3, H, D)
            qk = h[:, :2]
            qk = qk.mul(c).add_(qk.roll(D // 2, -1).mul_(s))  # RoPE on q and k at once
            k_cache, v_cache = k_all[i], v_all[i]  # [B, H, max_len, D]
            k_cache.select(2, pos).copy_(qk[:, 1])
            v_cache.select(2, pos).copy_(h[:, 2])
            y = F.scaled_dot_product_attention(qk[:, 0].unsqueeze(2), k_cache[:, :, :span], v_cache[:, :, :span])
            x.add_(out(y.view(B, 1, C)))  # [B, H, 1, D] is [B, 1, H·D] in memory
            h = up(norm2(x))
            if self.swiglu:
                h = F.silu(h[..., : self.d_ff]).mul_(h[..., self.d_ff:])
            else:
                h = F.gelu(h)
            x.add_(down(h))
        return F.linear(self.final_norm(x), self.embed_weight)[:, -1]
