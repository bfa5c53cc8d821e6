"""The CPU decode step in C: NativeStep (three C helpers per layer around the products) and OneCallPlan (the whole
model in one C call per token), over the transformer's own tensors and its static KV cache.

Why C: after the lean step (engines/lean.py) the float32 matrix-vector products of a decode step are MKL's and
near the memory limit, but RMSNorm, RoPE, the K/V cache writes, attention over the cache and the SwiGLU gate
are still ~15 PyTorch operator calls per layer, each a few microseconds of dispatch for a few hundred floats of
work. The C (engines/csrc/decode_step.c) does them with no dispatch: `v2m_add_rmsnorm`, `v2m_rope_attend`,
`v2m_swiglu` per layer, or `v2m_forward` for the whole model — embedding rows, every layer, final norm and
logits — over a `Plan` of pointers into the model's own tensors (made and checked by OneCallPlan below). At
batch 1 the ~45 ctypes calls and ~25 allocations per token of the per-layer step cost about as much as the
W8A8 products themselves; the float32 step, MKL's products included, went 2.1–2.8 → 1.3–1.6 ms with its
products in the plain 4-row AVX-512 loop of the C (f32_tile), so float32 takes the same call.

Quantized layers join the one call through a protocol, not through quant's code: a module whose
`native_matrix()` returns a `v2m.c_build.NativeMatrix` (quant's cpu-vnni layers do) is called by the C
through that matrix's `gemm` function pointer (core/csrc/v2m_matrix.h), and keeps the matrix it handed out in
its `native` attribute while it stays valid (the plan checks that identity every token). Any other layer keeps
the per-layer step, whose products run the layer's own forward.

Built like Inductor builds its CPU kernels (core/c_build.py: the system C compiler, a per-user cache keyed by
content, ctypes). No compiler or no AVX-512: `step_library()` is None, the reason is logged at -v, and the
lean step keeps its PyTorch ops. Compiled with -ffast-math: results differ from PyTorch's by float32
round-off (tests/models/engines/test_lean_native.py bounds it and checks greedy tokens).
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from v2m import log
from v2m.c_build import build, needs

from ..kv_cache import KVCache
from ..transformer import RMSNorm
from .calls import linear_call

SOURCES = (Path(__file__).resolve().parent / "csrc" / "decode_step.c",)

AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"]
FLAGS = ["-O3", "-ffast-math", *AVX512, "-shared", "-fPIC"]


@functools.cache
def step_library() -> ctypes.CDLL | None:
    """The decode-step helpers and the one-call step, or None when they cannot be built or run here (why: at -v)."""
    reason = needs({"avx512f", "avx512bw", "avx512vl", "fma"})
    if reason is None:
        try:
            lib = build("v2m-step", SOURCES, tuple(FLAGS), ("-lm",))
        except (RuntimeError, OSError) as e:
            reason = f"could not be built here ({e})"
    if reason is not None:
        log.debug(f"decode: the C step is off, it {reason}; the lean PyTorch step runs instead")
        return None
    p, i64, f32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
    lib.v2m_add_rmsnorm.argtypes = [p, p, p, f32, i64, i64, p]
    lib.v2m_swiglu.argtypes = [p, i64, i64, p]
    lib.v2m_rope_attend.argtypes = [p, i64, i64, i64, i64, p, p, p, p, i64, p]
    lib.v2m_forward.argtypes = [ctypes.POINTER(Plan), p, i64, i64, i64, p, p]
    for fn in (lib.v2m_add_rmsnorm, lib.v2m_swiglu, lib.v2m_rope_attend):
        fn.restype = None
    lib.v2m_forward.restype = ctypes.c_int
    lib.v2m_matrix_product.argtypes = [ctypes.POINTER(Matrix), p, i64, p, p, p]
    lib.v2m_matrix_product.restype = None
    return lib


# The one-call step's description of a model (the C structs of csrc/decode_step.c; made by OneCallPlan below)

class Matrix(ctypes.Structure):
    """v2m_matrix: float32 weights (gemm NULL) or a kernel's packed buffers and its product (gemm set)."""

    _fields_ = [("n", ctypes.c_int64), ("k", ctypes.c_int64), ("w", ctypes.c_void_p), ("comp", ctypes.c_void_p),
                ("scale", ctypes.c_void_p), ("bias", ctypes.c_void_p), ("gemm", ctypes.c_void_p)]


class Layer(ctypes.Structure):
    _fields_ = [("norm1", ctypes.c_void_p), ("norm2", ctypes.c_void_p), ("eps1", ctypes.c_float),
                ("eps2", ctypes.c_float), ("qkv", Matrix), ("out", Matrix), ("up", Matrix), ("down", Matrix),
                ("k", ctypes.c_void_p), ("v", ctypes.c_void_p)]


class Plan(ctypes.Structure):
    _fields_ = [("n_layers", ctypes.c_int64), ("n_heads", ctypes.c_int64), ("head_dim", ctypes.c_int64),
                ("d_model", ctypes.c_int64), ("d_ff", ctypes.c_int64), ("max_len", ctypes.c_int64),
                ("embed", ctypes.c_void_p), ("rope_cos", ctypes.c_void_p), ("rope_sin", ctypes.c_void_p),
                ("final_norm", ctypes.c_void_p), ("final_eps", ctypes.c_float), ("head", Matrix),
                ("layers", ctypes.POINTER(Layer))]


def scratch_floats(plan: Plan, batch: int) -> int:
    """float32 slots of scratch `v2m_forward` needs for `batch` rows (its layout is in csrc/decode_step.c)."""
    C, F = plan.d_model, plan.d_ff
    wide = max(3 * C, 2 * F)
    return batch * (4 * C + wide + F) + batch + (batch * max(C, F) + 64) // 4 + 16


class NativeStep:
    """The lean step with norms, RoPE, cache writes, attention and SwiGLU in C (csrc/decode_step.c).

    Where every matrix is a float32 Linear or a layer with a C product (`native_matrix()`: quant's cpu-vnni
    W8A8 layers), the whole step — embedding row, layers, logits — is one C call (`v2m_forward`) over a
    `Plan` of the model's own buffers; otherwise per layer 3 C calls around the 4 matrix products (F.linear,
    the layer's C product, or the layer's own forward). Applies to float32 RMSNorm + SwiGLU transformers on a CPU with AVX-512
    and a C compiler; `build` returns None otherwise. Float32 round-off differs from forward_cached.
    """

    @classmethod
    def build(cls, model: nn.Module, cache: KVCache, one_call: bool = True) -> "NativeStep | None":
        config = model.config
        norms = [n for b in model.blocks for n in (b.norm1, b.norm2)]
        if (config.mlp != "swiglu" or config.head_dim % 2 or model.embed.weight.dtype != torch.float32
                or model.embed.weight.device.type != "cpu" or cache.k.dtype != torch.float32
                or any(type(n) is not RMSNorm or n.weight.dtype != torch.float32 for n in norms)):
            return None
        lib = step_library()
        return None if lib is None else cls(model, cache, lib, one_call)

    def __init__(self, model: nn.Module, cache: KVCache, lib, one_call: bool = True):
        config = model.config
        self.lib, self.cache, self.model = lib, cache, model
        self.n_heads, self.head_dim, self.d_model, self.d_ff = config.n_heads, config.head_dim, config.d_model, config.d_ff
        self.layers = [(b.norm1, _matrix_call(b.attn.qkv, lib), _matrix_call(b.attn.out, lib), b.norm2,
                        _matrix_call(b.mlp.up, lib), _matrix_call(b.mlp.down, lib)) for b in model.blocks]
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
    """The whole model as one C call (`v2m_forward`): a `Plan` of pointers into the model's own
    tensors and the cache, plus what it was made from, so the caller can tell when the model changed.

    Per token this replaces ~45 ctypes calls and ~25 tensor allocations with one call: at batch 1 those
    were most of a W8A8 step's time beyond the products themselves (bench/decode.py). Short prefills
    (≤ PREFILL_ROWS tokens in all) go through the same call, every matrix read once for all their rows.
    """

    PREFILL_ROWS = 64  # longer prompts: forward_cached (MKL's GEMM beats these row-tiled products there)

    @classmethod
    def build(cls, model: nn.Module, cache: KVCache, lib) -> "OneCallPlan | None":
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

        def matrix(module) -> Matrix:
            if type(module) is nn.Linear:
                return Matrix(module.out_features, module.in_features, pointer(module, "weight"), None, None,
                              pointer(module, "bias"), None)
            described = native_matrix(module)
            if described is None:
                raise _Declined
            keep.append(described.owner)
            # still the layer's while the layer keeps it as `native` (the protocol: native_matrix()'s docstring)
            checks.append((module.__dict__, "native", described, None))
            return _as_struct(described)

        try:
            layers = (Layer * len(model.blocks))()
            for i, b in enumerate(model.blocks):
                layers[i] = Layer(pointer(b.norm1, "weight"), pointer(b.norm2, "weight"), b.norm1.eps,
                                         b.norm2.eps, matrix(b.attn.qkv), matrix(b.attn.out), matrix(b.mlp.up),
                                         matrix(b.mlp.down), cache.k[i].data_ptr(), cache.v[i].data_ptr())
            c, embed = model.config, pointer(model.embed, "weight")
            head = Matrix(c.vocab_size, c.d_model, embed, None, None, None, None)
            plan = Plan(len(model.blocks), c.n_heads, c.head_dim, c.d_model, c.d_ff, cache.max_len, embed,
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
            scratch = self.scratch[rows] = torch.empty(scratch_floats(self.plan, rows))
        logits = torch.empty(batch, self.vocab)
        if self.fn(self.plan_p, ids.data_ptr(), batch, ids.shape[1], pos, scratch.data_ptr(), logits.data_ptr()):
            raise IndexError(f"decode step: an id outside 0..{self.vocab - 1}, or positions {pos}..{pos + ids.shape[1] - 1}"
                             " outside the cache")
        return logits


class _Declined(Exception):
    """A part of the model the one-call step does not implement (then: the per-layer C step)."""


def native_matrix(module: nn.Module):
    """The module's C product (a v2m.c_build.NativeMatrix) if it offers one through `native_matrix()`, else None."""
    offer = getattr(module, "native_matrix", None)
    return offer() if offer is not None else None


def _as_struct(described) -> Matrix:
    return Matrix(described.n, described.k, described.w, described.comp, described.scale, described.bias or None,
                  described.gemm)


def _matrix_call(module: nn.Module, lib):
    """x [B, K] → y [B, N] for the per-layer step: the layer's C product through `v2m_matrix_product` where it
    offers one (the inputs are float32 rows already), else `linear_call`."""
    described = native_matrix(module)
    if described is None:
        return linear_call(module)
    struct, scratch = _as_struct(described), {}

    def call(x: torch.Tensor) -> torch.Tensor:
        if module.__dict__.get("native") is not described:  # a new kernel or a move since: its forward is the truth
            return module.forward(x)
        rows = x.shape[0]
        if rows not in scratch:
            scratch[rows] = (torch.empty(rows * described.k + 64, dtype=torch.uint8), torch.empty(rows))
        xu, xs = scratch[rows]
        x = x if x.dtype == torch.float32 and x.is_contiguous() else x.float().contiguous()
        y = torch.empty(rows, described.n)
        lib.v2m_matrix_product(ctypes.byref(struct), x.data_ptr(), rows, y.data_ptr(), xu.data_ptr(), xs.data_ptr())
        return y

    return call
