"""Static KV cache and the fast single-token decode step.

Why static: a cache grown by concatenation allocates and copies every token, and its changing
shapes defeat graph capture. Here K/V live in buffers preallocated to `max_len` and written in
place (index_copy_), and attention is masked by position (models/transformer.py).

Why buffers of a module: under `torch.compile(mode="reduce-overhead")` (CUDA graphs) tensors that
are *inputs* of the compiled function and get mutated make the capture be skipped ("mutated
inputs"); buffers of the compiled module are static and may be written. So `Decoder` holds the
model and its cache as submodules and compiles its own `forward(ids, pos)` — the same Python code
as the eager path, only wrapped. Measured on an H100 (issue 10): 185 → 3,683 tokens/s at batch 1.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class KVCache(nn.Module):
    """Keys and values of every layer: k, v [layers, batch, heads, max_len, head_dim], written in place."""

    def __init__(self, n_layers: int, batch: int, n_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        super().__init__()
        shape = (n_layers, batch, n_heads, max_len, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.batch, self.max_len = batch, max_len

    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()


class _Step(nn.Module):
    """model + cache as one module: the compiled graph sees the cache as its own (static) buffers."""

    def __init__(self, model: nn.Module, cache: KVCache):
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return self.model.forward_cached(ids, self.cache, pos)[:, -1]


class Decoder:
    """Prefill a prompt, then decode one token at a time into a static cache.

    `compile=True` wraps the single-token step in torch.compile: mode "reduce-overhead" (CUDA
    graphs) on CUDA, Inductor's default elsewhere. The first call compiles (the warm-up); reuse
    one Decoder per (model, batch, max_len) in a process — `decoder_for` keeps them — so later
    generations replay the captured graph.
    """

    def __init__(self, model: nn.Module, batch: int, max_len: int | None = None, compile: bool = False):
        self.model = model
        self.cache = model.new_cache(batch, max_len)
        self.batch, self.max_len = batch, self.cache.max_len
        self.device = self.cache.k.device
        self.step_module = _Step(model, self.cache)
        self.compiled = bool(compile)
        if self.compiled:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._step = torch.compile(self.step_module, mode=mode, dynamic=False)
        else:
            self._step = None
        self._pos = torch.zeros((), dtype=torch.long, device=self.device)

    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] from position 0 → logits [B, V] of the last position (eager: variable length)."""
        if ids.shape[0] != self.batch:
            raise ValueError(f"decoder built for batch {self.batch}, got {ids.shape[0]}")
        return self.model.forward_cached(ids, self.cache, 0)[:, -1]

    @torch.no_grad()
    def step(self, ids: torch.Tensor, pos: int) -> torch.Tensor:
        """ids [B] or [B, 1] at position `pos` → logits [B, V] for position pos + 1."""
        ids = ids.reshape(self.batch, 1)
        if pos >= self.max_len:
            raise ValueError(f"position {pos} is past the cache length {self.max_len}")
        if self._step is None:
            return self.model.forward_cached(ids, self.cache, pos)[:, -1]
        self._pos.fill_(pos)
        # CUDA graph outputs are overwritten by the next replay: clone what the caller keeps
        return self._step(ids, self._pos).clone()


_DECODERS: dict[tuple, Decoder] = {}
MAX_DECODERS = 4  # each holds a cache (e.g. small preset, batch 16, 1,024 tokens: 250 MB fp32) and its model


def decoder_for(model: nn.Module, batch: int, max_len: int | None = None, compile: bool = False) -> Decoder:
    """A Decoder reused across calls in this process, so compilation and graph capture happen once.

    Stale cache contents need no clearing: prefill rewrites positions 0..T-1 and the position mask
    hides every slot past the current one. The least recently used decoder is dropped beyond
    MAX_DECODERS (with its cache and its reference to the model).
    """
    key = (id(model), batch, max_len, bool(compile))
    decoder = _DECODERS.pop(key, None)
    if decoder is None or decoder.model is not model:
        decoder = Decoder(model, batch, max_len, compile)
    _DECODERS[key] = decoder  # (re)inserted last: dicts keep insertion order, the first key is the oldest
    while len(_DECODERS) > MAX_DECODERS:
        _DECODERS.pop(next(iter(_DECODERS)))
    return decoder


def clear_decoders() -> None:
    """Drop every cached Decoder (frees their caches; the next generation compiles again)."""
    _DECODERS.clear()
