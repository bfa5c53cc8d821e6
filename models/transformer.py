"""The transformer backend: a decoder-only GPT with RoPE, RMSNorm, SwiGLU and tied embeddings.

Architecture as in GPT-2 (Radford et al. 2019, pre-norm residual blocks) with the LLaMA
refinements (Touvron et al. 2023): rotary position embeddings (RoPE, Su et al. 2021), RMSNorm
(Zhang & Sennrich 2019) and a SwiGLU MLP (Shazeer 2020); LayerNorm and GELU are options.
Attention is `F.scaled_dot_product_attention`, so flash/memory-efficient kernels are used where
the device has them. Control tokens are ordinary tokens interleaved in the sequence (CMT-style),
so conditioning needs nothing special here.

Two forward paths share every layer:
- `model(ids)`: plain causal forward over [B, T] (training, NLL, calibration; the reference).
- `model.forward_cached(ids, cache, pos)`: writes K/V for positions pos..pos+T-1 into a static
  cache (models/kv_cache.py) in place and attends by position mask, with no tensor growing per token.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import ModelConfig
from .kv_cache import KVCache
from .registry import BACKENDS


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in fp32: under bf16 autocast the mean of squares loses too many bits
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def make_norm(config: ModelConfig) -> nn.Module:
    return RMSNorm(config.d_model) if config.norm == "rms" else nn.LayerNorm(config.d_model)


def rope_tables(head_dim: int, max_len: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [max_len, head_dim/2] for rotary embeddings (RoPE), in fp32, computed on the CPU whatever the
    default device (a skeleton built on the meta device would otherwise run these ops through torch._refs, which
    imports torch._dynamo: models/loading.py `_no_init`)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64, device="cpu") / head_dim))
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64, device="cpu"), inv_freq)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + D/2) of x [..., T, D] by the angles of each position (cos/sin [T, D/2])."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if cos.dtype != x.dtype:
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.n_heads, self.head_dim = config.n_heads, config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = config.dropout

    def _heads(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, H, T, D]
        # rotate q and k in one call: at one token per step, op count (not FLOPs) is the decode cost
        qk = apply_rope(qkv[:2], cos, sin)
        return qk[0], qk[1], qkv[2]

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, D = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * D))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        q, k, v = self._heads(x, cos, sin)
        p = self.dropout if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p))

    def forward_cached(self, x, cos, sin, k_cache, v_cache, positions, visible, span: int):
        """x [B, T, C] at `positions` [T]; k_cache/v_cache [B, H, max_len, D] are written in place.

        Attends over the first `span` cache slots; `visible` [T, span] (bool) says which of them each
        query sees: a slot whose position is ≤ the query's (so stale slots of an earlier, longer
        sequence stay hidden). None: all `span` slots (one new token at an int position).
        """
        q, k, v = self._heads(x, cos, sin)
        if k.dtype != k_cache.dtype:
            k, v = k.to(k_cache.dtype), v.to(v_cache.dtype)
        k_cache.index_copy_(2, positions, k)
        v_cache.index_copy_(2, positions, v)
        keys, values = k_cache[:, :, :span], v_cache[:, :, :span]
        if keys.dtype != q.dtype:
            keys, values = keys.to(q.dtype), values.to(q.dtype)
        return self._merge(F.scaled_dot_product_attention(q, keys, values, attn_mask=visible))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        self.up = nn.Linear(config.d_model, (2 if self.swiglu else 1) * config.d_ff, bias=False)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.swiglu:
            gate, value = h.chunk(2, dim=-1)
            return self.down(F.silu(gate) * value)
        return self.down(F.gelu(h))


class Block(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.norm1, self.attn = make_norm(config), Attention(config)
        self.norm2, self.mlp = make_norm(config), MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin):
        x = x + self.drop(self.attn(self.norm1(x), cos, sin))
        return x + self.drop(self.mlp(self.norm2(x)))

    def forward_cached(self, x, cos, sin, k_cache, v_cache, positions, visible, span):
        x = x + self.attn.forward_cached(self.norm1(x), cos, sin, k_cache, v_cache, positions, visible, span)
        return x + self.mlp(self.norm2(x))


@BACKENDS.register("transformer")
class Transformer(nn.Module):
    """Decoder-only transformer over token ids. Embedding and output projection share one matrix."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be set (it comes from the tokenizer)")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = make_norm(config)
        cos, sin = rope_tables(config.head_dim, config.max_len, config.rope_base)
        # not persistent: derived from the config, never stored in checkpoints
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # GPT-2: scale the residual projections by 1/sqrt(2·layers) so the residual stream's variance stays put
        for name, p in self.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.norm(x), self.embed.weight)  # tied output projection

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] (T ≤ max_len) → logits [B, T, V]; causal."""
        T = ids.shape[1]
        if T > self.config.max_len:
            raise ValueError(f"sequence of {T} tokens is longer than the model's max_len {self.config.max_len}")
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.drop(self.embed(ids))
        for block in self.blocks:
            x = block(x, cos, sin)
        return self._logits(x)

    def new_cache(self, batch: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> KVCache:
        """A static KV cache for `batch` sequences of up to `max_len` tokens, on the model's device."""
        weight = self.embed.weight
        max_len = self.config.max_len if max_len is None else int(max_len)
        if max_len > self.config.max_len:
            raise ValueError(f"cache length {max_len} exceeds the model's max_len {self.config.max_len}")
        return KVCache(self.config.n_layers, batch, self.config.n_heads, max_len, self.config.head_dim,
                       dtype=dtype or weight.dtype, device=weight.device)

    def forward_cached(self, ids: torch.Tensor, cache: KVCache, pos: int | torch.Tensor) -> torch.Tensor:
        """ids [B, T] at positions pos..pos+T-1 → logits [B, T, V], writing their K/V into `cache`.

        `pos` as a Python int attends over the first pos+T slots only (eager: least work);
        as a 0-d tensor it attends over all slots with the position mask, so every call has the
        same shapes and a compiled step is captured once (CUDA graphs) and replayed for any pos.
        """
        T = ids.shape[1]
        if isinstance(pos, torch.Tensor):
            positions = pos.reshape(1) + torch.arange(T, device=ids.device)
            span = cache.max_len
        else:
            if pos < 0 or pos + T > cache.max_len:
                raise ValueError(f"positions {pos}..{pos + T - 1} do not fit the cache of {cache.max_len}")
            positions = torch.arange(pos, pos + T, device=ids.device)
            span = pos + T
        # the mask is built once per call, not per layer; one token at an int position sees every slot
        # up to its own, so it needs none (and SDPA takes its unmasked kernel)
        visible = None
        if isinstance(pos, torch.Tensor) or T > 1:
            visible = torch.arange(span, device=ids.device)[None, :] <= positions[:, None]  # [T, span]
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]
        x = self.embed(ids)
        for i, block in enumerate(self.blocks):
            x = block.forward_cached(x, cos, sin, cache.k[i], cache.v[i], positions, visible, span)
        return self._logits(x)
