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

Float32 logits are bit-identical to `forward_cached` (tests/models/test_lean_step.py checks `torch.equal`).
Where it applies (float32 RMSNorm + SwiGLU model, AVX-512 CPU, a C compiler) the default is NativeStep
below instead, equal to float32 round-off (same greedy tokens, tested): when every matrix is a float32
Linear or a cpu-vnni W8A8 layer, the whole step is one C call over a plan of the model's buffers
(OneCallPlan: models/native.py `v2m_forward`, which also runs prompts of up to 64 tokens); otherwise three
C helpers per layer around the matrix products. Measured on the idle 2-core dev machine, default model,
batch 1, per step: fp32 MKL products + C helpers 2.1–2.8 ms → one call 1.3–1.6 ms; W8A8 (cpu-vnni)
0.71–0.75 → 0.40–0.47 ms. Longer prompts go through `forward_cached`. The CUDA engines do not use this
(they capture `forward_cached` in a graph, where dispatch costs nothing per replay).
"""

from __future__ import annotations

import ctypes
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from .cache import KVCache

# Intra-op threads for a decode step. One token's matrix products are tens of microseconds each: split
# over threads they gain little, and when another process holds a core the second thread's share waits
# for it (2-core machine at load 8: fp32 step 3.5 → 10.5 ms, W8A8 0.8 → 3.2 ms with 2 threads). Prefill
# keeps torch's own setting. V2M_DECODE_THREADS overrides (e.g. 2 on an idle multi-core machine).
DECODE_THREADS = max(1, int(os.environ.get("V2M_DECODE_THREADS", "1") or 1))


def with_decode_threads(fn, *args, **kwargs):
    """fn(*args, **kwargs) with DECODE_THREADS intra-op threads (torch's setting restored after; ~1 µs)."""
    threads = torch.get_num_threads()
    if threads == DECODE_THREADS:
        return fn(*args, **kwargs)
    torch.set_num_threads(DECODE_THREADS)
    try:
        return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _linear(module: nn.Module):
    """A callable x → module(x) without nn.Module.__call__: F.linear for a plain Linear, else its forward."""
    if type(module) is nn.Linear:  # parameters read per call: a model whose weights are reassigned stays in step
        return lambda x: F.linear(x, module.weight, module.bias)
    return module.forward


def _norm(module: nn.Module):
    """A callable x → norm(x): the fused F.rms_norm for the transformer's RMSNorm in fp32, else its forward."""
    from .transformer import RMSNorm

    if type(module) is RMSNorm and module.weight.dtype == torch.float32:
        shape, eps = (module.weight.shape[0],), module.eps
        # RMSNorm.forward computes in fp32 and multiplies by the weight after; F.rms_norm does the same
        return lambda x: F.rms_norm(x, shape, module.weight, eps) if x.dtype == torch.float32 else module.forward(x)
    if type(module) is nn.LayerNorm:
        return lambda x: F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)
    return module.forward


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
        self.layers = [(_norm(b.norm1), _linear(b.attn.qkv), _linear(b.attn.out),
                        _norm(b.norm2), _linear(b.mlp.up), _linear(b.mlp.down)) for b in model.blocks]
        self.final_norm = _norm(model.norm)
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


def _vnni_packed(module: nn.Module):
    """A cpu-vnni W8A8 layer's prepacked state (quant/vnni.Packed: made from the layer's own codes, scales and
    bias), prepared if it was not yet; None for any other layer, or one that divides its input by a `smooth`."""
    if getattr(module, "kernel_name", None) != "cpu-vnni" or module._buffers.get("smooth") is not None:
        return None
    if module._state is None:
        module.set_kernel("cpu-vnni")
    return module._state


def _matrix(module: nn.Module):
    """x [B, K] → y [B, N]: a cpu-vnni layer's prepacked kernel called directly (the inputs here are already
    float32 rows), else `_linear`."""
    packed = _vnni_packed(module)
    if packed is not None:
        # set_kernels or a move since replaces the layer's state: then its forward is the truth
        return lambda x: packed(x) if module._state is packed else module.forward(x)
    return _linear(module)


class NativeStep:
    """The same step with norms, RoPE, cache writes, attention and SwiGLU in C (models/native.py).

    Where every matrix is a float32 Linear or a cpu-vnni W8A8 layer (and the library has VNNI for the
    latter), the whole step — embedding row, layers, logits — is one C call (`v2m_forward`) over a
    `Plan` of the model's own buffers; otherwise per layer 3 C calls around the 4 matrix products (F.linear,
    or the quantized layer's kernel). Applies to float32 RMSNorm + SwiGLU transformers on a CPU with AVX-512
    and a C compiler; `build` returns None otherwise. Float32 round-off differs from forward_cached.
    """

    @classmethod
    def build(cls, model: nn.Module, cache: KVCache, one_call: bool = True) -> "NativeStep | None":
        from .native import step_library
        from .transformer import RMSNorm

        config = model.config
        norms = [n for b in model.blocks for n in (b.norm1, b.norm2)]
        if (config.mlp != "swiglu" or config.head_dim % 2 or model.embed.weight.dtype != torch.float32
                or model.embed.weight.device.type != "cpu" or cache.k.dtype != torch.float32
                or any(type(n) is not RMSNorm or n.weight.dtype != torch.float32 for n in norms)):
            return None
        lib = step_library()
        return None if lib is None else cls(model, cache, lib, one_call)

    def __init__(self, model: nn.Module, cache: KVCache, lib, one_call: bool = True):
        from .transformer import RMSNorm

        config = model.config
        self.lib, self.cache, self.model = lib, cache, model
        self.n_heads, self.head_dim, self.d_model, self.d_ff = config.n_heads, config.head_dim, config.d_model, config.d_ff
        self.layers = [(b.norm1, _matrix(b.attn.qkv), _matrix(b.attn.out), b.norm2, _matrix(b.mlp.up),
                        _matrix(b.mlp.down)) for b in model.blocks]
        self.final_rms = type(model.norm) is RMSNorm and model.norm.weight.dtype == torch.float32
        self.final_norm = model.norm
        self.buffers: dict[int, tuple] = {}  # batch → (normed [B, C], attended [B, C], gated [B, F])
        self.one_call = one_call and self.final_rms
        self.plan: OneCallPlan | None = OneCallPlan.build(model, cache, lib) if self.one_call else None

    def _buffers(self, batch: int) -> tuple:
        if batch not in self.buffers:
            self.buffers[batch] = (torch.empty(batch, self.d_model), torch.empty(batch, self.d_model),
                                   torch.empty(batch, self.d_ff))
        return self.buffers[batch]

    def _plan(self, storage: bool = False) -> "OneCallPlan | None":
        """The current plan: rebuilt when the model changed under it (a kernel or a weight), and at a prefill
        (`storage`) also tried again when there was none (e.g. a layer's kernel became cpu-vnni since)."""
        plan = self.plan
        if (plan is not None and not plan.current(storage)) or (plan is None and storage and self.one_call):
            plan = self.plan = OneCallPlan.build(self.model, self.cache, self.lib)
        return plan

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        plan = self._plan()
        if plan is not None:
            return plan(ids, pos)
        return self._per_layer(ids, pos)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor | None:
        """ids [B, T] from position 0 → logits [B, V] through the one-call step, or None where it does not
        apply (no plan, or a prompt over OneCallPlan.PREFILL_ROWS tokens: then forward_cached)."""
        plan = self._plan(storage=True) if self.one_call else None
        if plan is None or ids.numel() > plan.PREFILL_ROWS:
            return None
        return plan(ids, 0)

    def _per_layer(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        lib, model, cache = self.lib, self.model, self.cache
        B, H, D, C, F_ = ids.shape[0], self.n_heads, self.head_dim, self.d_model, self.d_ff
        normed, attended, gated = self._buffers(B)
        normed_p, attended_p, gated_p = normed.data_ptr(), attended.data_ptr(), gated.data_ptr()
        half = D // 2
        cos_p = model.rope_cos.data_ptr() + 4 * pos * half
        sin_p = model.rope_sin.data_ptr() + 4 * pos * half
        k_all, v_all, max_len = cache.k, cache.v, cache.max_len
        x = F.embedding(ids.reshape(B), model.embed.weight)  # [B, C], fresh: the residual stream, updated in C
        x_p, delta = x.data_ptr(), None
        for i, (norm1, qkv, out, norm2, up, down) in enumerate(self.layers):
            lib.v2m_add_rmsnorm(x_p, delta, norm1.weight.data_ptr(), norm1.eps, B, C, normed_p)
            h = qkv(normed)
            lib.v2m_rope_attend(h.data_ptr(), B, H, D, pos, cos_p, sin_p, k_all[i].data_ptr(), v_all[i].data_ptr(),
                                max_len, attended_p)
            a = out(attended)
            lib.v2m_add_rmsnorm(x_p, a.data_ptr(), norm2.weight.data_ptr(), norm2.eps, B, C, normed_p)
            g = up(normed)
            lib.v2m_swiglu(g.data_ptr(), B, F_, gated_p)
            d = down(gated)
            delta = d.data_ptr()
        if self.final_rms:
            lib.v2m_add_rmsnorm(x_p, delta, self.final_norm.weight.data_ptr(), self.final_norm.eps, B, C, normed_p)
            return F.linear(normed, model.embed.weight)
        return F.linear(self.final_norm(x.add_(d)), model.embed.weight)


class OneCallPlan:
    """The whole model as one C call (`v2m_forward`): a `native.Plan` of pointers into the model's own
    tensors and the cache, plus what it was made from, so the caller can tell when the model changed.

    Per token this replaces ~45 ctypes calls and ~25 tensor allocations with one call: at batch 1 those
    were most of a W8A8 step's time beyond the products themselves (bench/decode.py). Short prefills
    (≤ PREFILL_ROWS tokens in all) go through the same call, every matrix read once for all their rows.
    """

    PREFILL_ROWS = 64  # longer prompts: forward_cached (MKL's GEMM beats these row-tiled products there)

    @classmethod
    def build(cls, model: nn.Module, cache: KVCache, lib) -> "OneCallPlan | None":
        from . import native

        keep: list = []    # the storages the plan points into, held so none is freed under it
        checks: list = []  # (dict, key, object, data_ptr or None): the plan is the model's while all hold

        def pointer(owner, name):
            slots = owner._parameters if name in owner._parameters else owner._buffers
            t = slots[name]
            if t is None:
                return None
            if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
                raise _Declined
            keep.append(t.detach())  # shares the storage: alive even if `t.data` is replaced
            checks.append((slots, name, t, t.data_ptr()))
            return t.data_ptr()

        def matrix(module) -> "native.Matrix":
            if type(module) is nn.Linear:
                return native.Matrix(native.MATRIX_F32, module.out_features, module.in_features,
                                     pointer(module, "weight"), None, None, pointer(module, "bias"))
            packed = _vnni_packed(module) if lib.int8 else None
            if packed is not None:
                keep.append(packed)
                checks.append((module.__dict__, "_state", packed, None))
                blocks, comp, scale, bias, n = packed.pointers
                return native.Matrix(native.MATRIX_W8A8, n, module.in_features, blocks, comp, scale, bias)
            raise _Declined

        try:
            layers = (native.Layer * len(model.blocks))()
            for i, b in enumerate(model.blocks):
                layers[i] = native.Layer(pointer(b.norm1, "weight"), pointer(b.norm2, "weight"), b.norm1.eps,
                                         b.norm2.eps, matrix(b.attn.qkv), matrix(b.attn.out), matrix(b.mlp.up),
                                         matrix(b.mlp.down), cache.k[i].data_ptr(), cache.v[i].data_ptr())
            c, embed = model.config, pointer(model.embed, "weight")
            head = native.Matrix(native.MATRIX_F32, c.vocab_size, c.d_model, embed, None, None, None)
            plan = native.Plan(len(model.blocks), c.n_heads, c.head_dim, c.d_model, c.d_ff, cache.max_len, embed,
                               pointer(model, "rope_cos"), pointer(model, "rope_sin"), pointer(model.norm, "weight"),
                               model.norm.eps, head, layers)
        except _Declined:
            return None
        keep += [cache.k, cache.v, layers]
        return cls(lib, plan, keep, checks, c.vocab_size)

    def __init__(self, lib, plan, keep: list, checks: list, vocab: int):
        self.fn, self.plan, self.keep, self.checks, self.vocab = lib.v2m_forward, plan, keep, checks, vocab
        self.plan_p = ctypes.byref(plan)
        self.scratch: dict[int, torch.Tensor] = {}

    def current(self, storage: bool = False) -> bool:
        """True while every tensor and kernel state the plan points into is still the model's: the same
        objects (~2 µs: checked every step), and with `storage` the same memory too (checked per prefill:
        `param.data = ...` keeps the object but moves the memory)."""
        for slots, name, was, ptr in self.checks:
            now = slots.get(name)
            if now is not was or (storage and ptr is not None and now.data_ptr() != ptr):
                return False
        return True

    def __call__(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        """ids [B, T] (or [B]) at positions pos..pos+T-1 → logits [B, V] of each row's last token."""
        ids = ids.reshape(ids.shape[0], -1)
        if ids.dtype != torch.int64 or not ids.is_contiguous():
            ids = ids.to(torch.int64).contiguous()
        batch, rows = ids.shape[0], ids.numel()
        scratch = self.scratch.get(rows)
        if scratch is None:  # once per row count
            from .native import scratch_floats

            scratch = self.scratch[rows] = torch.empty(scratch_floats(self.plan, rows))
        logits = torch.empty(batch, self.vocab)
        if self.fn(self.plan_p, ids.data_ptr(), batch, ids.shape[1], pos, scratch.data_ptr(), logits.data_ptr()):
            raise IndexError(f"decode step: an id outside 0..{self.vocab - 1}, or positions {pos}..{pos + ids.shape[1] - 1}"
                             " outside the cache")
        return logits


class _Declined(Exception):
    """A part of the model the one-call step does not implement (then: the per-layer C step)."""
